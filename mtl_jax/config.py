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


def check_against(
    config: ml_collections.ConfigDict, reference: ml_collections.ConfigDict, prefix: str = ""
) -> None:
    """Checks that `config` has exactly `reference`'s keys (the open paths excepted) and
    values of the same types (an int where a float is expected is accepted).

    Raises:
      ConfigError: naming the key, and the valid keys or the expected type.
    """
    for key in sorted(set(config) | set(reference)):
        dotted = f"{prefix}{key}"
        if key not in reference:
            raise ConfigError(
                f"unknown config key {dotted!r}; valid keys under {prefix[:-1] or '<top>'}: "
                f"{sorted(reference)}"
            )
        if key not in config:
            raise ConfigError(f"config key {dotted!r} is missing")
        value, expected = config[key], reference[key]
        if dotted in OPEN_PATHS:
            continue
        if isinstance(expected, ml_collections.ConfigDict):
            if not isinstance(value, ml_collections.ConfigDict):
                raise ConfigError(f"config key {dotted!r} must be a group of keys")
            check_against(value, expected, f"{dotted}.")
            continue
        if isinstance(expected, bool) or isinstance(value, bool):
            ok = type(value) is type(expected)
        elif isinstance(expected, float):
            ok = isinstance(value, (int, float))
        elif isinstance(expected, (tuple, list)):
            ok = isinstance(value, (tuple, list))
        else:
            ok = isinstance(value, type(expected))
        if not ok:
            raise ConfigError(
                f"config key {dotted!r} expects a {type(expected).__name__}, got "
                f"{type(value).__name__} {value!r}"
            )


def load_config(
    path: str | Path,
    overrides: Sequence[str] = (),
    *,
    reference: ml_collections.ConfigDict | None = None,
) -> ml_collections.ConfigDict:
    """Loads `get_config()` from the Python file `path` and applies `key=value` overrides.

    With `reference` (the config listing every key, e.g. `experiments/configs/base.py`'s),
    the file's config is checked against it first (`check_against`), so that a key the
    file adds by mistake is an error too.
    """
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
    if reference is not None:
        try:
            check_against(config, reference)
        except ConfigError as error:
            raise ConfigError(f"config file {str(path)!r}: {error}") from error
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
