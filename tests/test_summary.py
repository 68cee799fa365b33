"""Sweep summaries: aggregation over seeds, Δm% against STL runs, ranks, tables, plots."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mtl_jax import plots, summary

DIRECTIONS = {"a/acc": 1, "b/err": -1}


def _write_run(root, method, seed, metrics, *, tasks="a,b", evals=None, rep_grad=False):
    workdir = root / method / f"seed{seed}"
    workdir.mkdir(parents=True)
    config = {"tasks": tasks, "seed": seed, "weighting": {"name": method, "rep_grad": rep_grad}}
    results = {"config": config, "final": metrics, "evals": evals or []}
    (workdir / "results.json").write_text(json.dumps(results))
    return workdir


def test_table_means_delta_m_and_ranks(tmp_path):
    _write_run(tmp_path, "equal", 0, {"a/acc": 80.0, "b/err": 2.0, "a/loss": 0.1})
    _write_run(tmp_path, "equal", 1, {"a/acc": 84.0, "b/err": 2.0, "a/loss": 0.1})
    _write_run(tmp_path, "mgda", 0, {"a/acc": 90.0, "b/err": 1.0, "a/loss": 0.1})
    _write_run(tmp_path, "mgda", 1, {"a/acc": 90.0, "b/err": 3.0, "a/loss": 0.1})
    runs = summary.load_runs(tmp_path)
    baseline = {"a/acc": 80.0, "b/err": 2.0}
    rows = summary.summarize(runs, DIRECTIONS, baseline=baseline)
    by_label = {row.label: row for row in rows}
    assert by_label["equal"].mean == {"a/acc": 82.0, "b/err": 2.0}
    # Sample std (n − 1): values 80 and 84 → 2√2; 95% t-interval t(1) · s / √2 = 12.706 · 2.
    assert by_label["equal"].std["a/acc"] == pytest.approx(2 * np.sqrt(2))
    assert by_label["equal"].ci95["a/acc"] == pytest.approx(12.706 * 2)
    # Δm% per seed: equal: −(0 + 0)/2·100 = 0 and −(5% + 0)/2 = −2.5 → −1.25 ± 1.25√2.
    assert by_label["equal"].delta_m[:2] == pytest.approx((-1.25, 1.25 * np.sqrt(2)))
    # mgda: seed 0: −(12.5% + 50%)/2 = −31.25; seed 1: −(12.5% − 50%)/2 = +18.75.
    assert by_label["mgda"].delta_m[:2] == pytest.approx((-6.25, 25.0 * np.sqrt(2)))
    # Paired with equal on seeds 0 and 1: a/acc +10 and +6, Δm% −31.25 and +21.25.
    paired = by_label["mgda"].paired
    assert by_label["equal"].paired is None
    assert paired["a/acc"].mean == pytest.approx(8.0) and paired["a/acc"].beyond_noise
    assert (paired["a/acc"].low, paired["a/acc"].high) == pytest.approx((6.0, 10.0))
    assert paired[summary.DELTA_M].mean == pytest.approx(-5.0)
    assert not paired[summary.DELTA_M].beyond_noise
    assert [row.label for row in rows] == ["mgda", "equal"] and rows[0].rank == 1
    # MR: mgda best on acc (90 > 82); tied on err (2.0 each): both get rank 1.5.
    assert by_label["mgda"].mean_rank == pytest.approx(1.25)
    assert by_label["equal"].mean_rank == pytest.approx(1.75)
    markdown = summary.to_markdown(rows, title="t", directions=DIRECTIONS)
    assert "| 1 | mgda | 2 | 90 ± 0 | 2 ± 1.4 | -6.25 ± 35.36 (±3.2e+02) | 1.25 |" in markdown
    assert "| mgda | 2 | +8 [+6, +10] ✓ | +0 [-1, +1] | -5 [-31.2, +21.2] |" in markdown
    csv_text = summary.to_csv(rows)
    header = csv_text.splitlines()[0].split(",")
    assert header[:6] == ["rank", "method", "seeds", "a/acc_mean", "a/acc_std", "a/acc_ci95"]
    assert "delta_m_diff_low" in header


def test_last_evaluations_are_averaged_and_checked(tmp_path):
    evals = [{"step": s, "metrics": {"a/acc": float(s), "b/err": 1.0}} for s in (10, 20, 30)]
    _write_run(tmp_path, "equal", 0, {"a/acc": 30.0, "b/err": 1.0}, evals=evals)
    (run,) = summary.load_runs(tmp_path, last_evals=2)
    assert run.metrics["a/acc"] == 25.0
    with pytest.raises(ValueError, match="last 4 evaluations, the run made 3"):
        summary.load_runs(tmp_path, last_evals=4)


def test_single_task_baseline_and_errors(tmp_path):
    _write_run(tmp_path / "stl", "a", 0, {"a/acc": 70.0, "a/loss": 1.0}, tasks="a")
    _write_run(tmp_path / "stl", "b", 0, {"b/err": 4.0, "b/loss": 1.0}, tasks="b")
    baseline = summary.single_task_baseline(summary.load_runs(tmp_path / "stl"))
    assert baseline == {"a/acc": 70.0, "b/err": 4.0}
    assert summary.stl_baseline_note(baseline) == (
        "\nΔm% baseline: this sweep's single-task runs (`--stl`), mean over seeds: "
        "a/acc 70, b/err 4.\n"
    )
    _write_run(tmp_path / "mtl", "equal", 0, {"a/acc": 1.0}, tasks="a,b")
    with pytest.raises(ValueError, match="lacks metric"):
        summary.summarize(summary.load_runs(tmp_path / "mtl"), DIRECTIONS)
    with pytest.raises(FileNotFoundError, match="no finished run"):
        summary.load_runs(tmp_path / "nothing")


def test_pareto_front():
    points = np.array([[1.0, 1.0], [2.0, 0.5], [0.5, 0.5], [2.0, 1.0]])
    np.testing.assert_array_equal(plots.pareto_front(points), [False, False, False, True])
    np.testing.assert_array_equal(plots.pareto_front(points[:3]), [True, True, False])


def test_plots_are_written(tmp_path):
    workdir = _write_run(tmp_path, "mgda", 0, {"a/acc": 90.0, "b/err": 1.0})
    lines = []
    for step in range(1, 30):
        cos = float(np.cos(step / 5))
        lines.append(
            {
                "step": step,
                "loss": {"a": 1.0 / step, "b": 2.0 / step},
                "weights": {"a": 0.5 + cos / 4, "b": 0.5 - cos / 4},
                "grad_cosine": [[1.0, cos], [cos, 1.0]],
            }
        )
    lines.append({"step": 29, "eval": {"a/acc": 90.0}})
    (workdir / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in lines))
    written = plots.plot_run(workdir, title="mgda")
    assert sorted(p.name for p in written) == [
        "eval_curves.png",
        "grad_cosine.png",
        "loss_curves.png",
        "task_weights.png",
    ]
    assert all(p.stat().st_size > 10_000 for p in written)
    _write_run(tmp_path, "equal", 0, {"a/acc": 80.0, "b/err": 2.0})
    path = plots.plot_pareto(
        summary.load_runs(tmp_path), "a/acc", "b/err", DIRECTIONS, tmp_path / "p.png"
    )
    assert path.stat().st_size > 10_000


def test_evaluation_chosen_on_the_selection_split(tmp_path):
    evals = [
        {"step": 1, "metrics": {"a/f1": 0.1}, "select": {"a/f1": 0.5, "b/f1": 0.5}},
        {"step": 2, "metrics": {"a/f1": 0.2}, "select": {"a/f1": 0.9, "b/f1": 0.6}},
        {"step": 3, "metrics": {"a/f1": 0.9}, "select": {"a/f1": 0.2, "b/f1": 0.2}},
    ]
    _write_run(tmp_path, "equal", 0, {"a/f1": 0.9}, evals=evals)
    (run,) = summary.load_runs(tmp_path, select_by="f1")
    assert run.metrics == {"a/f1": 0.2}  # step 2: the best validation mean, not test's best
    with pytest.raises(ValueError, match="no '<task>/acc' metric"):
        summary.load_runs(tmp_path, select_by="acc")


def test_paired_difference_resolution_and_errors():
    from mtl_jax import statistics

    agree = statistics.paired_difference([1.0, 2.0, 3.0], [0.5, 1.0, 1.5])
    assert agree.pairs == 3 and agree.beyond_noise and agree.mean == pytest.approx(1.0)
    mixed = statistics.paired_difference([1.0, 0.0, 3.0], [0.5, 1.0, 1.5])
    assert not mixed.beyond_noise and mixed.low < 0 < mixed.high
    single = statistics.paired_difference([1.0], [0.0])
    assert single.pairs == 1 and not single.beyond_noise
    with pytest.raises(ValueError, match="equal-length"):
        statistics.paired_difference([1.0, 2.0], [1.0])
    assert statistics.mean_interval([1.0]) is None
    assert statistics.t_critical(2) == pytest.approx(4.303)
    assert statistics.t_critical(200) == pytest.approx(1.96)


def test_a_seed_twice_is_refused(tmp_path):
    _write_run(tmp_path / "x", "equal", 0, {"a/acc": 1.0, "b/err": 1.0})
    _write_run(tmp_path / "y", "equal", 0, {"a/acc": 2.0, "b/err": 1.0})
    with pytest.raises(ValueError, match="several runs of one seed"):
        summary.summarize(summary.load_runs(tmp_path), DIRECTIONS)


def test_run_label_separates_runs_that_train_the_tasks_differently():
    plain = {"weighting": {"name": "equal", "kwargs": {}}, "dataset": {"sampler": "uniform"}}
    assert summary.run_label(plain) == "equal"
    focal = {**plain, "task_options": {"left": {"loss_type": "focal", "focal_gamma": 1.0}}}
    assert summary.run_label(focal) == "equal left.focal_gamma=1.0 left.loss_type=focal"
    sampled = {
        **plain,
        "dataset": {"sampler": "class_balanced", "sampler_task": "left", "augment": "translate"},
    }
    assert summary.run_label(sampled) == "equal sampler=class_balanced(left) augment=translate"
