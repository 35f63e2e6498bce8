"""Route a Snakemake job's output (prints, logging, tqdm bars) into its log file."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time

from port import devices

from .artifacts import verified_inputs


def use_threads(threads: int) -> None:
    """The job's thread count for torch's CPU kernels. Set through the environment that torch
    reads when it is imported, so that jobs which never need torch (merges, selections, tables)
    do not pay for importing it."""
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


@contextlib.contextmanager
def logged_job(smk, offline: bool = True):
    """Send stdout, stderr and logging to `smk.log[0]`, use the job's thread count and, for a
    job with `resources.gpu >= 1` that no scheduler placed, claim free GPUs (port.devices). Every
    input is verified against its recorded checksum first, and the outputs record the inputs' checksums.
    Jobs are `offline` (HF_HUB_OFFLINE=1: compute nodes may have no network; they read what the
    local rules fetch_model and fetch_source fetched); only those rules are not."""
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"  # read by huggingface_hub at import, which comes later
    use_threads(max(1, int(getattr(smk, "threads", 1))))
    log_path = smk.log[0] if len(smk.log) else None
    if log_path is None:
        with devices.claim_gpus(devices.job_gpus(smk)) or contextlib.nullcontext(), verified_inputs(smk.input):
            yield logging.getLogger("port")
        return
    with open(log_path, "a", buffering=1) as stream, \
            contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        start = time.time()
        logger = logging.getLogger("port")
        logger.info("rule %s, wildcards %s, threads %s", smk.rule, dict(smk.wildcards), smk.threads)
        claim = None
        try:
            claim = devices.claim_gpus(devices.job_gpus(smk))
            logger.info("CUDA_VISIBLE_DEVICES=%s (%s)", os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"),
                        "claimed by port.devices" if claim else "not claimed: set by a scheduler, or no GPU asked")
            with verified_inputs(smk.input):
                yield logger
            logger.info("done in %.1f s", time.time() - start)
        except Exception:
            logger.exception("failed after %.1f s", time.time() - start)
            raise
        finally:
            if claim is not None:
                claim.release()
            root.removeHandler(handler)
