import subprocess
import sys


def test_job_threads_reach_torch_imported_after_the_job_starts():
    """Jobs set their thread count before importing torch (table jobs never import it)."""
    code = ("import sys; from port.logs import use_threads; assert 'torch' not in sys.modules; "
            "use_threads(1); import torch; print(torch.get_num_threads())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2"})
    assert result.stdout.strip() == "1"


def test_job_threads_reach_torch_imported_before():
    import torch

    from port.logs import use_threads

    before = torch.get_num_threads()
    try:
        use_threads(2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
