"""Config files: a `ModelConfig` from a JSON or YAML file of `CONFIG_KEYS`.

Kept apart from `config` so that reading a preset never imports a parser; PyYAML is imported
only for a YAML file. Every problem with a file is one ConfigError naming the file and the fix.
"""

from __future__ import annotations

import json
from os import PathLike
from pathlib import Path
from typing import Any

from concurrency.errors import ConfigError, MissingToolError
from concurrency.graph.config import CONFIG_SUFFIXES, ModelConfig


def load_config(path: str | PathLike[str]) -> ModelConfig:
    """A user config from a JSON (`.json`) or YAML (`.yaml`, `.yml`) file holding one mapping
    of `CONFIG_KEYS` (`name` defaults to the file name without its extension).

    Every problem is one ConfigError that names the file and the fix: a missing file, a
    directory, another extension, an unreadable or corrupt file, a top level that is not a
    mapping, unknown or repeated keys, missing required keys, wrong values."""
    p = Path(path)
    fix = "give a preset name (`lace models` lists them) or the path of a .json or .yaml file"
    if not p.exists():
        raise ConfigError(f"config file {p} does not exist; {fix}")
    if p.is_dir():
        raise ConfigError(f"config file {p} is a directory; {fix}")
    kind = CONFIG_SUFFIXES.get(p.suffix.lower())
    if kind is None:
        raise ConfigError(
            f"config file {p} has the extension {p.suffix or '(none)'!r}; LACE reads "
            f"{', '.join(CONFIG_SUFFIXES)} files (JSON or YAML)"
        )
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file {p} is not UTF-8 text; save it as UTF-8 {kind}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p} ({exc.strerror}); check it") from None
    data = _parse_json(text, p) if kind == "JSON" else _parse_yaml(text, p)
    if data is None:
        raise ConfigError(f"config file {p} is empty; write one mapping of config keys in it")
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {p} holds a {type(data).__name__}, not a mapping of config keys; "
            "write one mapping (`lace models --help` lists the keys)"
        )
    if data and all(isinstance(v, dict) for v in data.values()):
        raise ConfigError(
            f"config file {p} holds several configs ({', '.join(map(str, data))}), as "
            "`lace models --format json` prints them; keep the mapping of one"
        )
    try:
        return ModelConfig.from_dict({"name": p.stem, **data})
    except ConfigError as exc:
        raise ConfigError(f"config file {p}: {exc}") from None


class _RepeatedKey(Exception):
    pass


def _no_repeats(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise _RepeatedKey(key)
        out[key] = value
    return out


def _parse_json(text: str, p: Path) -> object:
    if not text.strip():
        return None
    try:
        return json.loads(text, object_pairs_hook=_no_repeats)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"config file {p} is not valid JSON (line {exc.lineno}, column {exc.colno}: "
            f"{exc.msg}); fix it, or write it as YAML"
        ) from None
    except _RepeatedKey as exc:
        raise ConfigError(f"config file {p} gives the key {exc} twice; keep one") from None


def _parse_yaml(text: str, p: Path) -> object:
    try:
        import yaml
    except ImportError:
        raise MissingToolError(
            f"reading the YAML config {p} needs PyYAML: pip install pyyaml (or write it as JSON)"
        ) from None

    class _Loader(yaml.SafeLoader):
        """SafeLoader that refuses a key given twice (PyYAML keeps the last silently)."""

        def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
            seen: set[object] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"the key {key!r} is given twice", key_node.start_mark
                    )
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader: plain data only
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"config file {p} is not valid YAML ({where}{problem}); fix it") from None
