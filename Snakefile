"""PORT (Sehwag et al., ICLR 2022) as a Snakemake workflow: sample -> label -> filter -> audit -> score ->
select -> PORT adversarial training -> AutoAttack; ARC ranks generators. `snakemake --cores all` builds digits."""

import os
import sys

from snakemake.utils import min_version, validate

from port import inputs as port_inputs
from port import paths
from port import plan as port_plan
from port import settings
from port import site as port_site
from port.seeds import derive_seed

min_version("9.0")


CONFIG_FILE = os.path.join(workflow.basedir, "config", "config.yaml")
settings.schema.check_yaml_syntax(CONFIG_FILE)  # before Snakemake reads it: its YAML error names no file or line


configfile: CONFIG_FILE


validate(config, str(settings.schema.SCHEMA))
settings.checks.check_config(config)


report: "report/workflow.rst"


wildcard_constraints:
    **paths.WILDCARD_CONSTRAINTS,


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/generate.smk"
include: "rules/label.smk"
include: "rules/audit.smk"
include: "rules/discriminate.smk"
include: "rules/rank.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/smooth.smk"
include: "rules/report.smk"
include: "rules/recipe.smk"
include: "rules/studies.smk"
include: "rules/plan.smk"
include: "rules/scarcity.smk"


localrules:
    fetch_model,
    fetch_source,
    plan_dataset,
    plan,


onstart:
    port_site.check_site_values(workflow.resource_settings)  # before any sbatch: no SET_ME_* left in the profile


rule all:
    default_target: True
    input:
        settings.targets.final_targets(config),


# Snakemake discards an input function's error when the job's outputs exist (the job then
# looks finished): check the files named in config of the requested datasets that hold results
# now, before it builds the DAG. Jobs started by a main process (cluster, SLURM) do not recheck.
if workflow.is_main_process:
    port_inputs.check_finished_datasets(config, sys.argv[1:], {rule.name: list(rule.input)
                                                               for rule in workflow.rules if not rule.has_wildcards()})
