"""The step-time workloads W1, W2 and W3 of WORKLOADS.md in PyTorch, for the peer libraries.

The same models, batches and losses as `benchmarks.workloads` (mtl_jax's side), written in
PyTorch's NCHW layout with PyTorch's default initialisers, for the LibMTL step-time
benchmark (`benchmarks.libmtl_step_time`). A workload is given as LibMTL's HPS architecture
takes it: a zero-argument `encoder_class` for the shared encoder and a `torch.nn.ModuleDict`
of decoders keyed by task name. The parameter counts are the check that a model is the
spec's (`check_parameter_counts`; `build` calls it):

* W1 "multimnist-lenet": LeNet trunk, heads Linear(50→50) → ReLU → Linear(50→10), mean
  cross-entropy; shared 21,330, 3,060 per head, total 27,450. Adam lr 1e-3.
* W2 "dense3-resnet": SmallResNet trunk, heads Conv3×3(128→64) → ReLU → Conv1×1(64→C) →
  bilinear 16×16 → 64×64 for segmentation (C 13, mean cross-entropy), depth (C 1, mean
  |pred − target|) and normal (C 3, 1 − mean cosine); shared 307,360, total 529,841.
  Adam lr 1e-4.
* W3 "celeba40-small": SmallResNet + global average pool, 40 heads Linear(128→1), mean
  binary cross-entropy with logits; shared 307,360, 129 per head, total 312,520. Adam lr
  1e-3.

The batch is drawn once, on the CPU, from `torch.Generator().manual_seed(seed)`, in this
order: the input, then each task's targets in task order (W3: one [B, 40] label matrix
whose column i is task i's target, kept as [B, 1]). Tasks are in the spec's order, which
is also LibMTL's (its NYUv2 example lists segmentation, depth, normal); mtl_jax sorts
task names, which only matters to the iterative solvers' data dependence.

Example::

    workload = build("W1")
    encoder = workload.encoder_class()
    decoders = workload.make_decoders()
    counts = check_parameter_counts(workload, encoder, decoders)
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.processes import count_mismatches

WORKLOADS = ("W1", "W2", "W3")

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class LeNet(nn.Module):
    """W1's shared encoder: [B, 1, 28, 28] → [B, 50]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.fc = nn.Linear(320, 50)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2(x), 2))
        return F.relu(self.fc(torch.flatten(x, 1)))


class BasicBlock(nn.Module):
    """torchvision-style residual block; a 1×1 conv + BN shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """W2/W3's shared encoder: [B, 3, 64, 64] → [B, 128, 16, 16], or [B, 128] with `pool`."""

    def __init__(self, *, pool: bool = False) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 32, 3, stride=1, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU()
        )
        self.stages = nn.Sequential(
            BasicBlock(32, 32, 1), BasicBlock(32, 64, 2), BasicBlock(64, 128, 2)
        )
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return x.mean(dim=(2, 3)) if self.pool else x


class DenseHead(nn.Module):
    """Conv3×3(128→64) → ReLU → Conv1×1(64→C) → bilinear resize (half-pixel centres)."""

    def __init__(self, channels: int, size: tuple[int, int]) -> None:
        super().__init__()
        self.hidden = nn.Conv2d(128, 64, 3, padding=1)
        self.out = nn.Conv2d(64, channels, 1)
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.out(F.relu(self.hidden(x)))
        return F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)


def mlp_head() -> nn.Module:
    """W1's head: Linear(50→50) → ReLU → Linear(50→10)."""
    return nn.Sequential(nn.Linear(50, 50), nn.ReLU(), nn.Linear(50, 10))


def cross_entropy_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean softmax cross-entropy: logits [B, C] or [B, C, H, W], int64 labels [B(, H, W)]."""
    return F.cross_entropy(pred, target)


def l1_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean |pred − target| over every element (`nn.L1Loss()`)."""
    return F.l1_loss(pred, target)


def normal_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 − mean over pixels of the cosine between `pred` and the unit `target` [B, 3, H, W].

    `pred` is normalised over channels with no epsilon; this is LibMTL's NYUv2
    `NormalLoss` with an all-ones mask.
    """
    unit = pred / torch.linalg.vector_norm(pred, ord=2, dim=1, keepdim=True)
    return 1 - (unit * target).sum(dim=1).mean()


def bce_with_logits_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy with logits (`nn.BCEWithLogitsLoss()`)."""
    return F.binary_cross_entropy_with_logits(pred, target)


@dataclasses.dataclass(frozen=True)
class TorchWorkload:
    """One workload, as LibMTL's HPS architecture takes it.

    Attributes:
      name: `"W1"`, `"W2"` or `"W3"`.
      title: the spec's name, e.g. `"multimnist-lenet"`.
      task_names: the tasks, in order (the loss vector's order).
      encoder_class: builds the shared encoder, with no arguments.
      make_decoders: builds the heads, a `ModuleDict` keyed by task name.
      loss_fns: `{task: fn(pred, target) -> scalar}`.
      inputs: the batch's input, NCHW float32, on the CPU.
      targets: `{task: target}`, on the CPU.
      learning_rate: Adam's learning rate.
      expected_counts: the spec's `{"shared": n, "total": n, "tasks": {task: n}}`.
    """

    name: str
    title: str
    task_names: tuple[str, ...]
    encoder_class: Callable[[], nn.Module]
    make_decoders: Callable[[], nn.ModuleDict]
    loss_fns: Mapping[str, LossFn]
    inputs: torch.Tensor
    targets: Mapping[str, torch.Tensor]
    learning_rate: float
    expected_counts: dict[str, Any]


def _w1(gen: torch.Generator) -> TorchWorkload:
    batch_size, num_classes = 256, 10
    names = ("L", "R")
    inputs = torch.randn(batch_size, 1, 28, 28, generator=gen)
    targets = {n: torch.randint(0, num_classes, (batch_size,), generator=gen) for n in names}
    return TorchWorkload(
        name="W1",
        title="multimnist-lenet",
        task_names=names,
        encoder_class=LeNet,
        make_decoders=lambda: nn.ModuleDict({n: mlp_head() for n in names}),
        loss_fns=dict.fromkeys(names, cross_entropy_loss),
        inputs=inputs,
        targets=targets,
        learning_rate=1e-3,
        expected_counts={"shared": 21_330, "total": 27_450, "tasks": dict.fromkeys(names, 3_060)},
    )


def _w2(gen: torch.Generator) -> TorchWorkload:
    batch_size, size, num_classes = 16, 64, 13
    names = ("segmentation", "depth", "normal")
    channels = {"segmentation": num_classes, "depth": 1, "normal": 3}
    inputs = torch.randn(batch_size, 3, size, size, generator=gen)
    normal = torch.randn(batch_size, 3, size, size, generator=gen)
    targets = {
        "segmentation": torch.randint(0, num_classes, (batch_size, size, size), generator=gen),
        "depth": torch.rand(batch_size, 1, size, size, generator=gen),
        "normal": normal / torch.linalg.vector_norm(normal, dim=1, keepdim=True),
    }
    head_hidden = 3 * 3 * 128 * 64 + 64  # Conv3×3(128→64) with bias
    return TorchWorkload(
        name="W2",
        title="dense3-resnet",
        task_names=names,
        encoder_class=SmallResNet,
        make_decoders=lambda: nn.ModuleDict(
            {n: DenseHead(channels[n], (size, size)) for n in names}
        ),
        loss_fns={
            "segmentation": cross_entropy_loss,
            "depth": l1_loss,
            "normal": normal_loss,
        },
        inputs=inputs,
        targets=targets,
        learning_rate=1e-4,
        expected_counts={
            "shared": 307_360,
            "total": 529_841,
            "tasks": {n: head_hidden + 64 * c + c for n, c in channels.items()},
        },
    )


def _w3(gen: torch.Generator) -> TorchWorkload:
    batch_size, num_tasks = 128, 40
    names = tuple(f"attr{i:02d}" for i in range(num_tasks))
    inputs = torch.randn(batch_size, 3, 64, 64, generator=gen)
    labels = torch.randint(0, 2, (batch_size, num_tasks), generator=gen).float()
    return TorchWorkload(
        name="W3",
        title="celeba40-small",
        task_names=names,
        encoder_class=functools.partial(SmallResNet, pool=True),
        make_decoders=lambda: nn.ModuleDict({n: nn.Linear(128, 1) for n in names}),
        loss_fns=dict.fromkeys(names, bce_with_logits_loss),
        inputs=inputs,
        targets={n: labels[:, i : i + 1] for i, n in enumerate(names)},
        learning_rate=1e-3,
        expected_counts={"shared": 307_360, "total": 312_520, "tasks": dict.fromkeys(names, 129)},
    )


_BUILDERS: dict[str, Callable[[torch.Generator], TorchWorkload]] = {
    "W1": _w1,
    "W2": _w2,
    "W3": _w3,
}


def build(name: str, *, seed: int = 0) -> TorchWorkload:
    """Workload `name` with its batch drawn from `torch.Generator().manual_seed(seed)`.

    The model's parameter counts are checked (on a throw-away build, from the global
    torch RNG; build the model after seeding it).

    Raises:
      ValueError: for an unknown workload name.
      AssertionError: if the model's parameter counts are not the spec's.
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown workload {name!r}; valid workloads: {list(WORKLOADS)}")
    workload = _BUILDERS[name](torch.Generator().manual_seed(seed))
    with torch.device("meta"):  # shapes only: no memory, no draws from the RNG
        check_parameter_counts(workload, workload.encoder_class(), workload.make_decoders())
    return workload


def parameter_counts(encoder: nn.Module, decoders: Mapping[str, nn.Module]) -> dict[str, Any]:
    """`{"shared", "total", "tasks": {task: n}}`: trainable parameters of encoder and heads."""

    def count(module: nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    tasks = {name: count(head) for name, head in decoders.items()}
    shared = count(encoder)
    return {"shared": shared, "total": shared + sum(tasks.values()), "tasks": tasks}


def check_parameter_counts(
    workload: TorchWorkload, encoder: nn.Module, decoders: Mapping[str, nn.Module]
) -> dict[str, Any]:
    """Returns the counts of `encoder` and `decoders`, or raises if they are not the spec's.

    Raises:
      AssertionError: listing every part (shared, total, each head) whose count differs.
    """
    counts = parameter_counts(encoder, decoders)
    expected = workload.expected_counts
    wrong = count_mismatches(counts, expected)
    if wrong:
        raise AssertionError(
            f"workload {workload.name} ({workload.title}): PyTorch parameter counts differ "
            f"from WORKLOADS.md (built != spec): {'; '.join(wrong)}"
        )
    return counts
