"""Per-stage settings: what each rule's `params:` hands its stage, built from the validated config.

A knob moves one way: config/config.yaml -> the schema (this package's schema.yaml, every default)
-> the stage's module here (its builder, its cross-field checks, its dataclass) -> the stage
function. Nothing here imports a stage module, torch, h5py or pandas.
"""

from . import (checks, data, discrimination, evaluation, generation, labeling, scarcity, schema, smoothing, studies,
               targets, threats, training)
