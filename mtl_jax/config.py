"""Experiment configs: loading `get_config()` modules and applying command-line overrides.

A config is a locked `ml_collections.ConfigDict`, so a misspelt key is an error. The one
open mapping is `weighting.kwargs`, whose keys are the chosen method's options; they are
checked against the method's signature by `mtl_jax.weighting.create`.
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Sequence
from pathlib import Path

import ml_collections

# Overrides below these paths may add new keys (their values are parsed as Python
# literals, or kept as strings).
OPEN_PATHS = ("weighting.kwargs",)


class ConfigError(ValueError):
    """A config file, key or value is invalid; raised before anything is compiled."""


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """Loads `get_config()` from the Python file `path` and applies `key=value` overrides."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    spec = importlib.util.spec_from_file_location(f"_mtl_jax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {str(path)!r} defines no get_config()")
    try:
        config = module.get_config()
    except (TypeError, AttributeError, KeyError, ValueError) as error:
        # ml_collections raises these for a value of the wrong type or an unknown key.
        raise ConfigError(f"config file {str(path)!r}: {type(error).__name__}: {error}") from error
    config.lock()
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep:
            raise ConfigError(f"override {override!r} is not of the form key=value")
        set_value(config, key, value)
    return config


def _parse_literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _parse_as(text: str, current, key: str):
    """Parses `text` to the type of the existing value `current`."""
    if isinstance(current, bool):
        lowered = text.lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ConfigError(f"config key {key!r} expects a bool, got {text!r}")
    if isinstance(current, (int, float)):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(
                f"config key {key!r} expects a {type(current).__name__}, got {text!r}"
            )
        if isinstance(current, int) and not isinstance(value, int):
            raise ConfigError(f"config key {key!r} expects an int, got {text!r}")
        return type(current)(value)
    if isinstance(current, str):
        return text
    if isinstance(current, (tuple, list)):
        value = _parse_literal(text)
        if not isinstance(value, (tuple, list)):
            value = (value,)
        return type(current)(value)
    if isinstance(current, ml_collections.ConfigDict):
        raise ConfigError(f"config key {key!r} is a group; set one of its keys: {sorted(current)}")
    return _parse_literal(text)


def set_value(config: ml_collections.ConfigDict, key: str, text: str) -> None:
    """Sets dotted `key` from its command-line text, with the existing value's type.

    Raises:
      ConfigError: for an unknown key (listing the valid keys at that level) or a value
        that does not parse to the key's type.
    """
    parts = key.split(".")
    node = config
    for depth, part in enumerate(parts[:-1]):
        if part not in node:
            prefix = ".".join(parts[:depth]) or "<top>"
            raise ConfigError(
                f"unknown config key {key!r}; valid keys under {prefix}: {sorted(node)}"
            )
        node = node[part]
    last = parts[-1]
    parent = ".".join(parts[:-1])
    if parent in OPEN_PATHS:
        with node.unlocked():
            node[last] = _parse_literal(text)
        return
    if last not in node:
        raise ConfigError(
            f"unknown config key {key!r}; valid keys under {parent or '<top>'}: {sorted(node)}"
        )
    node[last] = _parse_as(text, node[last], key)
