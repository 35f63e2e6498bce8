"""The profile pre-flight (port.site); the real SLURM check is tests/test_slurm.py."""

from types import SimpleNamespace

import pytest

from port.site import SiteValueError, check_site_values

SHARED_GPU = {"slurm_partition": "SET_ME_gpu_partition", "mem_mb": 32000}
SETTINGS = SimpleNamespace(
    default_resources={"slurm_account": "SET_ME_account", "slurm_partition": "cpu", "mem_mb": 4000},
    overwrite_resources={"train_ddpm": SHARED_GPU, "sample_shard": SHARED_GPU, "merge_shards": {"mem_mb": 64000}})


def test_one_message_names_each_placeholder_key_once():
    with pytest.raises(SiteValueError) as raised:
        check_site_values(SETTINGS)
    message = str(raised.value)
    assert message.startswith("profiles/slurm/config.yaml: ")
    assert "default-resources.slurm_account: SET_ME_account" in message
    assert "set-resources.train_ddpm.slurm_partition: SET_ME_gpu_partition (and 1 more" in message
    assert "sample_shard" not in message and "slurm_partition: cpu" not in message


def test_filled_values_pass():
    check_site_values(SimpleNamespace(default_resources={"slurm_account": "lab"}, overwrite_resources={}))
    check_site_values(SimpleNamespace(default_resources=None, overwrite_resources={}))
