"""The PyTorch workloads and the LibMTL step-time benchmark (benchmarks/libmtl_step_time.py).

The workload tests need torch; the end-to-end run also needs LibMTL's tree in
third_party/LibMTL (`bash benchmarks/get_libmtl.sh`) and is skipped without it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from benchmarks import libmtl_step_time, torch_workloads  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
LIBMTL_ROOT = REPO_ROOT / "third_party" / "LibMTL"
GET_LIBMTL = REPO_ROOT / "benchmarks" / "get_libmtl.sh"
MIRROR = Path(os.environ.get("LIBMTL_GIT", "/work/.mirror/median-research-group+LibMTL/repo"))

# WORKLOADS.md's numbers.
SPEC_COUNTS = {
    "W1": (21_330, 27_450, {"L": 3_060, "R": 3_060}),
    "W2": (
        307_360,
        529_841,
        {"segmentation": 73_792 + 845, "depth": 73_792 + 65, "normal": 73_792 + 195},
    ),
    "W3": (307_360, 312_520, {f"attr{i:02d}": 129 for i in range(40)}),
}


@pytest.mark.parametrize("name", torch_workloads.WORKLOADS)
def test_parameter_counts_are_the_specs(name):
    workload = torch_workloads.build(name)
    torch.manual_seed(0)
    encoder, decoders = workload.encoder_class(), workload.make_decoders()
    counts = torch_workloads.check_parameter_counts(workload, encoder, decoders)
    shared, total, heads = SPEC_COUNTS[name]
    assert (counts["shared"], counts["total"], counts["tasks"]) == (shared, total, heads)
    assert tuple(workload.task_names) == tuple(heads)


def test_wrong_counts_raise():
    workload = torch_workloads.build("W1")
    decoders = workload.make_decoders()
    decoders["R"] = torch.nn.Linear(50, 10)
    with pytest.raises(AssertionError, match="head 'R': 510 != 3,060"):
        torch_workloads.check_parameter_counts(workload, workload.encoder_class(), decoders)


@pytest.mark.parametrize(
    ("name", "rep_shape", "pred_shapes"),
    [
        ("W1", (256, 50), {"L": (256, 10)}),
        ("W2", (16, 128, 16, 16), {"segmentation": (16, 13, 64, 64), "normal": (16, 3, 64, 64)}),
        ("W3", (128, 128), {"attr00": (128, 1)}),
    ],
)
def test_shapes_and_finite_losses(name, rep_shape, pred_shapes):
    workload = torch_workloads.build(name)
    torch.manual_seed(0)
    encoder, decoders = workload.encoder_class(), workload.make_decoders()
    with torch.no_grad():
        rep = encoder(workload.inputs)
        assert tuple(rep.shape) == rep_shape
        for task, shape in pred_shapes.items():
            pred = decoders[task](rep)
            assert tuple(pred.shape) == shape
            assert torch.isfinite(workload.loss_fns[task](pred, workload.targets[task]))


def test_batch_is_deterministic_and_as_specified():
    a, b = torch_workloads.build("W2"), torch_workloads.build("W2")
    assert torch.equal(a.inputs, b.inputs)
    normal = a.targets["normal"]
    torch.testing.assert_close(normal.norm(dim=1), torch.ones(16, 64, 64))
    seg = a.targets["segmentation"]
    assert seg.dtype == torch.int64 and seg.min() >= 0 and seg.max() < 13
    w3 = torch_workloads.build("W3")
    assert w3.targets["attr05"].shape == (128, 1)
    assert set(torch.unique(w3.targets["attr05"]).tolist()) <= {0.0, 1.0}


def test_normal_loss_is_one_minus_mean_cosine():
    gen = torch.Generator().manual_seed(1)
    pred = torch.randn(2, 3, 4, 5, generator=gen)
    target = torch.randn(2, 3, 4, 5, generator=gen)
    target = target / target.norm(dim=1, keepdim=True)
    expected = 1 - torch.nn.functional.cosine_similarity(pred, target, dim=1).mean()
    torch.testing.assert_close(torch_workloads.normal_loss(pred, target), expected)
    # Scale-free in pred; 0 when aligned, 2 when opposite.
    torch.testing.assert_close(
        torch_workloads.normal_loss(3.0 * target, target), torch.tensor(0.0), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(
        torch_workloads.normal_loss(-target, target), torch.tensor(2.0), atol=1e-6, rtol=0
    )


def test_method_table():
    assert libmtl_step_time.METHODS[0] == "EW"
    assert "Aligned_MTL" not in libmtl_step_time.METHODS
    assert libmtl_step_time.MTLJAX_METHOD["Aligned_MTL+eigh"] == "aligned_mtl"
    assert libmtl_step_time.libmtl_class_name("Aligned_MTL+eigh") == "Aligned_MTL"
    assert set(libmtl_step_time.MTLJAX_METHOD) == {*libmtl_step_time.METHODS, "Aligned_MTL"}


def _get_libmtl(dest, env=None):
    return subprocess.run(
        ["bash", str(GET_LIBMTL), str(dest)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )


def test_get_libmtl_refuses_to_clobber(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "file").write_text("x")
    proc = _get_libmtl(other)
    assert proc.returncode == 1 and "refusing to overwrite" in proc.stderr
    (other / ".libmtl_commit").write_text("0123456789abcdef\n")
    proc = _get_libmtl(other)
    assert proc.returncode == 1 and "not 4336804" in proc.stderr
    (other / ".libmtl_commit").write_text("4336804847eaa5e0b924b743d76beec7ac3fdc97\n")
    proc = _get_libmtl(other)
    assert proc.returncode == 0 and "nothing to do" in proc.stdout


@pytest.mark.skipif(not MIRROR.exists(), reason=f"no LibMTL git mirror at {MIRROR}")
def test_get_libmtl_exports_the_pinned_tree(tmp_path):
    dest = tmp_path / "LibMTL"
    proc = _get_libmtl(dest, {"LIBMTL_GIT": str(MIRROR)})
    assert proc.returncode == 0, proc.stderr
    assert (dest / "LibMTL" / "weighting" / "MGDA.py").is_file()
    assert not (dest / ".git").exists()
    assert libmtl_step_time.libmtl_commit(dest).startswith("4336804")


@pytest.mark.skipif(
    not (LIBMTL_ROOT / "LibMTL" / "weighting").is_dir(),
    reason="no LibMTL tree in third_party/LibMTL; run `bash benchmarks/get_libmtl.sh`",
)
def test_all_mode_runs_libmtl_methods(tmp_path):
    out, table = tmp_path / "w1.json", tmp_path / "w1.md"
    command = [
        sys.executable, "-m", "benchmarks.libmtl_step_time", "--workload", "W1",
        "--method", "all", "--methods", "MGDA,Aligned_MTL", "--steps", "1", "--warmup", "1",
        "--device", "cpu", "--libmtl-root", str(LIBMTL_ROOT),
        "--json", str(out), "--markdown", str(table),
    ]  # fmt: skip
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    runs = json.loads(out.read_text())
    assert [r["method"] for r in runs] == ["EW", "MGDA", "Aligned_MTL"]
    for run, mtljax in zip(runs[:2], ("equal", "mgda"), strict=True):
        assert "error" not in run, run
        assert run["mtljax_method"] == mtljax
        assert run["median_s"] > 0 and len(run["steps_s"]) == 1 and len(run["warmup_s"]) == 1
        assert run["param_counts"]["shared"] == 21_330
        assert run["param_counts"]["total"] == 27_450
        assert run["libmtl_commit"].startswith("4336804")
        assert run["device"] == "cpu" and run["threads"] == 2
        assert run["torch_version"] == torch.__version__
    assert runs[1]["weight_args"] == {"mgda_gn": "none"}
    assert runs[0]["ratio_to_ew"] == 1.0
    # Unpatched Aligned_MTL calls torch.symeig, removed in PyTorch 2; the run goes on.
    failed = runs[2]
    assert set(failed) >= {"method", "error", "stderr_tail"}
    if int(torch.__version__.split(".")[0]) >= 2:
        assert "RuntimeError" in failed["error"]
    text = table.read_text()
    assert "| MGDA | mgda |" in text and "| Aligned_MTL | aligned_mtl | failed:" in text
