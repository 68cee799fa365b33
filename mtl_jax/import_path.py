"""User objects named in a config by import path (`"my_pkg.my_module:factory"`).

A config names a built-in by its registry name (`"mgda"`, `"lenet"`, `"multi_mnist"`) and
a user's own object by `module:attribute`, so nothing in the library is edited to use it.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterable
from typing import Any


def is_import_path(name: str) -> bool:
    """Whether `name` is written `module:attribute` (registry names hold no colon)."""
    return ":" in name


def load(path: str, *, what: str) -> Any:
    """The object `attribute` of module `module` for `path = "module:attribute"`.

    Raises:
      ValueError: naming `what` and the path, for a malformed path, a module that cannot be
        imported (with the import error) or a missing attribute.
    """
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute or ":" in attribute:
        raise ValueError(f"{what} {path!r}: an import path is written 'package.module:name'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(
            f"{what} {path!r}: cannot import module {module_name!r} "
            f"({type(error).__name__}: {error}); is it installed or on PYTHONPATH?"
        ) from error
    node: Any = module
    for part in attribute.split("."):
        if not hasattr(node, part):
            raise ValueError(f"{what} {path!r}: module {module_name!r} has no {attribute!r}")
        node = getattr(node, part)
    return node


def unknown_name(name: str, valid: Iterable[str], *, what: str) -> str:
    """The error message for an unknown registry name: the closest valid names, all of them,
    and the import-path form for a user's own."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.6)
    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    return (
        f"unknown {what} {name!r}{hint}; valid: {valid}, or an import path "
        "'package.module:name' for your own"
    )
