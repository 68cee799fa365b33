"""One JSON and one Markdown table from the outputs of `benchmarks/device_check.sh`.

::

    python -m benchmarks.device_report OUT

reads, in `OUT`, whichever of these exist: `mtl_jax_W*.json` and `mtl_jax_W*_rep_grad.json`
(`benchmarks.step_time --method all`), `libmtl_W*.json` (`benchmarks.libmtl_step_time
--method all`), `loop_*.json` (`benchmarks.loop_overhead`) and `vmapped_*.json`
(`benchmarks.vmapped_seeds`), and writes `OUT/device_check.json` (everything, plus the
per-method comparison) and `OUT/device_check.md`. The comparison pairs each mtl_jax
method with the LibMTL class of the same method (`mtljax_method`) on the same workload:
`ratio = mtl_jax median / LibMTL median` (below 1: mtl_jax is faster). A method that
failed on either side is listed with its error instead of a ratio.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def _read(path: Path) -> Any:
    return json.loads(path.read_text())


def _by_workload(out: Path, pattern: str) -> dict[str, list[dict]]:
    found = {}
    for path in sorted(out.glob("*.json")):
        match = re.fullmatch(pattern, path.name)
        if match:
            found[match.group(1)] = _read(path)
    return found


def compare(mtl_jax: Sequence[Mapping], libmtl: Sequence[Mapping]) -> list[dict]:
    """Rows `{method, libmtl_method, mtl_jax_ms, libmtl_ms, ratio, error}` of one workload."""
    peers = {row.get("mtljax_method"): row for row in libmtl}
    rows = []
    for ours in mtl_jax:
        name = ours["method"]
        theirs = peers.get(name)
        row = {"method": name, "libmtl_method": theirs["method"] if theirs else None}
        errors = [r["error"] for r in (ours, theirs) if r is not None and "error" in r]
        row["mtl_jax_ms"] = None if "error" in ours else 1e3 * ours["median_s"]
        row["libmtl_ms"] = None if theirs is None or "error" in theirs else 1e3 * theirs["median_s"]
        both = row["mtl_jax_ms"] is not None and row["libmtl_ms"] is not None
        row["ratio"] = row["mtl_jax_ms"] / row["libmtl_ms"] if both else None
        row["error"] = "; ".join(errors) or None
        rows.append(row)
    return rows


def geometric_mean(values: Sequence[float]) -> float | None:
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def _device(runs: Sequence[Mapping]) -> str:
    for row in runs:
        if "devices" in row:
            return ", ".join(row["devices"])
        if "device" in row:
            return row["device"]
    return "unknown"


def report(out: Path) -> dict:
    mtl_jax = _by_workload(out, r"mtl_jax_(W\d)\.json")
    rep_grad = _by_workload(out, r"mtl_jax_(W\d)_rep_grad\.json")
    libmtl = _by_workload(out, r"libmtl_(W\d)\.json")
    comparisons = {w: compare(runs, libmtl.get(w, [])) for w, runs in mtl_jax.items()}
    ratios = [r["ratio"] for rows in comparisons.values() for r in rows if r["ratio"]]
    return {
        "mtl_jax_device": _device([r for runs in mtl_jax.values() for r in runs]),
        "libmtl_device": _device([r for runs in libmtl.values() for r in runs]),
        "comparisons": comparisons,
        "geometric_mean_ratio": geometric_mean(ratios),
        "mtl_jax": mtl_jax,
        "mtl_jax_rep_grad": rep_grad,
        "libmtl": libmtl,
        "loop": {p.stem[5:]: _read(p) for p in sorted(out.glob("loop_*.json"))},
        "vmapped": {p.stem[8:]: _read(p) for p in sorted(out.glob("vmapped_*.json"))},
    }


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def markdown(result: Mapping) -> str:
    lines = [
        f"mtl_jax on {result['mtl_jax_device']}; LibMTL on {result['libmtl_device']}.",
        "",
        "| workload | method | mtl_jax ms | LibMTL class | LibMTL ms | mtl_jax / LibMTL |",
        "|---|---|---|---|---|---|",
    ]
    for workload, rows in result["comparisons"].items():
        for r in rows:
            ratio = "—" if r["ratio"] is None else f"{r['ratio']:.3f}"
            if r["error"]:
                ratio += f" ({r['error'][:80]})"
            lines.append(
                f"| {workload} | {r['method']} | {_ms(r['mtl_jax_ms'])} | "
                f"{r['libmtl_method'] or '—'} | {_ms(r['libmtl_ms'])} | {ratio} |"
            )
    if result["geometric_mean_ratio"]:
        lines += ["", f"Geometric mean of the ratios: {result['geometric_mean_ratio']:.3f}."]
    for workload, runs in result["mtl_jax_rep_grad"].items():
        lines += [
            "",
            f"rep_grad, {workload}: "
            + ", ".join(
                f"{r['method']} {_ms(1e3 * r['median_s']) if 'median_s' in r else 'failed'} ms"
                for r in runs
            ),
        ]
    if result["loop"]:
        lines += [
            "",
            "| loop | steps | train_wall_s | first step s | step median ms | overhead ratio |",
            "|---|---|---|---|---|---|",
        ]
        for name, rows in result["loop"].items():
            for r in rows:
                lines.append(
                    f"| {name} | {r['steps']} | {r['train_wall_s']:.2f} | "
                    f"{r['first_step_s']:.2f} | {1e3 * r['step_median_s']:.2f} | "
                    f"{r['overhead_ratio']:.3f} |"
                )
    if result["vmapped"]:
        lines += [
            "",
            "| vmapped seeds | S | vmapped ms | sequential ms | ratio |",
            "|---|---|---|---|---|",
        ]
        for name, r in result["vmapped"].items():
            lines.append(
                f"| {name} | {r['seeds']} | {1e3 * r['vmapped_median_s']:.1f} | "
                f"{1e3 * r['sequential_median_s']:.1f} | {r['ratio']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) != 1:
        raise SystemExit("usage: python -m benchmarks.device_report OUT")
    out = Path(args[0])
    result = report(out)
    (out / "device_check.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    (out / "device_check.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
