"""The config schema (this package's schema.yaml: every default lives there) and the
form in which settings reach `params:`."""

from __future__ import annotations

import functools
from pathlib import Path

from ..errors import ConfigError, SettingsError

SCHEMA = Path(__file__).with_name("schema.yaml")  # package data: config/config.yaml is validated against it


def check_yaml_syntax(path) -> None:
    """A config file that is not YAML is named with its line and column: Snakemake's own message
    ("Config file is not valid JSON or YAML") names neither. A missing file is Snakemake's to report."""
    import yaml

    if not Path(path).is_file():
        return
    try:
        yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as err:
        mark, context = err.problem_mark, err.context_mark
        started = f" ({err.context} from line {context.line + 1})" if err.context and context else ""
        raise ConfigError(f"{path}: line {mark.line + 1}, column {mark.column + 1}: not valid YAML: "
                          f"{err.problem}{started}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None


@functools.cache
def schema_document() -> dict:
    import yaml

    return yaml.safe_load(SCHEMA.read_text())


@functools.cache
def schema_defaults(definition: str) -> dict:
    """The defaults of one `$defs` block of the schema, the one home of every default."""
    properties = schema_document()["$defs"][definition]["properties"]
    return {key: spec["default"] for key, spec in properties.items() if "default" in spec}


def check_values(values: dict, definitions: tuple[str, ...], what: str) -> None:
    """Refuse values that break their key's rule in the schema's `$defs` blocks (a stage called
    with settings the config could not hold: gamma 1.2), naming the key."""
    import jsonschema

    document = schema_document()
    properties = {key: spec for name in definitions for key, spec in document["$defs"][name]["properties"].items()}
    validator = jsonschema.validators.validator_for(document)
    for key, value in values.items():
        if key in properties:
            error = jsonschema.exceptions.best_match(validator({"$defs": document["$defs"], **properties[key]})
                                                     .iter_errors(value))
            if error is not None:
                raise SettingsError(f"{what} {key}: {error.message}")


def canonical(value):
    """Builtins with dict keys sorted recursively (a stable repr for Snakemake's params check)."""
    if isinstance(value, dict):
        return {k: canonical(value[k]) for k in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    return value
