"""The settings file that `--config` names: YAML, keys named as the settings (kebab-case too),
below the CLI and the environment. Any trouble with it is a one-line `ConfigError`, the error
type of every setting that cannot work."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, YamlConfigSettingsSource
from pydantic_settings.sources.types import Traversable


class ConfigError(ValueError):
    """A setting that cannot work, found before anything starts: in the settings file, by the
    preflight (server/startup.py), or in the model directory. The process exits 1 with one
    `invalid settings:` line: a traceback would only point at the code that read the setting."""


class ConfigFileSource(PydanticBaseSettingsSource):
    """The YAML file that `config` names. It sits below the CLI, init and the environment, so it
    learns `config` from them (`current_state`), and leaves out what they already set: their
    value replaces the file's whole, dicts and lists included (never a merge of the two)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads the whole file at once

    def __call__(self) -> dict[str, Any]:
        path = self.current_state.get("config")
        if not path:
            return {}
        values = read_config_file(self.settings_cls, Path(path))
        return {name: value for name, value in values.items() if name not in self.current_state}


class _YamlFile(YamlConfigSettingsSource):
    """pydantic-settings' YAML source, with kebab-case keys read as snake_case."""

    def _read_file(self, file_path: Path | Traversable) -> dict[str, Any]:
        data = super()._read_file(file_path)
        if not isinstance(data, dict):
            raise ConfigError(f"config file {file_path}: not a mapping of setting names")
        return {str(key).replace("-", "_"): value for key, value in data.items()}


def read_config_file(settings_cls: type[BaseSettings], path: Path) -> dict[str, Any]:
    """The file's settings by field name; any trouble is a one-line ConfigError."""
    if not path.is_file():  # the YAML source would skip it without a word
        problem = "not a file" if path.exists() else "no such file"
        raise ConfigError(f"config file {path}: {problem}")
    try:
        values = _YamlFile(settings_cls, yaml_file=path).init_kwargs
    except OSError as e:
        raise ConfigError(f"config file {path}: {e.strerror or e}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path}: not valid YAML ({_yaml_problem(e)})") from e
    known = set(settings_cls.model_fields) - {"config"}  # no file names another
    for name in values:
        if name not in known:
            hint = _did_you_mean(name, known)
            raise ConfigError(f"config file {path}: unknown setting {name!r}{hint}")
    return values


def _yaml_problem(error: yaml.YAMLError) -> str:
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    mark = getattr(error, "problem_mark", None)
    return f"{problem}, line {mark.line + 1}" if mark is not None else str(problem)


def _did_you_mean(name: str, candidates: set[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# FACELLM_ variables that are not server settings: the load tests' own (loadtests/locust).
_OTHER_PREFIXES = ("FACELLM_LOAD_",)


def check_environment(environ: Mapping[str, str], settings_cls: type[BaseSettings]) -> None:
    """Refuse `FACELLM_*` variables that name no setting: a misspelt `FACELLM_API_KEYS` would
    otherwise leave auth off without a word. The error names the nearest setting."""
    known = {f"FACELLM_{name.upper()}" for name in settings_cls.model_fields}
    for variable in sorted(environ):
        upper = variable.upper()
        if not upper.startswith("FACELLM_") or upper in known or upper.startswith(_OTHER_PREFIXES):
            continue
        close = difflib.get_close_matches(upper, known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ConfigError(f"{variable} is not a setting{hint}")
