"""What the step-time benchmarks share, for JAX and PyTorch alike (imports neither).

* `run_in_process`: one (workload, method) in a fresh `python -m ...` process, its JSON
  record read back, or an error record when it fails or times out;
* `exception_line`: the line of a traceback that says what failed;
* `describe_cpu`: the host CPU as `/proc/cpuinfo` names it;
* `count_mismatches`: which parameter counts differ from a spec's.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
_TAIL_LINES = 15


def exception_line(lines: Sequence[str]) -> str:
    """The last `SomeError: message` line of a traceback, else its last line."""
    for line in reversed(lines):
        if re.match(r"^[A-Za-z_.]*(Error|Exception): ", line):
            return line
    return lines[-1] if lines else "(no output)"


def run_in_process(
    command: Sequence[str],
    out: Path,
    *,
    label: str,
    failed: Mapping[str, Any],
    timeout_s: float,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Runs `command` (which writes its JSON record to `out`) from the repository root.

    Returns the record, or `{**failed, "error", "stderr_tail"}` when the process exits
    non-zero, writes no record, or passes `timeout_s` seconds. Progress goes to stderr,
    prefixed with `[label]`.
    """
    print(f"[{label}] ...", file=sys.stderr, flush=True)
    try:
        proc = subprocess.run(
            list(command), cwd=REPO_ROOT, env=None if env is None else dict(env),
            capture_output=True, text=True, timeout=timeout_s,
        )  # fmt: skip
    except subprocess.TimeoutExpired as timeout:
        stderr = timeout.stderr
        stderr = stderr.decode() if isinstance(stderr, bytes) else stderr or ""
        tail = stderr.strip().splitlines()[-_TAIL_LINES:]
        error = f"timed out after {timeout_s:g} s"
    else:
        if proc.returncode == 0 and out.exists():
            record = json.loads(out.read_text())
            print(f"[{label}]: {1e3 * record['median_s']:.2f} ms", file=sys.stderr, flush=True)
            return record
        tail = proc.stderr.strip().splitlines()[-_TAIL_LINES:]
        error = f"exit {proc.returncode}: {exception_line(tail)}"
    print(f"[{label}]   failed: {error}", file=sys.stderr, flush=True)
    return {**failed, "error": error, "stderr_tail": "\n".join(tail)}


def describe_cpu() -> str:
    """The host CPU as `/proc/cpuinfo` names it, with family and model (VMs often report
    only "AMD EPYC"), and whether it has AVX-512; "unknown" where there is no cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    avx512 = "avx512f" in fields.get("flags", "").split()
    return (
        f"{fields.get('model name', 'unknown')} (family {fields.get('cpu family', '?')}, "
        f"model {fields.get('model', '?')}, {'with' if avx512 else 'no'} AVX-512)"
    )


def count_mismatches(counts: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    """`"part: counted != expected"` for the shared and total counts and each head that
    differ (`counts` and `expected` are `{"shared", "total", "tasks": {task: n}}`)."""
    wrong = [
        f"{part}: {counts[part]:,} != {expected[part]:,}"
        for part in ("shared", "total")
        if counts[part] != expected[part]
    ]
    wrong += [
        f"head {name!r}: {counts['tasks'].get(name, 0):,} != {n:,}"
        for name, n in sorted(expected["tasks"].items())
        if counts["tasks"].get(name) != n
    ]
    return wrong
