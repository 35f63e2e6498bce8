"""Pre-flight of the cluster profile: no job is submitted while a site value is a placeholder.

profiles/slurm/config.yaml ships its account and partitions as `SET_ME_*`. Left so, sbatch would
reject every job one by one (or bill a default account); the Snakefile calls `check_site_values`
in its `onstart` handler, after the DAG is built and before the first job is submitted, so the run
stops with one message naming each key to set. A dry run (`-n`) submits nothing and is not
checked: it shows the jobs and their resources before the values are set.
"""

from __future__ import annotations

PLACEHOLDER = "SET_ME"
PROFILE = "profiles/slurm/config.yaml"


class SiteValueError(ValueError):
    """A profile resource still holds a placeholder."""


def placeholders(default_resources, overwrite_resources) -> dict[str, list[str]]:
    """{placeholder value: the profile keys holding it, in file order}."""
    found: dict[str, list[str]] = {}
    keyed = [(f"default-resources.{name}", res) for name, res in dict(default_resources or {}).items()]
    keyed += [(f"set-resources.{rule}.{name}", res) for rule, resources in dict(overwrite_resources or {}).items()
              for name, res in dict(resources).items()]
    for key, resource in keyed:
        raw = getattr(resource, "raw", resource)
        if isinstance(raw, str) and raw.strip("'\"").startswith(PLACEHOLDER):
            found.setdefault(raw.strip("'\""), []).append(key)
    return found


def check_site_values(resource_settings) -> None:
    """Raise SiteValueError naming every key of the profile that still holds a SET_ME_* value."""
    found = placeholders(resource_settings.default_resources, resource_settings.overwrite_resources)
    if not found:
        return
    parts = []
    for value, keys in found.items():
        shared = f" (and {len(keys) - 1} more rules through the shared block `<<: *gpu`)" if len(keys) > 1 else ""
        parts.append(f"{keys[0]}: {value}{shared}")
    raise SiteValueError(f"{PROFILE}: set your site's values before submitting any job: {'; '.join(parts)} "
                         f"(accounts: `sacctmgr show associations user=$USER`; partitions: `sinfo -s`)")
