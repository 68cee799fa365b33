"""Experiment configs: loading `get_config()` modules and applying command-line overrides.

A config is named on the command line in one of three ways (`find_config`):

* a shipped config by name, `multi_mnist` (the module `experiments.configs.multi_mnist`,
  found by import, so it works from any directory once the package is installed);
* any importable module by its dotted name, `my_project.configs.big` (a researcher's own
  configs, no file of this package edited);
* a Python file by path, `experiments/configs/multi_mnist.py` (anything holding a `/` or
  ending in `.py`).

Each may end in `:ARG`, which is passed to `get_config(ARG)` (as a string) when the
module's `get_config` takes a parameter.

A config is a locked `ml_collections.ConfigDict`, so a misspelt key is an error, which
suggests the closest valid keys. The open mappings (`OPEN_PATHS`) are `weighting.kwargs`,
whose keys are the chosen method's options, checked against the method's signature by
`mtl_jax.weighting.create`, and `task_options`, `{task: {field: value}}`, checked against
the tasks' fields by `mtl_jax.experiment.build_experiment`.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import importlib
import importlib.util
import inspect
import os
import pkgutil
import types
from collections.abc import Iterable, Sequence
from pathlib import Path

import ml_collections

# Overrides below these paths may add new keys, and new groups of keys
# (`task_options.left.loss_type=focal`); their values are parsed as Python literals, or
# kept as strings.
OPEN_PATHS = ("weighting.kwargs", "task_options")


def _is_open(dotted: str) -> bool:
    """Whether the dotted key is an open path or lies below one."""
    return any(dotted == path or dotted.startswith(f"{path}.") for path in OPEN_PATHS)


# The package whose modules are the configs named by a bare name (`--config multi_mnist`).
CONFIG_PACKAGE = "experiments.configs"


class ConfigError(ValueError):
    """A config file, key or value is invalid; raised before anything is compiled."""


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """`"; did you mean 'a' or 'b'?"` for the closest candidates, or `""`."""
    close = difflib.get_close_matches(word, list(candidates), n=3, cutoff=0.6)
    return _suggest(close)


def _suggest(names: Sequence[str]) -> str:
    return f"; did you mean {' or '.join(repr(n) for n in names)}?" if names else ""


def leaf_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """Every settable key of `config` as a dotted path (`weighting.name`, ...)."""
    keys = []
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            keys += leaf_keys(value, f"{prefix}{key}.")
        else:
            keys.append(f"{prefix}{key}")
    return keys


def _initials(key: str) -> str:
    return "".join(word[:1] for word in key.split("_"))


def close_keys(config: ml_collections.ConfigDict, key: str) -> list[str]:
    """The valid dotted keys closest to the unknown `key`: the misspelt component replaced
    by a similar key of its group (`weighting.nmae` -> `weighting.name`) or one it
    abbreviates (`optimizer.lr` -> `optimizer.learning_rate`); failing that, the closest
    settable keys anywhere (`learning_rate` -> `optimizer.learning_rate`)."""
    parts = key.split(".")
    node, depth = config, 0
    while depth < len(parts) - 1 and isinstance(node.get(parts[depth]), ml_collections.ConfigDict):
        node, depth = node[parts[depth]], depth + 1
    typed, siblings = parts[depth], sorted(node)
    matches = difflib.get_close_matches(typed, siblings, n=3, cutoff=0.6)
    matches += [k for k in siblings if "_" in k and _initials(k) == typed and k not in matches]
    prefix, rest = ".".join(parts[:depth]), parts[depth + 1 :]
    found = [".".join([*([prefix] if prefix else []), match, *rest]) for match in matches]
    return found or difflib.get_close_matches(key, leaf_keys(config), n=3, cutoff=0.6)


def config_names() -> list[str]:
    """The names of the shipped configs (the modules of `CONFIG_PACKAGE`)."""
    try:
        package = importlib.import_module(CONFIG_PACKAGE)
    except ImportError:
        return []
    return sorted(info.name for info in pkgutil.iter_modules(package.__path__) if not info.ispkg)


@dataclasses.dataclass(frozen=True)
class ConfigSource:
    """Where a config comes from: a module (by dotted name) or a file, and the argument
    for its `get_config`.

    Attributes:
      spec: the text it was named by (`multi_mnist`, `pkg.cfg:tiny`, `path/cfg.py`).
      module: the dotted module name, or None for a file.
      path: the file, or None for a module.
      arg: the text after `:`, or None.
    """

    spec: str
    module: str | None = None
    path: Path | None = None
    arg: str | None = None

    @property
    def label(self) -> str:
        """How error messages name it: `config 'multi_mnist'` or `config file 'x.py'`."""
        if self.path is not None:
            return f"config file {str(self.path)!r}"
        return f"config {self.spec.partition(':')[0]!r}"

    @property
    def name(self) -> str:
        """A short name (for titles): the module's or file's last component, with `:ARG`."""
        stem = self.path.stem if self.path is not None else self.module.rpartition(".")[2]
        return stem if self.arg is None else f"{stem}:{self.arg}"

    def portable_spec(self) -> str:
        """The spec to record for a later run from another directory: a file's absolute
        path, a module's name (each with `:ARG`)."""
        if self.path is None:
            return self.spec
        path = str(self.path.resolve())
        return path if self.arg is None else f"{path}:{self.arg}"


def find_config(spec: str | os.PathLike) -> ConfigSource:
    """Resolves a `--config` value (see the module docstring); a `Path` is always a file.

    Raises:
      ConfigError: a file that does not exist, or a name that is not an importable module
        (suggesting the closest shipped config names).
    """
    if isinstance(spec, os.PathLike):
        if not Path(spec).is_file():
            raise ConfigError(f"config file {str(spec)!r} does not exist")
        return ConfigSource(str(spec), path=Path(spec))
    text = str(spec)
    directory, slash, last = text.replace(os.sep, "/").rpartition("/")
    if (slash or text.endswith(".py")) and os.path.isfile(text):  # even with ':' in its name
        return ConfigSource(text, path=Path(text))
    stem, colon, arg = last.partition(":")
    head = f"{directory}{slash}{stem}"
    arg = arg if colon else None
    if slash or head.endswith(".py"):
        path = Path(head)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        return ConfigSource(text, path=path, arg=arg)
    if not head or not all(part.isidentifier() for part in head.split(".")):
        raise ConfigError(
            f"config {text!r} is neither a config name ({config_names()}), a dotted module "
            "name nor a path to a .py file"
        )
    module = head if "." in head else f"{CONFIG_PACKAGE}.{head}"
    try:
        found = importlib.util.find_spec(module)
    except ImportError:  # a parent package is missing
        found = None
    if found is None:
        if "." in head:
            raise ConfigError(f"config module {head!r} cannot be found (not importable)")
        names = config_names()
        raise ConfigError(
            f"unknown config {head!r}; shipped configs: {names}, or a dotted module name or "
            f"a path to a .py file{did_you_mean(head, names)}"
        )
    return ConfigSource(text, module=module, arg=arg)


def _import(source: ConfigSource) -> types.ModuleType:
    """The config's module: imported by name (once per process), or a file executed anew."""
    try:
        if source.path is None:
            return importlib.import_module(source.module)
        spec = importlib.util.spec_from_file_location(
            f"_mtl_jax_config_{source.path.stem}", source.path
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    except ImportError as error:  # e.g. the `experiments` extra is not installed
        raise ConfigError(f"{source.label}: {type(error).__name__}: {error}") from error


def _call_get_config(source: ConfigSource, module: types.ModuleType):
    """`module.get_config()` or `get_config(arg)`, checking that the argument is wanted."""
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        raise ConfigError(f"{source.label} defines no get_config()")
    positional = [
        p
        for p in inspect.signature(get_config).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    required = [p for p in positional if p.kind != p.VAR_POSITIONAL and p.default is p.empty]
    if source.arg is None and required:
        raise ConfigError(
            f"{source.label}: get_config takes an argument ({required[0].name}); "
            f"write it after a colon, {source.spec}:VALUE"
        )
    if source.arg is not None and not positional:
        raise ConfigError(
            f"{source.label}: get_config takes no argument, got {source.arg!r} "
            f"(after ':' in {source.spec!r})"
        )
    try:
        return get_config() if source.arg is None else get_config(source.arg)
    except (TypeError, AttributeError, KeyError, ValueError) as error:
        # ml_collections raises these for a value of the wrong type or an unknown key.
        raise ConfigError(f"{source.label}: {type(error).__name__}: {error}") from error


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
                f"{sorted(reference)}" + _suggest([prefix + k for k in close_keys(reference, key)])
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
    spec: str | os.PathLike,
    overrides: Sequence[str] = (),
    *,
    reference: ml_collections.ConfigDict | None = None,
) -> ml_collections.ConfigDict:
    """Loads the config named by `spec` (a config name, a dotted module or a file path,
    optionally with `:ARG`; see `find_config`) and applies `key=value` overrides.

    With `reference` (the config listing every key, e.g. `experiments/configs/base.py`'s),
    the module's config is checked against it first (`check_against`), so that a key the
    config adds by mistake is an error too.

    Raises:
      ConfigError: naming the config, key or value (and the closest valid names).
    """
    source = find_config(spec)
    config = _call_get_config(source, _import(source))
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(
            f"{source.label}: get_config() returned a {type(config).__name__}, "
            "not an ml_collections.ConfigDict"
        )
    if reference is not None:
        try:
            check_against(config, reference)
        except ConfigError as error:
            raise ConfigError(f"{source.label}: {error}") from error
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
        if part not in node and _is_open(".".join(parts[:depth])):
            with node.unlocked():  # a new group below an open path
                node[part] = ml_collections.ConfigDict()
        if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
            if part in node:  # a value, not a group: `seed.x=1`
                raise ConfigError(f"config key {'.'.join(parts[: depth + 1])!r} has no keys")
            prefix = ".".join(parts[:depth]) or "<top>"
            raise ConfigError(
                f"unknown config key {key!r}; valid keys under {prefix}: {sorted(node)}"
                + _suggest(close_keys(config, key))
            )
        node = node[part]
    last = parts[-1]
    parent = ".".join(parts[:-1])
    if _is_open(parent):
        with node.unlocked():
            if last in node:  # replaced, whatever its type was
                del node[last]
            node[last] = _parse_literal(text)
        return
    if last not in node:
        raise ConfigError(
            f"unknown config key {key!r}; valid keys under {parent or '<top>'}: {sorted(node)}"
            + _suggest(close_keys(config, key))
        )
    node[last] = _parse_as(text, node[last], key)
