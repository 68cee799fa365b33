"""`benchmarks/device_check.sh` in its tiny mode on the CPU: every section runs (LibMTL's
when `third_party/LibMTL` and torch are present) and the report holds each one's numbers."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_tiny_device_check_runs_every_section_and_reports(tmp_path, tiny_multi_mnist, data_dir):
    out = tmp_path / "out"
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "DEVICE_CHECK_TINY": "1",
        "DEVICE_CHECK_DATA_DIR": data_dir,
    }
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "device_check.sh"), str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    log = (out / "device_check.log").read_text()
    assert done.returncode == 0, done.stderr[-3000:] + log[-3000:]
    assert "FAILED" not in log and "skipped (time budget" not in log, log[-3000:]
    result = json.loads((out / "device_check.json").read_text())
    rows = {r["method"]: r for r in result["comparisons"]["W1"]}
    assert set(rows) == {"equal", "mgda"}
    assert all(r["mtl_jax_ms"] > 0 for r in rows.values())
    with_libmtl = (ROOT / "third_party" / "LibMTL").is_dir() and importlib.util.find_spec("torch")
    if with_libmtl:
        assert rows["mgda"]["libmtl_method"] == "MGDA" and rows["mgda"]["ratio"] > 0
    else:
        assert "LibMTL: skipped" in log
    assert set(result["loop"]) == {"equal", "mgda"}
    assert all(r[0]["overhead_ratio"] > 0 for r in result["loop"].values())
    assert set(result["vmapped"]) == {"equal", "mgda"}
    assert [r["method"] for r in result["mtl_jax_rep_grad"]["W1"]] == ["equal", "mgda"]
    table = (out / "device_check.md").read_text()
    assert "| W1 | mgda |" in table and "overhead ratio" in table and "vmapped seeds" in table
