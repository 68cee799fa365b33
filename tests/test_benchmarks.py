"""Smoke tests of the step-time benchmark (benchmarks/): workloads, one run's record,
the ratios and the table. Timings themselves are not checked."""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import re
from pathlib import Path

import jax
import pytest

from benchmarks import processes, solver_time, step_time, workloads
from mtl_jax import train, weighting

# Parameter counts stated in WORKLOADS.md: (shared, total, {head: count}).
SPEC_COUNTS = {
    "W1": (21_330, 27_450, {"L": 3_060, "R": 3_060}),
    "W2": (307_360, 529_841, {"segmentation": 74_637, "depth": 73_857, "normal": 73_987}),
    "W3": (307_360, 312_520, {f"attr{i:02d}": 129 for i in range(40)}),
}

RUN_FIELDS = {
    "workload": str,
    "method": str,
    "kind": str,
    "after_update": bool,
    "rep_grad": bool,
    "num_tasks": int,
    "options": dict,
    "median_s": float,
    "steps_s": list,
    "warmup_s": list,
    "equal_median_s": float,
    "equal_steps_s": list,
    "forward_s": float,
    "forward_backward_s": float,
    "forward_steps_s": list,
    "forward_backward_steps_s": list,
    "peak_rss_mb": float,
    "param_counts": dict,
    "jax_version": str,
    "devices": list,
    "steps": int,
    "warmup": int,
}


@pytest.mark.parametrize("name", workloads.WORKLOADS)
def test_workload_matches_spec(name):
    workload = workloads.build(name)
    shapes = jax.eval_shape(workload.model.init, jax.random.PRNGKey(0), workload.batch["image"])
    shared, total, heads = SPEC_COUNTS[name]
    assert workloads.parameter_counts(shapes["params"]) == {
        "shared": shared,
        "total": total,
        "tasks": heads,
    }
    assert set(workload.batch["targets"]) == set(heads) == set(workload.tasks)
    image = workload.batch["image"]
    assert image.dtype == "float32" and image.ndim == 4
    assert abs(float(image.mean())) < 0.05 and abs(float(image.std()) - 1.0) < 0.05


def test_w2_normal_targets_are_unit_vectors():
    normal = workloads.build("W2").batch["targets"]["normal"]
    norms = jax.numpy.linalg.norm(normal, axis=-1)
    assert float(jax.numpy.max(jax.numpy.abs(norms - 1.0))) < 1e-5


def test_wrong_parameter_counts_are_named():
    workload = workloads.build("W1")
    wrong = dataclasses.replace(
        workload,
        expected_counts={"shared": 1, "total": 27_450, "tasks": {"L": 3_060, "R": 7}},
    )
    shapes = jax.eval_shape(workload.model.init, jax.random.PRNGKey(0), workload.batch["image"])
    with pytest.raises(AssertionError, match=r"shared: 21,330 != 1.*head 'R': 3,060 != 7"):
        workloads.check_parameter_counts(wrong, shapes["params"])


def test_unknown_workload():
    with pytest.raises(ValueError, match="W1"):
        workloads.build("W9")


def test_minimal_work_ratio():
    times = {"forward_s": 1.0, "forward_backward_s": 3.0}  # F = 1, B = 2
    ratio = step_time.minimal_work_ratio
    assert ratio(kind="loss", rep_grad=False, after_update=False, num_tasks=4, **times) == 1.0
    # T backwards: (F + T·B) / (F + B).
    assert ratio(kind="gramian", rep_grad=False, after_update=False, num_tasks=4, **times) == 3.0
    assert ratio(kind="jacobian", rep_grad=False, after_update=False, num_tasks=4, **times) == 3.0
    # rep_grad: one backward, as equal.
    assert ratio(kind="gramian", rep_grad=True, after_update=False, num_tasks=4, **times) == 1.0
    # FAMO: (F + B + F) / (F + B).
    assert math.isclose(
        ratio(kind="loss", rep_grad=False, after_update=True, num_tasks=4, **times), 4.0 / 3.0
    )


def test_method_options_cover_required_options():
    names = ("b", "a")
    assert step_time.method_options("fixed", names) == {"weights": {"a": 1.0, "b": 1.0}}
    for name in weighting.METHODS:  # every method can be built for a benchmark
        weighting.create(name, **step_time.method_options(name, names))


def test_engine_options_pass_only_what_is_given():
    defaults = inspect.signature(train.make_train_step).parameters
    assert step_time.engine_options(None, None) == (
        {},
        {
            "jacobian_strategy": defaults["jacobian_strategy"].default,
            "jacobian_chunk_size": defaults["jacobian_chunk_size"].default,
        },
    )
    given = {"jacobian_strategy": "vmap", "jacobian_chunk_size": 4}
    assert step_time.engine_options("vmap", 4) == (given, given)


def test_cli_checks_arguments():
    with pytest.raises(SystemExit):
        step_time._parse_args(["--workload", "W1", "--method", "mgda", "--methods", "a,b"])
    with pytest.raises(SystemExit):
        step_time._parse_args(["--workload", "W7", "--method", "equal"])


def test_run_one_records_and_table(tmp_path):
    runs = [
        step_time.run_one("W1", method, rep_grad=True, steps=1, warmup=1)
        for method in ("equal", "mgda")
    ]
    for run in runs:
        for field, kind in RUN_FIELDS.items():
            assert isinstance(run[field], kind), field
        assert run["workload"] == "W1" and run["num_tasks"] == 2
        assert len(run["steps_s"]) == len(run["forward_steps_s"]) == len(run["equal_steps_s"]) == 1
        assert run["median_s"] > 0 and run["forward_backward_s"] > 0
        assert run["param_counts"]["total"] == 27_450
        json.dumps(run)  # serialisable as is
    equal, mgda = runs
    assert (equal["kind"], equal["rep_grad"]) == ("loss", False)  # rep_grad ignored
    assert (mgda["kind"], mgda["rep_grad"]) == ("gramian", True)
    assert mgda["options"] == {"normalization": "none"}  # LibMTL's default

    assert equal["equal_steps_s"] == equal["steps_s"]  # its own steps
    assert mgda["equal_median_s"] > 0
    table = step_time.add_ratios(runs + [{"method": "broken", "error": "boom"}])
    assert table[0]["ratio_to_equal"] == 1.0 and table[0]["met"]
    assert table[1]["ratio_to_equal"] == mgda["median_s"] / mgda["equal_median_s"]
    assert table[1]["minimal_work_ratio"] == 1.0  # rep_grad mode
    assert table[1]["target_ratio"] == pytest.approx(step_time.TOLERANCE)
    assert table[2] == {"method": "broken", "error": "boom"}
    markdown = step_time.markdown_table(table)
    rows = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert len(rows) == 4  # header + 3 methods
    assert "failed: boom" in rows[3]


def test_ratios_need_a_successful_run():
    with pytest.raises(ValueError, match="no successful run"):
        step_time.add_ratios([{"method": "equal", "error": "boom"}])


def _fake_run(method, kind, median_s, equal_s, forward_s, chunk=4, cpu="AMD EPYC"):
    return {
        "workload": "W3", "method": method, "kind": kind, "after_update": False,
        "rep_grad": False, "num_tasks": 40, "steps": 1, "warmup": 1,
        "jacobian_strategy": "unrolled", "jacobian_chunk_size": chunk,
        "median_s": median_s, "equal_median_s": equal_s, "forward_s": forward_s,
        "forward_backward_s": 3 * forward_s, "peak_rss_mb": 1.0, "cpu": cpu,
    }  # fmt: skip


def test_merge_runs_keeps_one_equal_and_recomputes_ratios(tmp_path):
    first = step_time.add_ratios(
        [_fake_run("equal", "loss", 2.0, 2.0, 1.0), _fake_run("mgda", "gramian", 40.0, 2.0, 1.0)]
    )
    second = step_time.add_ratios(
        [
            _fake_run("equal", "loss", 3.0, 3.0, 2.0),
            _fake_run("krum", "gramian", 30.0, 3.0, 2.0),
            {"method": "moco", "error": "timed out"},
        ]
    )
    paths = []
    for index, runs in enumerate((first, second)):
        paths.append(tmp_path / f"{index}.json")
        paths[-1].write_text(json.dumps(runs))
    out, table = tmp_path / "merged.json", tmp_path / "merged.md"
    step_time.main(["--merge", *map(str, paths), "--json", str(out), "--markdown", str(table)])
    merged = json.loads(out.read_text())
    assert [r["method"] for r in merged] == ["equal", "mgda", "krum", "moco"]
    assert merged[0]["median_s"] == 2.0  # the first list's equal
    assert merged[2]["ratio_to_equal"] == 10.0  # against its own in-process equal
    # F and F+B: medians over the three successful runs (F = 1, 1, 2; F+B = 3·F).
    expected = step_time.minimal_work_ratio(
        kind="gramian", rep_grad=False, after_update=False, num_tasks=40,
        forward_s=1.0, forward_backward_s=3.0,
    )  # fmt: skip
    assert merged[1]["minimal_work_ratio"] == merged[2]["minimal_work_ratio"] == expected
    assert merged[3] == {"method": "moco", "error": "timed out"}
    assert "| krum |" in table.read_text()

    with pytest.raises(ValueError, match="'mgda' appears in more than one list"):
        step_time.merge_runs([first, first])
    other = [_fake_run("pcgrad", "gramian", 40.0, 2.0, 1.0, chunk=8)]
    with pytest.raises(ValueError, match="method 'pcgrad': settings"):
        step_time.merge_runs([first, other])
    other = [_fake_run("pcgrad", "gramian", 40.0, 2.0, 1.0, cpu="Intel Xeon")]
    with pytest.raises(ValueError, match="method 'pcgrad': measured on 'Intel Xeon'"):
        step_time.merge_runs([first, other])
    # A row from before results recorded the CPU merges, and the header names it.
    older = [_fake_run("pcgrad", "gramian", 40.0, 2.0, 1.0, cpu=None)]
    header = step_time.markdown_table(step_time.merge_runs([first, older])).splitlines()[0]
    assert "(AMD EPYC; CPU not recorded for pcgrad)" in header, header
    with pytest.raises(SystemExit):
        step_time._parse_args(["--merge", "a.json", "--workload", "W1"])
    with pytest.raises(SystemExit):
        step_time._parse_args(["--workload", "W1"])


def test_cpu_is_described_from_cpuinfo():
    cpu = step_time.describe_cpu()
    if Path("/proc/cpuinfo").exists():
        assert re.fullmatch(r".+ \(family .+, model .+, (with|no) AVX-512\)", cpu), cpu
    else:
        assert cpu == "unknown"


def test_failure_reports_the_exception_line():
    tail = [
        "Traceback (most recent call last):",
        '  File "x.py", line 1',
        "ValueError: krum: T=2",
        "--------------------",
        "For simplicity, JAX has removed its internal frames",
    ]
    assert processes.exception_line(tail) == "ValueError: krum: T=2"
    assert processes.exception_line(["killed"]) == "killed"


def test_solver_time_records_and_step_fraction():
    runs = [
        solver_time.time_update(name, 3, 50, steps=2, warmup=1) for name in ("mgda", "graddrop")
    ]
    assert [(r["kind"], r["num_tasks"], r["num_params"]) for r in runs] == [
        ("gramian", 3, 50),
        ("jacobian", 3, 50),
    ]
    assert all(r["median_s"] > 0 and len(r["steps_s"]) == 2 for r in runs)
    step_runs = [
        {"method": "mgda", "num_tasks": 3, "median_s": 4.0},
        {"method": "mgda", "num_tasks": 3, "median_s": 9.0},  # a later file: ignored
        {"method": "graddrop", "error": "boom"},
    ]
    solver_time.add_step_fractions(runs, step_runs)
    assert runs[0]["step_s"] == 4.0
    assert runs[0]["fraction_of_step"] == runs[0]["median_s"] / 4.0
    assert "fraction_of_step" not in runs[1]
    table = solver_time.markdown_table(runs + [{"method": "krum", "num_tasks": 2, "error": "T"}])
    assert len([line for line in table.splitlines() if line.startswith("| ")]) == 4
    assert "%" in table.splitlines()[2] and "failed: T" in table
