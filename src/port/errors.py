"""The pipeline's errors, in one light module that every layer may import.

A ConfigError is a config the schema accepts but that cannot work (found before any job runs);
a SettingsError is a stage's own refusal of its settings; an ArtifactError is a bad input or
output file; TrainingDiverged is a run whose settings do not train.
"""


class ConfigError(ValueError):
    """A configuration that the schema accepts but that cannot work."""


class SettingsError(ConfigError):
    """Settings that a stage itself finds unworkable (an unknown name, a value out of range), as
    opposed to an ArtifactError (a bad input file)."""


class ArtifactError(ValueError):
    """A stage input or output that is missing, malformed or inconsistent."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite: the settings (say, the learning rate) do not train."""
