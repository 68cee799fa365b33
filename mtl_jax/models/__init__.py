"""Models: trunks, heads, multi-task architectures and `build_model`.

`build_model(trunk, tasks, architecture=...)` composes a trunk named in `TRUNKS` with one
head per task, in one of the architectures of `ARCHITECTURES`:

| architecture | trunks | shared | per task (`params["tasks"][t]`) |
| --- | --- | --- | --- |
| `hps` | all | the trunk | a head (below) |
| `mtan` | segnet, resnet18, resnet50 | trunk + attention blocks | attention modules + head |
| `cross_stitch` | resnet18, resnet50 | columns' stages 1–3, units 1–2 | unit-3 row, stage 4, head |
| `mmoe` | all (as experts) | the experts | gate + tower (= head) |
| `cgc` | all (as experts) | the shared experts | own experts + gate + tower |
| `ple` | lenet, resnet18/50 (stages) | shared experts, all levels | own experts + gates, tower |
| `dselect_k` | all (as experts) | the experts | DSelect-k gate + tower |
| `ltb` | lenet, resnet18/50 (stages) | columns' blocks 0…L−2 + α | last α row, last block, head |

CGC / PLE / DSelect-k: `mtl_jax.models.experts`; Learning to Branch (`ltb`):
`mtl_jax.models.branching`; PLE and LTB cut their trunk with `mtl_jax.models.stages`. LTB
samples its branching in training from the `rng` of the model's apply calls.

Heads by trunk: SegNet → `SegNetHead` (dense tasks only); dilated ResNets → `DeepLabHead`
for dense tasks, a pooled `MLPHead` for vector tasks; the other trunks → `DenseHead` /
`MLPHead`.

Other architectures and dtypes are options, e.g.
`build_model("segnet", tasks, architecture="mtan", dtype=jnp.bfloat16)`.

Examples:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from mtl_jax.models import build_model
    >>> from mtl_jax.tasks import Boundary, Classification
    >>> tasks = {"left": Classification("left"), "boundary": Boundary("boundary")}
    >>> model = build_model("lenet", tasks)
    >>> images = jnp.zeros((2, 28, 28, 1))
    >>> variables = model.init(jax.random.PRNGKey(0), images)
    >>> sorted(variables["params"]), sorted(variables["params"]["tasks"])
    (['shared', 'tasks'], ['boundary', 'left'])
    >>> sum(leaf.size for leaf in jax.tree.leaves(variables["params"]["shared"]))
    21330
    >>> preds, _ = model.apply(variables, images)
    >>> {name: pred.shape for name, pred in preds.items()}
    {'boundary': (2, 28, 28, 1), 'left': (2, 10)}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from mtl_jax import import_path
from mtl_jax.errors import OptionError
from mtl_jax.models.branching import BranchingHead, BranchingTrunk
from mtl_jax.models.cross_stitch import CrossStitchHead, CrossStitchTrunk
from mtl_jax.models.experts import PLE_TIED, DSelectKHead, PLEHead
from mtl_jax.models.heads import ASPP, DeepLabHead, DenseHead, MLPHead
from mtl_jax.models.mmoe import MMoEHead, MMoETrunk
from mtl_jax.models.multitask import MultiTaskModel
from mtl_jax.models.resnet import MTAN_TIED as RESNET_MTAN_TIED
from mtl_jax.models.resnet import TRUNK_DEPTHS, ResNet, ResNetEncoder, ResNetMTANHead
from mtl_jax.models.segnet import FILTERS as SEGNET_FILTERS
from mtl_jax.models.segnet import MTAN_TIED as SEGNET_MTAN_TIED
from mtl_jax.models.segnet import SegNet, SegNetHead, SegNetMTANHead
from mtl_jax.models.stages import NUM_STAGES, STAGED_TRUNKS, group_stages
from mtl_jax.models.trunks import CelebACNN, LeNet, SeedCNN, SmallResNet
from mtl_jax.tasks import Task

__all__ = [
    "ARCHITECTURES",
    "ASPP",
    "TRUNKS",
    "BranchingHead",
    "BranchingTrunk",
    "CelebACNN",
    "CrossStitchHead",
    "CrossStitchTrunk",
    "DSelectKHead",
    "DeepLabHead",
    "DenseHead",
    "LeNet",
    "MLPHead",
    "MMoEHead",
    "MMoETrunk",
    "MultiTaskModel",
    "PLEHead",
    "ResNet",
    "ResNetEncoder",
    "ResNetMTANHead",
    "SeedCNN",
    "SegNet",
    "SegNetHead",
    "SegNetMTANHead",
    "SmallResNet",
    "build_model",
]


def _scaled(width: int, multiplier: float) -> int:
    return max(1, round(width * multiplier))


def _fixed(cls, **fields) -> Callable[..., nn.Module]:
    """Constructor of a trunk with a fixed size (no width multiplier)."""

    def make(*, dtype, width_multiplier: float = 1.0, **extra):
        if width_multiplier != 1.0:
            raise ValueError(f"{cls.__name__} has a fixed size; width_multiplier must be 1.0")
        return cls(**fields, **extra, dtype=dtype)

    return make


def _segnet(*, dtype, width_multiplier: float = 1.0, **extra) -> nn.Module:
    filters = tuple(_scaled(f, width_multiplier) for f in SEGNET_FILTERS)
    return SegNet(filters=filters, **extra, dtype=dtype)


def _resnet(depth: int, cls: type[ResNet] = ResNet) -> Callable[..., nn.Module]:
    def make(*, dtype, width_multiplier: float = 1.0, **extra):
        return cls(depth, width=_scaled(64, width_multiplier), **extra, dtype=dtype)

    return make


def _celeba_cnn(*, dtype, width_multiplier: float = 1.0, **extra) -> nn.Module:
    channels = tuple(_scaled(c, width_multiplier) for c in CelebACNN.channels)
    hidden = _scaled(CelebACNN.hidden, width_multiplier)
    return CelebACNN(channels=channels, hidden=hidden, **extra, dtype=dtype)


# Trunk name (as written in configs) -> constructor(dtype=..., width_multiplier=...).
TRUNKS: dict[str, Callable[..., nn.Module]] = {
    "lenet": _fixed(LeNet),
    "seed_cnn": _fixed(SeedCNN),
    "small_resnet": _fixed(SmallResNet),
    "small_resnet_pooled": _fixed(SmallResNet, global_pool=True),
    "celeba_cnn": _celeba_cnn,
    "segnet": _segnet,
    "resnet18": _resnet(18),
    "resnet50": _resnet(50),
    "resnet18_encoder": _resnet(18, ResNetEncoder),
    "resnet50_encoder": _resnet(50, ResNetEncoder),
}


def _head(trunk: str, name: str, task: Task, options: Mapping[str, Any]) -> nn.Module:
    """The hard-parameter-sharing head of `task` on trunk `trunk`."""
    dtype = options["dtype"]
    if trunk == "segnet":
        if not task.dense:
            raise ValueError(f"task {name!r}: SegNet only has heads for dense tasks")
        return SegNetHead(task.output_shape, dtype=dtype)
    if trunk in TRUNK_DEPTHS:
        if task.dense:
            return DeepLabHead(
                task.output_shape,
                features=_scaled(256, options["width_multiplier"]),
                dropout_rate=options["aspp_dropout"],
                dtype=dtype,
            )
        return MLPHead(
            tuple(options["head_hidden"]), task.output_shape[0], global_pool=True, dtype=dtype
        )
    if task.dense:
        return DenseHead(options["dense_head_hidden"], task.output_shape, dtype=dtype)
    return MLPHead(tuple(options["head_hidden"]), task.output_shape[0], dtype=dtype)


def _trunk(trunk: str, options: Mapping[str, Any], **extra) -> nn.Module:
    return TRUNKS[trunk](
        dtype=options["dtype"], width_multiplier=options["width_multiplier"], **extra
    )


def _hps(trunk: str, tasks: Mapping[str, Task], options) -> MultiTaskModel:
    heads = {name: _head(trunk, name, task, options) for name, task in tasks.items()}
    return MultiTaskModel(trunk=_trunk(trunk, options), heads=heads)


def _mtan(trunk: str, tasks: Mapping[str, Task], options) -> MultiTaskModel:
    dtype = options["dtype"]
    if trunk == "segnet":
        for name, task in tasks.items():
            if not task.dense:
                raise ValueError(f"task {name!r}: SegNet-MTAN only has heads for dense tasks")
        filters = tuple(_scaled(f, options["width_multiplier"]) for f in SEGNET_FILTERS)
        heads = {
            name: SegNetMTANHead(task.output_shape, filters, dtype=dtype)
            for name, task in tasks.items()
        }
        return MultiTaskModel(
            trunk=_trunk(trunk, options, all_features=True),
            heads=heads,
            tied=(SEGNET_MTAN_TIED,),
        )
    depth = TRUNK_DEPTHS[trunk]
    width = _scaled(64, options["width_multiplier"])
    heads = {
        name: ResNetMTANHead(_head(trunk, name, task, options), depth, width, dtype=dtype)
        for name, task in tasks.items()
    }
    return MultiTaskModel(
        trunk=_trunk(trunk, options, stage_features=True), heads=heads, tied=(RESNET_MTAN_TIED,)
    )


def _cross_stitch(trunk: str, tasks: Mapping[str, Task], options) -> MultiTaskModel:
    depth = TRUNK_DEPTHS[trunk]
    width = _scaled(64, options["width_multiplier"])
    names = sorted(tasks)
    common = {"num_tasks": len(names), "depth": depth, "width": width, "dtype": options["dtype"]}
    heads = {
        name: CrossStitchHead(_head(trunk, name, tasks[name], options), task_index=index, **common)
        for index, name in enumerate(names)
    }
    return MultiTaskModel(trunk=CrossStitchTrunk(**common), heads=heads)


def _at_least(options, key: str, minimum: int) -> int:
    value = options[key]
    if not isinstance(value, int) or value < minimum:
        raise OptionError(key, f"{key} must be an integer >= {minimum}, got {value!r}")
    return value


def _mmoe(trunk: str, tasks: Mapping[str, Task], options) -> MultiTaskModel:
    count, dtype = _at_least(options, "num_experts", 1), options["dtype"]
    heads = {
        name: MMoEHead(_head(trunk, name, task, options), count, dtype=dtype)
        for name, task in tasks.items()
    }
    return MultiTaskModel(trunk=MMoETrunk(_trunk(trunk, options), count, dtype), heads=heads)


def _expert_mixture(trunk, tasks, options, levels: tuple[nn.Module, ...]) -> MultiTaskModel:
    """CGC (one level) or PLE: level 0's shared experts are the trunk (see `experts`)."""
    shared = _at_least(options, "num_shared_experts", 1)
    own = _at_least(options, "num_task_experts", 1)
    dtype = options["dtype"]
    heads = {
        name: PLEHead(_head(trunk, name, task, options), levels, shared, own, dtype=dtype)
        for name, task in tasks.items()
    }
    return MultiTaskModel(
        trunk=MMoETrunk(levels[0], shared, dtype, raw_input=True),
        heads=heads,
        tied=(PLE_TIED,) if len(levels) > 1 else (),
    )


def _cgc(trunk: str, tasks: Mapping[str, Task], options) -> MultiTaskModel:
    return _expert_mixture(trunk, tasks, options, (_trunk(trunk, options),))


def _levels(trunk: str, options, key: str, minimum: int) -> tuple[nn.Module, ...]:
    """The trunk's stages grouped into `options[key]` levels (0: one per stage)."""
    _trunk(trunk, options)  # checks the width multiplier of fixed-size trunks
    count = NUM_STAGES[trunk]
    levels = options[key] or count
    if not isinstance(levels, int) or not minimum <= levels <= count:
        raise OptionError(
            key,
            f"{key} must be 0 (one level per stage) or in [{minimum}, {count}] "
            f"(trunk {trunk!r} has {count} stages), got {options[key]!r}",
        )
    width = _scaled(64, options["width_multiplier"])
    return group_stages(trunk, levels, width=width, dtype=options["dtype"])


def _ple(trunk: str, tasks: Mapping[str, Task], options) -> MultiTaskModel:
    return _expert_mixture(trunk, tasks, options, _levels(trunk, options, "ple_levels", 1))


def _dselect_k(trunk: str, tasks: Mapping[str, Task], options) -> MultiTaskModel:
    count, dtype = _at_least(options, "num_experts", 2), options["dtype"]
    k = options["dselect_k"]
    if not isinstance(k, int) or not 1 <= k <= count:
        raise OptionError(
            "dselect_k", f"dselect_k must be an integer in [1, num_experts={count}], got {k!r}"
        )
    gamma = options["dselect_gamma"]
    if not gamma > 0:
        raise OptionError("dselect_gamma", f"dselect_gamma must be > 0, got {gamma}")
    heads = {
        name: DSelectKHead(_head(trunk, name, task, options), count, k, gamma, dtype=dtype)
        for name, task in tasks.items()
    }
    return MultiTaskModel(trunk=MMoETrunk(_trunk(trunk, options), count, dtype), heads=heads)


def _ltb(trunk: str, tasks: Mapping[str, Task], options) -> MultiTaskModel:
    blocks = _levels(trunk, options, "ltb_levels", 2)
    temperature = options["ltb_temperature"]
    if not temperature > 0:
        raise OptionError("ltb_temperature", f"ltb_temperature must be > 0, got {temperature}")
    heads = {
        name: BranchingHead(_head(trunk, name, task, options), blocks[-1], temperature)
        for name, task in tasks.items()
    }
    return MultiTaskModel(
        trunk=BranchingTrunk(blocks[:-1], len(tasks), temperature, options["dtype"]), heads=heads
    )


# Architecture name -> (builder, trunks it supports or None for all).
ARCHITECTURES: dict[str, tuple[Callable[..., MultiTaskModel], tuple[str, ...] | None]] = {
    "hps": (_hps, None),
    "mtan": (_mtan, ("segnet", "resnet18", "resnet50")),
    "cross_stitch": (_cross_stitch, ("resnet18", "resnet50")),
    "mmoe": (_mmoe, None),
    "cgc": (_cgc, None),
    "ple": (_ple, STAGED_TRUNKS),
    "dselect_k": (_dselect_k, None),
    "ltb": (_ltb, STAGED_TRUNKS),
}

# Computation dtypes. float16 is not offered: without loss scaling (which mtl_jax does not
# do) its gradients underflow.
DTYPES = ("float32", "bfloat16")


def build_model(
    trunk: str,
    tasks: Mapping[str, Task],
    *,
    architecture: str = "hps",
    head_hidden: Sequence[int] = (50,),
    dense_head_hidden: int = 64,
    dtype: Any = jnp.float32,
    width_multiplier: float = 1.0,
    num_experts: int = 3,
    aspp_dropout: float = 0.5,
    num_shared_experts: int = 1,
    num_task_experts: int = 1,
    ple_levels: int = 0,
    dselect_k: int = 2,
    dselect_gamma: float = 1.0,
    ltb_levels: int = 0,
    ltb_temperature: float = 1.0,
) -> MultiTaskModel:
    """Builds a multi-task model: trunk `trunk` in architecture `architecture`.

    Args:
      trunk: a key of `TRUNKS` ("lenet", "seed_cnn", "small_resnet",
        "small_resnet_pooled", "celeba_cnn", "segnet", "resnet18", "resnet50" (dilated
        to output stride 8), "resnet18_encoder", "resnet50_encoder" (`ResNetEncoder`:
        undilated, pooled, a 512-wide hidden layer; LibMTL's Office encoder)).
      tasks: task records keyed by name; each gets a head (see the module docstring).
      architecture: a key of `ARCHITECTURES`: "hps" (hard parameter sharing), "mtan",
        "cross_stitch", "mmoe", "cgc", "ple", "dselect_k" or "ltb" (Learning to Branch).
      head_hidden: hidden widths of `MLPHead`s (vector tasks).
      dense_head_hidden: hidden width of `DenseHead`s (dense tasks on small trunks).
      dtype: computation dtype ("float32" or "bfloat16", or the jnp type);
        parameters and BatchNorm statistics stay float32 and predictions are float32.
      width_multiplier: scales every width of segnet / resnet / celeba_cnn models
        (1.0 = the published models; smaller values only make tests fast).
      num_experts: experts of "mmoe" and "dselect_k" (at least 2 for "dselect_k").
      aspp_dropout: dropout rate of the DeepLab heads on ResNet trunks (0.5 in LibMTL);
        training with it > 0 needs `rng=` in the model's apply calls.
      num_shared_experts: shared experts (per level) of "cgc" / "ple" (LibMTL's
        `num_experts[0]`; its tests use 1).
      num_task_experts: every task's own experts (per level) of "cgc" / "ple" (LibMTL's
        `num_experts[1:]`, here one count for all tasks).
      ple_levels: extraction levels of "ple": the trunk's stages (`models.stages`) are
        grouped into this many consecutive blocks; 0 = one level per stage (LibMTL: the
        ResNet stem and its four stages, 5 levels).
      dselect_k: k of "dselect_k", the most experts a task's gate selects (LibMTL's
        `num_nonzeros`, default 2).
      dselect_gamma: γ of DSelect-k's smooth-step (LibMTL's `kgamma`, default 1.0).
      ltb_levels: blocks of each "ltb" column (branching points + 1), grouped from the
        trunk's stages like `ple_levels`; 0 = one per stage (LibMTL's 5 on ResNets).
      ltb_temperature: τ of the Gumbel-softmax gradient of "ltb" (fixed; LibMTL anneals
        it per epoch, see `models.branching`). Training "ltb" needs `rng=`.

    Raises:
      OptionError (a ValueError naming the argument): for an unknown trunk, architecture
        or dtype (listing the valid ones), an architecture that does not support the
        trunk, or an out-of-range width, dropout or architecture option.
      ValueError: for no task, or a task the heads cannot serve.
    """
    if trunk not in TRUNKS:
        raise OptionError("trunk", import_path.unknown_name(trunk, TRUNKS, what="trunk"))
    if architecture not in ARCHITECTURES:
        raise OptionError(
            "architecture",
            f"unknown architecture {architecture!r}; valid architectures: {sorted(ARCHITECTURES)}",
        )
    builder, supported = ARCHITECTURES[architecture]
    if supported is not None and trunk not in supported:
        raise OptionError(
            "architecture",
            f"architecture {architecture!r} does not support trunk {trunk!r}; "
            f"supported trunks: {list(supported)}",
        )
    try:
        dtype = jnp.dtype(dtype)
    except TypeError:
        dtype = None
    if dtype is None or dtype.name not in DTYPES:
        raise OptionError("dtype", f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    if not width_multiplier > 0:
        raise OptionError(
            "width_multiplier", f"width_multiplier must be > 0, got {width_multiplier}"
        )
    if not 0.0 <= aspp_dropout < 1.0:
        raise OptionError("aspp_dropout", f"aspp_dropout must be in [0, 1), got {aspp_dropout}")
    if not tasks:
        raise ValueError("build_model needs at least one task")
    options = {
        "head_hidden": head_hidden,
        "dense_head_hidden": dense_head_hidden,
        "dtype": dtype.type,
        "width_multiplier": width_multiplier,
        "num_experts": num_experts,
        "aspp_dropout": aspp_dropout,
        "num_shared_experts": num_shared_experts,
        "num_task_experts": num_task_experts,
        "ple_levels": ple_levels,
        "dselect_k": dselect_k,
        "dselect_gamma": dselect_gamma,
        "ltb_levels": ltb_levels,
        "ltb_temperature": ltb_temperature,
    }
    return builder(trunk, tasks, options)
