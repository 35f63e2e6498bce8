import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """The tests' tiny models run fastest on one thread, and two threads crawl on a busy
    2-core machine. (The integration test's Snakemake jobs set their own thread counts.)"""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
