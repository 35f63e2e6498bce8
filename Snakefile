"""PORT (Sehwag et al., ICLR 2022) as a Snakemake workflow: sample -> label -> filter -> score ->
select -> PORT adversarial training -> AutoAttack; ARC ranks generators. `snakemake --cores all` builds digits."""

import os

from snakemake.utils import min_version, validate

from port import config as port_config
from port.seeds import derive_seed
from port.selection import needs_scores

min_version("9.0")


configfile: os.path.join(workflow.basedir, "config", "config.yaml")


validate(config, "config/schema.yaml")
port_config.check_config(config)


report: "report/workflow.rst"


wildcard_constraints:
    dataset=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    generator=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    model=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    threat=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    arch=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    method=port_config.RUN_METHOD,
    selection=r"random|adaptive|confidence|group\d+",
    eps_index=r"\d+",
    slot="lanet|splitnet",
    shard=r"\d+",
    seed=r"\d+",
    variant=r"[A-Za-z0-9][A-Za-z0-9_-]*",


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/generate.smk"
include: "rules/label.smk"
include: "rules/discriminate.smk"
include: "rules/rank.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/smooth.smk"
include: "rules/report.smk"
include: "rules/recipe.smk"


rule all:
    default_target: True
    input:
        port_config.final_targets(config),
