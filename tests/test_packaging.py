"""The distribution: every import is declared, the library needs only its core
dependencies, one source for the version; and (slow, needs PyPI) the wheel installs into
fresh virtual environments: the core alone, and with the extras the `mtl-jax` command
trains from any directory."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import mtl_jax
from mtl_jax import cli

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
FIRST_PARTY = {"mtl_jax", "experiments"}
# The library: what `pip install mtl-jax` (no extra) must be able to import.
CORE_MODULES = (
    "weighting",
    "jacobian",
    "row_math",
    "models",
    "tasks",
    "train",
    "metrics",
    "losses",
    "param_blocks",
    "parallel",
    "statistics",
)
# Import names that differ from their distribution's name.
DISTRIBUTION_OF_IMPORT = {
    "PIL": "pillow",
    "sklearn": "scikit-learn",
    "yaml": "pyyaml",
    "orbax": "orbax-checkpoint",
    "tensorboardX": "tensorboardx",
    "cv2": "opencv-python",
}
# Left out of the core-only environment (orbax-checkpoint is there: flax requires it).
EXTRA_ONLY_MODULES = ("tensorflow_datasets", "grain", "ml_collections", "tqdm", "mlxtend")


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503


def _distribution(requirement: str) -> str:
    return _normalize(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement).group(0))


def _declared() -> dict[str, set[str]]:
    """`{"core" or extra: {normalised distribution names}}` from pyproject.toml."""
    project = PYPROJECT["project"]
    groups = {"core": {_distribution(r) for r in project["dependencies"]}}
    for extra, requirements in project["optional-dependencies"].items():
        groups[extra] = {_distribution(r) for r in requirements}
    return groups


def _distribution_of(module: str) -> str:
    return _normalize(DISTRIBUTION_OF_IMPORT.get(module, module))


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    """Absolute names of the modules `path` imports: anywhere, or only those run when it is
    imported (its body, `if`/`try` blocks included, `if TYPE_CHECKING:` excluded)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    else:
        package = package.removesuffix(".__init__")

    def statements(body):
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                yield from statements(node.orelse)
            elif isinstance(node, (ast.If, ast.Try)):
                yield node
                for block in ("body", "orelse", "finalbody"):
                    yield from statements(getattr(node, block, []))
                for handler in getattr(node, "handlers", []):
                    yield from statements(handler.body)
            else:
                yield node

    nodes = ast.walk(tree) if not top_level_only else statements(tree.body)
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}  # maybe submodules
    return names


def _source(module: str) -> Path | None:
    """The file of a first-party module, or None (an attribute, not a module)."""
    path = ROOT.joinpath(*module.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _third_party(names) -> set[str]:
    tops = {name.partition(".")[0] for name in names if name}
    return {t for t in tops if t not in sys.stdlib_module_names and t not in FIRST_PARTY}


def test_every_third_party_import_is_declared():
    declared = set().union(*_declared().values())
    files = [*(ROOT / "mtl_jax").rglob("*.py"), *(ROOT / "experiments").rglob("*.py")]
    undeclared = {}
    for path in files:
        for module in _third_party(_imports(path, top_level_only=False)):
            if _distribution_of(module) not in declared:
                undeclared.setdefault(module, []).append(str(path.relative_to(ROOT)))
    assert not undeclared, f"imported but not in pyproject.toml (core or an extra): {undeclared}"


def _reachable(starts, *, top_level_only) -> dict[str, set[str]]:
    """`{module: its imports}` for every first-party module reached from `starts` by
    following imports (parents' `__init__` included). `top_level_only(name)` says whether
    only the imports that run when `name` is imported count, or function-level ones too."""
    reached, stack = {}, list(starts)
    while stack:
        parts = stack.pop().split(".")
        for depth in range(1, len(parts) + 1):
            name = ".".join(parts[:depth])
            path = _source(name)
            if path is None or name in reached:
                continue
            reached[name] = _imports(path, top_level_only=top_level_only(name))
            stack += [n for n in reached[name] if n.partition(".")[0] in FIRST_PARTY]
    return reached


def test_the_library_imports_only_core_dependencies():
    """Following the first-party imports each core module runs when imported (parents'
    `__init__` included), no third-party module outside the core dependencies is met."""
    core = _declared()["core"]
    reached = _reachable([f"mtl_jax.{m}" for m in CORE_MODULES], top_level_only=lambda _: True)
    offending = {}
    for name, imports in reached.items():
        for third in _third_party(imports):
            if _distribution_of(third) not in core:
                offending.setdefault(name, set()).add(third)
    assert "mtl_jax.weighting" in reached and "mtl_jax.train" in reached
    assert not offending, f"core modules importing non-core packages: {offending}"


def test_weighting_imports_neither_the_gradient_engine_nor_the_trainer():
    """The methods are pure functions of losses, Gramians and rows: `mtl_jax.weighting`
    (every module under it, and everything they import) reaches no gradient engine,
    train step, data pipeline or experiment layer."""
    methods = sorted((ROOT / "mtl_jax" / "weighting").glob("*.py"))
    assert len(methods) > 29  # every method module is read
    # Function-level imports count too (a method may import lazily), except the root
    # package's: only its top level runs when a submodule is imported (its lazy
    # `mtl_jax.load_run` is not something the methods call).
    reached = _reachable(
        [f"mtl_jax.weighting.{p.stem}" for p in methods],
        top_level_only=lambda name: name == "mtl_jax",
    )
    forbidden = (
        "mtl_jax.jacobian",
        "mtl_jax.train",
        "mtl_jax.parallel",
        "mtl_jax.experiment",
        "mtl_jax.data",
        "mtl_jax.models",
        "experiments",
    )
    reached_forbidden = sorted(
        n for n in reached if any(n == f or n.startswith(f + ".") for f in forbidden)
    )
    assert "mtl_jax.row_math" in reached
    assert not reached_forbidden, f"mtl_jax.weighting reaches {reached_forbidden}"


def test_one_source_for_the_version():
    project = PYPROJECT["project"]
    assert "version" not in project and "version" in project["dynamic"]
    dynamic = PYPROJECT["tool"]["setuptools"]["dynamic"]["version"]
    assert dynamic == {"attr": "mtl_jax.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+([.-]?\w+)?", mtl_jax.__version__)
    assert project["name"] == "mtl-jax" and project["license"] == "Apache-2.0"
    assert project["scripts"] == {"mtl-jax": "mtl_jax.cli:main"}
    assert (ROOT / "LICENSE").read_text().count("Apache License") >= 1
    assert (ROOT / "mtl_jax" / "py.typed").is_file()


def test_the_cli_names_the_extra_of_each_optional_module():
    declared = _declared()
    for module, extra in cli.EXTRA_OF_MODULE.items():
        assert _distribution_of(module) in declared[extra], (module, extra)


# --- Slow: build the wheel, install it into fresh virtual environments (needs PyPI). ---


def _run(argv, *, cwd, timeout=1800, env=None) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, (argv, done.stdout[-3000:], done.stderr[-3000:])
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the checkout's files (tracked and untracked, not
    ignored), so the build writes nothing into the checkout."""
    source = tmp_path_factory.mktemp("source")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", ".", "-w", out], cwd=source)
    (path,) = out.glob("mtl_jax-*.whl")
    return path


def _venv(path: Path, requirement: str, cwd: Path) -> Path:
    _run([sys.executable, "-m", "venv", path], cwd=cwd)
    python = path / "bin" / "python"
    _run([python, "-m", "pip", "install", "--quiet", requirement], cwd=cwd)
    return python


@pytest.mark.slow
def test_core_install_is_the_library_alone(wheel, tmp_path):
    """About 2 minutes (jax, flax, optax, numpy from PyPI)."""
    python = _venv(tmp_path / "venv", str(wheel), tmp_path)
    check = f"""
import importlib.metadata, importlib.util, json, pathlib
import mtl_jax, mtl_jax.weighting, mtl_jax.train
{"; ".join(f"import mtl_jax.{m}" for m in CORE_MODULES)}
print(json.dumps({{
    "version": importlib.metadata.version("mtl-jax"),
    "module_version": mtl_jax.__version__,
    "license": importlib.metadata.metadata("mtl-jax").get("License-Expression"),
    "py_typed": (pathlib.Path(mtl_jax.__file__).parent / "py.typed").is_file(),
    "configs": importlib.util.find_spec("experiments.configs.test") is not None,
    "absent": {{m: importlib.util.find_spec(m) is None for m in {list(EXTRA_ONLY_MODULES)!r}}},
}}))
"""
    facts = json.loads(_run([python, "-c", check], cwd=tmp_path).stdout)
    assert facts["version"] == facts["module_version"] == mtl_jax.__version__
    assert facts["license"] == "Apache-2.0" and facts["py_typed"] and facts["configs"]
    assert all(facts["absent"].values()), facts["absent"]
    listing = _run([python, "-m", "pip", "list", "--format=freeze"], cwd=tmp_path).stdout
    print("pip list (core only):\n" + listing)
    # The command is there and says which extra a subcommand needs.
    assert "train" in _run([tmp_path / "venv" / "bin" / "mtl-jax", "--help"], cwd=tmp_path).stdout
    done = subprocess.run(
        [tmp_path / "venv" / "bin" / "mtl-jax", "train", "--config", "test", "--workdir", "x"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 2 and "mtl-jax[experiments]" in done.stderr, done.stderr[-2000:]


@pytest.mark.slow
def test_extras_install_trains_from_any_directory(wheel, tmp_path):
    """About 5 minutes: the experiment extras from PyPI, then the tiny run from outside
    the checkout (the config found by name, the dataset built into a fresh data dir)."""
    python = _venv(tmp_path / "venv", f"{wheel}[experiments,mnist,tensorboard]", tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = dict(os.environ, MTL_JAX_DATA_DIR=str(tmp_path / "data"))
    env.pop("PYTHONPATH", None)
    workdir = elsewhere / "run"
    done = _run(
        [python.parent / "mtl-jax", "train", "--config", "test", "--workdir", workdir,
         "--no-progress"],
        cwd=elsewhere, env=env,
    )  # fmt: skip
    assert "accuracy=" in done.stdout
    results = json.loads((workdir / "results.json").read_text())
    assert results["steps"] == 30
    print("workdir holds:", sorted(p.name for p in workdir.iterdir()))
    events = list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    assert events and all(p.stat().st_size > 0 for p in events)
    assert (workdir / "train.log").is_file()
    where = _run([python, "-c", "import mtl_jax; print(mtl_jax.__file__)"], cwd=elsewhere).stdout
    assert str(ROOT) not in where  # the installed copy ran, not the checkout
