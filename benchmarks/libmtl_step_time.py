"""Time one LibMTL training step per weighting method on the workloads of WORKLOADS.md.

The PyTorch peer of `benchmarks.step_time`: the same workloads (`benchmarks.torch_workloads`)
and methods, run by LibMTL's own weighting classes, so that a run on one machine gives the
mtl_jax / PyTorch ratio per method. LibMTL is an external, unmodified source tree that is
imported at run time (a benchmark-only tool, never a dependency of mtl_jax); put it in
place with::

    bash benchmarks/get_libmtl.sh            # LibMTL 4336804 in third_party/LibMTL

One method, one process::

    python -m benchmarks.libmtl_step_time --workload W1 --method MGDA --steps 10 \\
        --warmup 3 --device cpu --libmtl-root third_party/LibMTL --json out.json

Every method of `METHODS` (or a subset), each in a fresh process, `EW` first, with a
Markdown table::

    python -m benchmarks.libmtl_step_time --workload W1 --method all --device cuda \\
        --json w1_libmtl.json --markdown w1_libmtl.md
    python -m benchmarks.libmtl_step_time --workload W3 --method all --methods MGDA,FAMO

How LibMTL is driven (what its `Trainer` does, HPS, `rep_grad=False`,
`multi_input=False`; LibMTL/trainer.py, `_prepare_model`, `_compute_loss` and
`train_singlelevel`):

* The model is a class deriving from LibMTL's `HPS` architecture and the weighting class,
  built with the task names, the workload's `encoder_class` and decoders, the device and
  no architecture arguments, then `init_param()`, then moved to the device. This gives
  the weighting the attributes it reads: `task_num`, `task_name`, `device`, `rep_grad`,
  `encoder`, `get_share_params`, `zero_grad_share_params` (LibMTL/architecture/
  abstract_arch.py) and its own state from `init_param` (e.g. UW's and GradNorm's
  `loss_scale`, FAMO's logits and their Adam).
* The weighting's keyword arguments are LibMTL's defaults:
  `LibMTL.config.prepare_args(LibMTL_args.parse_args(["--weighting", X]))["weight_args"]`.
* `model.epochs = 3`, `model.epoch = 2` and `model.train_loss_buffer` a [T, 3] array
  whose columns all hold the initial losses (one no-grad training-mode forward before
  the warm-up), so DWA takes its epoch ≥ 2 path (weights from the buffer) and GradNorm
  its epoch ≥ 1 path, as WORKLOADS.md times them.
* Adam (`torch.optim.Adam(model.parameters(), lr)`, no weight decay, as WORKLOADS.md
  says; LibMTL's command-line default would be 1e-5) over every parameter of the model,
  so trainable loss weights (UW, GradNorm, IMTL) are in it.

The timed step (WORKLOADS.md's steps 1–5), `time.perf_counter()` around it:

1. `preds = model(inputs)` (HPS forward: encoder, then every decoder);
2. the loss vector as `Trainer._compute_loss` builds it: `torch.zeros(T).to(device)`,
   then item-wise assignment of each task's loss from LibMTL's own
   `AbsLoss._update_loss` (which calls `loss.item()`: one host sync per task), then
   `torch.stack([losses]).squeeze(0)` as `train_singlelevel` does;
3. `optimizer.zero_grad(set_to_none=False)`, `model.backward(losses, **weight_args)`;
4. `optimizer.step()`;
5. FAMO only: under `torch.no_grad()`, the forward and loss vector again and
   `model.update_w(new_losses.detach())`;

then `torch.cuda.synchronize()` on CUDA, inside the timed region. Not timed, as in
WORKLOADS.md: the Trainer's per-batch `meter.update` metrics, data loading, schedulers
and the bookkeeping of returned weights. `--warmup` steps (default 3) come first, then
`--steps` timed steps (default 10); the median is reported. The batch is made once
(`torch.Generator().manual_seed(0)`) and moved to the device before any timing; the
model is initialised after LibMTL's own `LibMTL.utils.set_random_seed(seed)`, as LibMTL's
examples call it: it seeds `random`, numpy and torch and, where CUDA is available, sets
`torch.backends.cudnn.deterministic = True` and `cudnn.benchmark = False`, so CUDA runs
use deterministic cuDNN kernels, as LibMTL's own runs do.

Importing LibMTL: `LibMTL/__init__.py` imports the `Trainer`, whose module imports
`torch_geometric` and `cvxpy` at the top, and `LibMTL/weighting/__init__.py` and
`LibMTL/architecture/__init__.py` import every method and architecture, so one missing
optional dependency (qpsolvers for UPGrad, cvxpy for Nash_MTL) would break all methods.
`import_libmtl` therefore registers the packages `LibMTL`, `LibMTL.weighting` and
`LibMTL.architecture` as empty package modules whose search path is LibMTL's own folders,
without running their `__init__.py`; the submodules used (`weighting.<X>`,
`weighting.abstract_weighting`, `architecture.HPS`, `architecture.abstract_arch`,
`config`, `loss`, `utils`) are then imported from LibMTL's files unchanged.

`Aligned_MTL+eigh` is LibMTL's unmodified `Aligned_MTL` with `torch.symeig` (removed
in PyTorch 2; calling it raises RuntimeError) replaced, in that process only, by
`torch.linalg.eigh(A, UPLO="U" if upper else "L")` (what the RuntimeError's message
says to use; both give ascending eigenvalues). Plain `Aligned_MTL` can be asked for by
name and fails.

Fields of one run's JSON object: `workload`, `title`, `method` (as asked, e.g.
`Aligned_MTL+eigh`), `libmtl_class`, `mtljax_method` (the `mtl_jax.weighting` name of the
same method), `weight_args`, `num_tasks`, `task_names`, `median_s`, `steps_s` (every
timed step, seconds), `warmup_s`, `device` (`torch.cuda.get_device_name` or `"cpu"`),
`cpu` (the host CPU's model name), `torch_version`, `libmtl_commit` (git HEAD of the
LibMTL root when it is a clone, else the `.libmtl_commit` file `get_libmtl.sh` writes),
`libmtl_root`, `param_counts` (checked against WORKLOADS.md), `optimizer`, `threads`
(`torch.get_num_threads()`), `steps`, `warmup`, `seed`, `cudnn_deterministic`,
`symeig_shim` (`"torch.linalg.eigh"` for `Aligned_MTL+eigh`, else null), `peak_rss_mb`.

`--method all` writes a JSON list, one object per method, each with `ratio_to_ew`
(`median_s` over EW's, from EW's own process). A method whose process fails or passes
`--timeout` seconds gets `{"workload", "method", "mtljax_method", "error",
"stderr_tail"}` (`error`: the exit status and the exception line) and the others go on.
`--markdown out.md` writes the table.

Threads: `torch.set_num_threads(--threads)` (default 2, the spec's), before anything
runs; 0 leaves PyTorch's default.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.processes import REPO_ROOT, describe_cpu, run_in_process

DEFAULT_LIBMTL_ROOT = REPO_ROOT / "third_party" / "LibMTL"
# The LibMTL commit this benchmark was written against (benchmarks/get_libmtl.sh).
LIBMTL_COMMIT = "4336804"
COMMIT_MARKER = ".libmtl_commit"

DEFAULT_STEPS = 10
DEFAULT_WARMUP = 3
DEFAULT_THREADS = 2
DEFAULT_TIMEOUT_S = 900.0
DEFAULT_SEED = 0

# LibMTL method -> the mtl_jax.weighting method that computes the same thing.
MTLJAX_METHOD: dict[str, str] = {
    "EW": "equal",
    "UW": "uncertainty",
    "DWA": "dwa",
    "RLW": "rlw",
    "FAMO": "famo",
    "GradNorm": "gradnorm",
    "MGDA": "mgda",
    "PCGrad": "pcgrad",
    "GradVac": "gradvac",
    "CAGrad": "cagrad",
    "Nash_MTL": "nash_mtl",
    "IMTL": "imtl",
    "Aligned_MTL+eigh": "aligned_mtl",
    "DB_MTL": "db_mtl",
    "UPGrad": "upgrad",
    # Not in METHODS: fails on PyTorch >= 2 (torch.symeig); runs only when named.
    "Aligned_MTL": "aligned_mtl",
}
# What `--method all` runs by default, in this order (EW first: the reference).
METHODS: tuple[str, ...] = tuple(m for m in MTLJAX_METHOD if m != "Aligned_MTL")
EIGH_SUFFIX = "+eigh"


def libmtl_class_name(method: str) -> str:
    """The LibMTL weighting class of `method` (`Aligned_MTL+eigh` → `Aligned_MTL`)."""
    return method.removesuffix(EIGH_SUFFIX)


def import_libmtl(root: Path) -> None:
    """Makes LibMTL's submodules importable from `root` without running its `__init__`s.

    See the module docstring for why.

    Raises:
      FileNotFoundError: if `root` has no `LibMTL/weighting` folder.
    """
    package = Path(root).resolve() / "LibMTL"
    if not (package / "weighting" / "abstract_weighting.py").is_file():
        raise FileNotFoundError(
            f"no LibMTL source tree at {root} (expected {package}/weighting); "
            "run `bash benchmarks/get_libmtl.sh` or pass --libmtl-root"
        )
    if str(package.parent) not in sys.path:
        sys.path.insert(0, str(package.parent))
    for name, path in (
        ("LibMTL", package),
        ("LibMTL.weighting", package / "weighting"),
        ("LibMTL.architecture", package / "architecture"),
    ):
        existing = sys.modules.get(name)
        if existing is not None and list(getattr(existing, "__path__", [])) == [str(path)]:
            continue
        module = types.ModuleType(name)
        module.__path__ = [str(path)]
        module.__file__ = None
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, module)


def libmtl_commit(root: Path) -> str | None:
    """The LibMTL commit at `root`: its git HEAD when `root` is a clone's top, else the
    marker file that `get_libmtl.sh` writes; None when neither is there."""
    root = Path(root).resolve()
    try:
        top = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--show-toplevel", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        if len(top) == 2 and Path(top[0]).resolve() == root:
            return top[1]
    except (OSError, subprocess.CalledProcessError):
        pass
    marker = root / COMMIT_MARKER
    return marker.read_text().strip() if marker.is_file() else None


def weight_args(method: str) -> dict[str, Any]:
    """LibMTL's default keyword arguments for `method`'s `backward`, from
    `LibMTL.config.prepare_args` (its printout is discarded). Needs `import_libmtl`."""
    config = importlib.import_module("LibMTL.config")
    params = config.LibMTL_args.parse_args(
        ["--weighting", libmtl_class_name(method), "--arch", "HPS"]
    )
    with contextlib.redirect_stdout(io.StringIO()):
        kwargs, _, _ = config.prepare_args(params)
    return dict(kwargs["weight_args"])


def _symeig_via_eigh(input, eigenvectors=False, upper=True):
    import torch

    return torch.linalg.eigh(input, UPLO="U" if upper else "L")


def _make_losses(abs_loss: type, loss_fns: Mapping[str, Callable]) -> dict[str, Any]:
    """One LibMTL `AbsLoss` per task whose `compute_loss` is the workload's loss."""
    losses = {}
    for task, fn in loss_fns.items():
        cls = type(f"{task}Loss", (abs_loss,), {"compute_loss": lambda self, p, g, fn=fn: fn(p, g)})
        losses[task] = cls()
    return losses


def run_one(
    workload_name: str,
    method: str,
    *,
    steps: int = DEFAULT_STEPS,
    warmup: int = DEFAULT_WARMUP,
    device: str = "cpu",
    libmtl_root: Path = DEFAULT_LIBMTL_ROOT,
    threads: int = DEFAULT_THREADS,
    seed: int = DEFAULT_SEED,
) -> dict[str, Any]:
    """Times LibMTL's `method` on workload `workload_name` in this process.

    Returns the run's record (see the module docstring). Patches `torch.symeig` for
    `Aligned_MTL+eigh`, so run it in a process of its own (`--method all` does).

    Raises:
      ValueError: for bad steps/warm-up, an unknown method or device.
      FileNotFoundError: if there is no LibMTL tree at `libmtl_root`.
      AssertionError: if the model's parameter counts are not the spec's.
    """
    import numpy as np
    import torch

    from benchmarks import torch_workloads

    if steps < 1 or warmup < 1:
        raise ValueError(f"steps and warmup must be >= 1, got steps={steps}, warmup={warmup}")
    if method not in MTLJAX_METHOD:
        raise ValueError(f"unknown method {method!r}; valid methods: {list(MTLJAX_METHOD)}")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda, but torch.cuda.is_available() is false")
    if threads:
        torch.set_num_threads(threads)
    import_libmtl(libmtl_root)
    class_name = libmtl_class_name(method)
    weighting_class = getattr(importlib.import_module(f"LibMTL.weighting.{class_name}"), class_name)
    hps = importlib.import_module("LibMTL.architecture.HPS").HPS
    abs_loss = importlib.import_module("LibMTL.loss").AbsLoss
    set_random_seed = importlib.import_module("LibMTL.utils").set_random_seed
    kwargs = weight_args(method)
    if method.endswith(EIGH_SUFFIX):
        torch.symeig = _symeig_via_eigh

    workload = torch_workloads.build(workload_name, seed=seed)
    dev = torch.device("cuda:0" if device == "cuda" else "cpu")
    inputs = workload.inputs.to(dev)
    gts = {task: t.to(dev) for task, t in workload.targets.items()}
    task_names = list(workload.task_names)
    num_tasks = len(task_names)

    # Seeds random, numpy and torch; on CUDA also sets cudnn.deterministic = True and
    # cudnn.benchmark = False, as every LibMTL example run does (examples/*/main.py).
    set_random_seed(seed)
    model_class = type("MTLmodel", (hps, weighting_class), {})
    model = model_class(
        task_name=task_names,
        encoder_class=workload.encoder_class,
        decoders=workload.make_decoders(),
        rep_grad=False,
        multi_input=False,
        device=dev,
    )
    model.init_param()
    model = model.to(dev)
    counts = torch_workloads.check_parameter_counts(workload, model.encoder, model.decoders)
    optimizer = torch.optim.Adam(model.parameters(), lr=workload.learning_rate)
    loss_objs = _make_losses(abs_loss, workload.loss_fns)

    def loss_vector(preds):
        losses = torch.zeros(num_tasks).to(dev)
        for tn, task in enumerate(task_names):
            losses[tn] = loss_objs[task]._update_loss(preds[task], gts[task])
        return losses

    model.train()
    with torch.no_grad():
        initial = loss_vector(model(inputs)).cpu().numpy().astype(np.float64)
    for loss_obj in loss_objs.values():
        loss_obj._reinit()
    model.epochs = 3
    model.epoch = 2
    model.train_loss_buffer = np.repeat(initial[:, None], model.epochs, axis=1)

    famo = class_name == "FAMO"
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def one_step() -> float:
        start = time.perf_counter()
        preds = model(inputs)
        losses = torch.stack([loss_vector(preds)]).squeeze(0)
        optimizer.zero_grad(set_to_none=False)
        model.backward(losses, **kwargs)
        optimizer.step()
        if famo:
            with torch.no_grad():
                new_losses = loss_vector(model(inputs))
                model.update_w(new_losses.detach())
        sync()
        return time.perf_counter() - start

    sync()
    times = [one_step() for _ in range(warmup + steps)]
    warmup_s, steps_s = times[:warmup], times[warmup:]
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    return {
        "workload": workload_name,
        "title": workload.title,
        "method": method,
        "libmtl_class": class_name,
        "mtljax_method": MTLJAX_METHOD[method],
        "weight_args": kwargs,
        "symeig_shim": "torch.linalg.eigh" if method.endswith(EIGH_SUFFIX) else None,
        "num_tasks": num_tasks,
        "task_names": task_names,
        "median_s": statistics.median(steps_s),
        "steps_s": steps_s,
        "warmup_s": warmup_s,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "cpu": describe_cpu(),
        "torch_version": torch.__version__,
        "libmtl_commit": libmtl_commit(libmtl_root),
        "libmtl_root": str(Path(libmtl_root).resolve()),
        "param_counts": counts,
        "optimizer": {"name": "Adam", "lr": workload.learning_rate, "weight_decay": 0.0},
        "threads": torch.get_num_threads(),
        "steps": steps,
        "warmup": warmup,
        "seed": seed,
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "peak_rss_mb": peak_rss_mb,
    }


def run_all(
    workload_name: str,
    methods: Sequence[str],
    *,
    steps: int = DEFAULT_STEPS,
    warmup: int = DEFAULT_WARMUP,
    device: str = "cpu",
    libmtl_root: Path = DEFAULT_LIBMTL_ROOT,
    threads: int = DEFAULT_THREADS,
    seed: int = DEFAULT_SEED,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> list[dict[str, Any]]:
    """Runs each method in a fresh `python -m benchmarks.libmtl_step_time` process, EW
    first (it is added when missing); a failed or timed-out process gives an error
    record and the others go on. Adds `ratio_to_ew` to each run when EW ran."""
    methods = ["EW", *(m for m in dict.fromkeys(methods) if m != "EW")]
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in methods:
            out = Path(tmp) / f"{method}.json"
            command = [
                sys.executable, "-m", "benchmarks.libmtl_step_time",
                "--workload", workload_name, "--method", method,
                "--steps", str(steps), "--warmup", str(warmup), "--device", device,
                "--libmtl-root", str(Path(libmtl_root).resolve()),
                "--threads", str(threads), "--seed", str(seed), "--json", str(out),
            ]  # fmt: skip
            failed = {
                "workload": workload_name,
                "method": method,
                "mtljax_method": MTLJAX_METHOD.get(method),
            }
            results.append(
                run_in_process(
                    command,
                    out,
                    label=f"libmtl_step_time {workload_name} {method}",
                    failed=failed,
                    timeout_s=timeout_s,
                )
            )
    ew = next((r for r in results if r["method"] == "EW" and "error" not in r), None)
    if ew is not None:
        for run in results:
            if "error" not in run:
                run["ratio_to_ew"] = run["median_s"] / ew["median_s"]
    return results


def markdown_table(results: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table of `run_all` output, one row per method, with a header line
    giving the workload, device, versions and step counts."""
    done = [r for r in results if "error" not in r]
    first = done[0] if done else {}
    lines = [
        f"Workload {first.get('workload', '?')} ({first.get('title', '?')}): LibMTL "
        f"{first.get('libmtl_commit', '?')}, torch {first.get('torch_version', '?')} on "
        f"{first.get('device', '?')} (CPU: {first.get('cpu', '?')}), threads "
        f"{first.get('threads', '?')}; median of {first.get('steps', '?')} steps after "
        f"{first.get('warmup', '?')} warm-up; each method in its own process.",
        "",
        "| LibMTL method | mtl_jax method | median ms | ratio to EW |",
        "|---|---|---:|---:|",
    ]
    for run in results:
        if "error" in run:
            error = " ".join(str(run["error"]).split())[:120].replace("|", "\\|")
            lines.append(f"| {run['method']} | {run.get('mtljax_method')} | failed: {error} | |")
            continue
        ratio = run.get("ratio_to_ew")
        lines.append(
            f"| {run['method']} | {run['mtljax_method']} | {1e3 * run['median_s']:.2f} "
            f"| {'' if ratio is None else f'{ratio:.3f}'} |"
        )
    return "\n".join(lines) + "\n"


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.libmtl_step_time",
        description="Time one LibMTL training step per weighting method (module docstring).",
    )
    parser.add_argument("--workload", required=True, choices=("W1", "W2", "W3"))
    parser.add_argument("--method", required=True, help=f"one of {list(MTLJAX_METHOD)}, or 'all'")
    parser.add_argument(
        "--methods", help="with --method all: comma-separated subset (default: METHODS)"
    )
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--libmtl-root", type=Path, default=DEFAULT_LIBMTL_ROOT)
    parser.add_argument(
        "--threads", type=int, default=DEFAULT_THREADS, help="torch.set_num_threads; 0 = default"
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="per-method seconds (all)"
    )
    parser.add_argument("--json", type=Path, help="write the result here")
    parser.add_argument("--markdown", type=Path, help="with --method all: write the table here")
    args = parser.parse_args(argv)
    if args.method != "all":
        if args.methods or args.markdown:
            parser.error("--methods and --markdown go with --method all")
        if args.method not in MTLJAX_METHOD:
            parser.error(f"unknown method {args.method!r}; valid: {list(MTLJAX_METHOD)}")
    elif args.methods:
        unknown = [m for m in args.methods.split(",") if m not in MTLJAX_METHOD]
        if unknown:
            parser.error(f"unknown method(s) {unknown}; valid: {list(MTLJAX_METHOD)}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point (see the module docstring)."""
    args = _parse_args(argv)
    common = {
        "steps": args.steps,
        "warmup": args.warmup,
        "device": args.device,
        "libmtl_root": args.libmtl_root,
        "threads": args.threads,
        "seed": args.seed,
    }
    if args.method == "all":
        methods = args.methods.split(",") if args.methods else list(METHODS)
        result: Any = run_all(args.workload, methods, timeout_s=args.timeout, **common)
        if args.markdown:
            args.markdown.write_text(markdown_table(result))
    else:
        result = run_one(args.workload, args.method, **common)
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
