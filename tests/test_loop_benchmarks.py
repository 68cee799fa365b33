"""`benchmarks.loop_overhead` and `benchmarks.vmapped_seeds` on tiny settings: their
records are complete and their checks hold (a vmapped seed equals its own run)."""

from __future__ import annotations

import json

import pytest

from benchmarks import loop_overhead, vmapped_seeds


def test_loop_overhead_record(tmp_path, tiny_multi_mnist, data_dir):
    out = tmp_path / "loop.json"
    loop_overhead.main(
        [
            "--config",
            "test",
            "--steps",
            "6",
            "--reference-steps",
            "3",
            "--override",
            f"dataset.data_dir={data_dir}",
            "--variants",
            "",
            "pipeline.prefetch_to_device=2",
            "--json",
            str(out),
        ]
    )
    rows = json.loads(out.read_text())
    assert [r["variant"] for r in rows] == ["default", "pipeline.prefetch_to_device=2"]
    for row in rows:
        assert row["steps"] == 6 and len(row["step_times_s"]) == 3
        assert 0 < row["first_step_s"] < row["train_wall_s"]
        expected = row["loop_steady_s"] / (5 * row["step_median_s"])
        assert row["overhead_ratio"] == pytest.approx(expected)


def test_vmapped_seeds_agree_with_their_sequential_runs():
    result = vmapped_seeds.run("W1", "pcgrad", seeds=2, batch_size=16, steps=2, warmup=1)
    assert result["seeds"] == 2 and result["batch_size"] == 16
    assert len(result["vmapped_s"]) == len(result["sequential_s"]) == 2
    # 3 steps from the same states: equal up to float reassociation, and far from the
    # difference between two seeds.
    assert result["max_abs_param_difference"] < 1e-4


def test_seed_batches_differ_by_seed_and_have_the_requested_size():
    import jax.numpy as jnp

    batch = {"image": jnp.arange(10.0)[:, None], "targets": {"a": jnp.arange(10)}}
    first, second = vmapped_seeds.seed_batches(batch, 2, 16)
    assert first["image"].shape == (16, 1)
    assert not jnp.array_equal(first["targets"]["a"], second["targets"]["a"])
    assert jnp.array_equal(first["image"][:, 0], first["targets"]["a"].astype(float))
