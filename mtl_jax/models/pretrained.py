"""torchvision ResNet-18/50 weights (ImageNet) for `mtl_jax.models.ResNet`.

Files. A torchvision `state_dict` (parameter name → array) in one of:

* `.pth` / `.pt`: `torch.save(model.state_dict(), path)`, read with `torch.load(...,
  weights_only=True)`. Only this format needs PyTorch (`pip install 'mtl-jax[torch]'`),
  and it is imported only when such a file is read.
* `.npz`: `numpy.savez`, one array per name.
* `.safetensors`: parsed here with numpy (no `safetensors` package): an 8-byte
  little-endian header length N, an N-byte JSON header `{name: {"dtype", "shape",
  "data_offsets": [begin, end]}}` (and an optional `"__metadata__"`), then the raw
  little-endian data, offsets counted from the end of the header. F32, F16 and BF16
  arrays are read as float32, I64 (`num_batches_tracked`) as int64.

`python -m mtl_jax.models.convert_weights IN.pth OUT.npz` converts a `.pth` file once, so
that training needs no PyTorch.

Mapping. The Flax module tree of `ResNet` mirrors torchvision's, with Flax's automatic
names inside a block (creation order: the block's own convolutions, then the shortcut):

| torchvision | mtl_jax (`params` / `batch_stats`) |
| --- | --- |
| `conv1.weight` [O, I, 7, 7] | `conv1/kernel` [7, 7, I, O] |
| `bn1.{weight, bias}` | `bn1/{scale, bias}` |
| `bn1.{running_mean, running_var}` | `bn1/{mean, var}` (batch_stats) |
| `layer{s}.{b}.conv{k}.weight` | `layers_{s-1}/ResidualBlock_{b}/Conv_{k-1}/kernel` |
| `layer{s}.{b}.bn{k}.*` | `layers_{s-1}/ResidualBlock_{b}/BatchNorm_{k-1}/*` |
| `layer{s}.{b}.downsample.0.weight` | `.../Conv_{n}/kernel` (n = 2 basic, 3 bottleneck) |
| `layer{s}.{b}.downsample.1.*` | `.../BatchNorm_{n}/*` |

Convolution weights go from torch's OIHW to Flax's HWIO. `*.num_batches_tracked` and the
classifier `fc.*` are ignored (mtl_jax's ResNet has no classifier); every other name must
fill exactly one variable and every variable must be filled. The dilated variants (output
stride 8 or 16) have the same parameters, so the same file loads into them.

Example::

    trunk = ResNet(18)
    like = jax.eval_shape(lambda: trunk.init(key, image, train=False))
    variables = load_resnet("resnet18-f37072fd.npz", like=like)
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mtl_jax.models.resnet import DEPTHS, ResNet

# File suffixes `read_state_dict` understands.
TORCH_SUFFIXES = (".pth", ".pt")
SUFFIXES = (*TORCH_SUFFIXES, ".npz", ".safetensors")
# The top-level modules of a four-stage `ResNet`.
RESNET_MODULES = ("bn1", "conv1", "layers_0", "layers_1", "layers_2", "layers_3")

# safetensors dtype -> little-endian numpy dtype as stored (BF16 is converted below).
_SAFETENSORS_READ = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "BF16": "<u2",
    "I64": "<i8",
    "I32": "<i4",
}
_SAFETENSORS_WRITE = {
    np.dtype(np.float64): "F64",
    np.dtype(np.float32): "F32",
    np.dtype(np.float16): "F16",
    np.dtype(np.int64): "I64",
    np.dtype(np.int32): "I32",
}
_IGNORED = re.compile(r"^fc\.|(^|\.)num_batches_tracked$")
_LEAF_NAMES = {
    "params": {"kernel": "weight", "scale": "weight", "bias": "bias"},
    "batch_stats": {"mean": "running_mean", "var": "running_var"},
}


def _float32(array: np.ndarray) -> np.ndarray:
    return array.astype(np.float32) if np.issubdtype(array.dtype, np.floating) else array


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a `.safetensors` file (floats as float32), parsed with numpy.

    Raises:
      ValueError: naming the file (and the tensor), for a malformed file or a dtype other
        than F64, F32, F16, BF16, I64 and I32.
    """
    path = Path(path)
    raw = path.read_bytes()
    if len(raw) < 8:
        raise ValueError(f"{str(path)!r} is not a safetensors file: {len(raw)} bytes")
    size = int(np.frombuffer(raw[:8], "<u8")[0])
    if size > len(raw) - 8:
        raise ValueError(
            f"{str(path)!r} is not a safetensors file: header of {size} bytes in a "
            f"{len(raw)}-byte file"
        )
    try:
        header = json.loads(raw[8 : 8 + size].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{str(path)!r}: unreadable safetensors header: {error}") from error
    data = memoryview(raw)[8 + size :]
    arrays = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype = entry.get("dtype")
        if dtype not in _SAFETENSORS_READ:
            raise ValueError(
                f"{str(path)!r}: tensor {name!r} has dtype {dtype!r}; supported: "
                f"{sorted(_SAFETENSORS_READ)}"
            )
        shape = tuple(int(d) for d in entry["shape"])
        begin, end = (int(o) for o in entry["data_offsets"])
        stored = np.dtype(_SAFETENSORS_READ[dtype])
        if not 0 <= begin <= end <= len(data) or end - begin != stored.itemsize * int(
            np.prod(shape)
        ):
            raise ValueError(
                f"{str(path)!r}: tensor {name!r} of shape {shape} and dtype {dtype} has "
                f"data_offsets [{begin}, {end}] in {len(data)} bytes of data"
            )
        array = np.frombuffer(data[begin:end], stored).reshape(shape)
        if dtype == "BF16":  # the upper half of a float32
            array = (array.astype(np.uint32) << 16).view(np.float32)
        arrays[name] = _float32(array.astype(array.dtype.newbyteorder("=")))
    return arrays


def write_safetensors(arrays: Mapping[str, np.ndarray], path: str | Path) -> None:
    """Writes `arrays` as a `.safetensors` file (F64, F32, F16, I64 or I32 arrays)."""
    header, chunks, offset = {}, [], 0
    for name, array in arrays.items():
        array = np.asarray(array)
        if array.dtype not in _SAFETENSORS_WRITE:
            raise ValueError(f"{name!r}: cannot write dtype {array.dtype} to safetensors")
        chunk = np.ascontiguousarray(array, array.dtype.newbyteorder("<")).tobytes()
        header[name] = {
            "dtype": _SAFETENSORS_WRITE[array.dtype],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(chunk)],
        }
        chunks.append(chunk)
        offset += len(chunk)
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # the format allows padding the header to 8 bytes
    with open(path, "wb") as file:
        file.write(np.uint64(len(encoded)).astype("<u8").tobytes())
        file.write(encoded)
        for chunk in chunks:
            file.write(chunk)


def _read_torch(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            f"reading {str(path)!r} needs PyTorch: pip install 'mtl-jax[torch]', or convert "
            f"it once where torch is installed: python -m mtl_jax.models.convert_weights "
            f"{path} {path.with_suffix('.npz')}"
        ) from error
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises pickle's and its own errors
        raise ValueError(
            f"{str(path)!r} is not a readable state_dict file (torch.load with "
            f"weights_only=True): {error}"
        ) from error
    if not isinstance(state_dict, Mapping):
        raise ValueError(
            f"{str(path)!r} holds a {type(state_dict).__name__}, not a state_dict; save "
            "it with torch.save(model.state_dict(), path)"
        )
    arrays = {}
    for name, tensor in state_dict.items():
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(
                f"{str(path)!r}: entry {name!r} is a {type(tensor).__name__}, not a tensor; "
                "expected a state_dict (torch.save(model.state_dict(), path))"
            )
        tensor = tensor.detach().cpu()
        if tensor.is_floating_point():
            tensor = tensor.float()  # also bfloat16, which numpy lacks
        arrays[name] = np.array(tensor.numpy())
    return arrays


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a state-dict file: `.pth`/`.pt` (needs torch), `.npz` or `.safetensors`.

    Floating-point arrays are returned as float32, integer ones unchanged.

    Raises:
      FileNotFoundError: naming the file.
      ImportError: for a torch file when torch is not installed, naming the file and
        `pip install 'mtl-jax[torch]'`.
      ValueError: for another suffix or an unreadable file, naming the file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"{str(path)!r}: weights files end in one of {list(SUFFIXES)}")
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {str(path)!r}")
    if suffix in TORCH_SUFFIXES:
        return _read_torch(path)
    if suffix == ".safetensors":
        return read_safetensors(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: _float32(archive[name]) for name in archive.files}
    except (OSError, ValueError) as error:
        raise ValueError(f"{str(path)!r} is not a readable .npz file: {error}") from error


def write_state_dict(state_dict: Mapping[str, np.ndarray], path: str | Path) -> None:
    """Writes `state_dict` to `path`, a `.npz` or `.safetensors` file (replacing it)."""
    path = Path(path)
    suffix = path.suffix.lower()
    arrays = {name: np.asarray(array) for name, array in state_dict.items()}
    if suffix == ".safetensors":
        write_safetensors(arrays, path)
    elif suffix == ".npz":
        with open(path, "wb") as file:  # a file object: numpy appends no second suffix
            np.savez(file, **arrays)
    else:
        raise ValueError(f"{str(path)!r}: can write .npz or .safetensors files only")


def state_dict_depth(state_dict: Mapping[str, Any], *, source: str | Path = "") -> int:
    """The depth (18 or 50) of the torchvision ResNet whose `state_dict` this is.

    Read from the blocks per stage and whether blocks have a `conv3` (bottleneck).

    Raises:
      ValueError: naming `source`, when the names are not those of a torchvision
        ResNet-18 or ResNet-50.
    """
    where = f"{str(source)!r}" if source else "the state dict"
    blocks = [set() for _ in range(4)]
    bottleneck = False
    for name in state_dict:
        match = re.match(r"layer([1-4])\.(\d+)\.(\w+)", name)
        if match:
            blocks[int(match[1]) - 1].add(int(match[2]))
            bottleneck |= match[3] == "conv3"
    if "conv1.weight" not in state_dict or not all(blocks):
        shown = sorted(state_dict)[:5]
        raise ValueError(
            f"{where} does not hold torchvision ResNet weights (no 'conv1.weight' and "
            f"'layer1.*' … 'layer4.*' names; first names: {shown})"
        )
    sizes = tuple(len(b) for b in blocks)
    kind = "bottleneck" if bottleneck else "basic"
    for depth, layout in DEPTHS.items():
        if layout == (kind, sizes):
            return depth
    raise ValueError(
        f"{where} holds a ResNet of {kind} blocks with {sizes} blocks per stage; "
        f"supported: {', '.join(f'ResNet-{d} {DEPTHS[d]}' for d in DEPTHS)}"
    )


def resnet_depth(variables: Mapping[str, Any]) -> int | None:
    """The depth of the four-stage `ResNet` whose `{"params", "batch_stats"}` these are,
    or None when they are not a ResNet's (e.g. another trunk, or a cross-stitch network)."""
    params = variables.get("params", {})
    if set(params) != set(RESNET_MODULES):
        return None
    sizes = tuple(
        len([k for k in params[f"layers_{i}"] if k.startswith("ResidualBlock_")]) for i in range(4)
    )
    block = params["layers_0"].get("ResidualBlock_1", {})
    convs = len([k for k in block if k.startswith("Conv_")])
    kind = {2: "basic", 3: "bottleneck"}.get(convs)
    for depth, layout in DEPTHS.items():
        if layout == (kind, sizes):
            return depth
    return None


def _resnet_like(depth: int) -> dict[str, Any]:
    image = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    return jax.eval_shape(
        lambda x: ResNet(depth, output_stride=32).init(jax.random.key(0), x, train=False), image
    )


def _torch_name(path: tuple[str, ...], collection: str, convs: int) -> str | None:
    """The torchvision name of the ResNet variable at `path` in `collection`, or None."""
    *modules, leaf = path
    leaf = _LEAF_NAMES.get(collection, {}).get(leaf)
    if leaf is None:
        return None
    if modules in (["conv1"], ["bn1"]):
        return f"{modules[0]}.{leaf}"
    if len(modules) != 3:
        return None
    stage = re.fullmatch(r"layers_([0-3])", modules[0])
    block = re.fullmatch(r"ResidualBlock_(\d+)", modules[1])
    layer = re.fullmatch(r"(Conv|BatchNorm)_(\d+)", modules[2])
    if not (stage and block and layer):
        return None
    index = int(layer[2])
    if index < convs:
        inner = f"{'conv' if layer[1] == 'Conv' else 'bn'}{index + 1}"
    elif index == convs:
        inner = f"downsample.{0 if layer[1] == 'Conv' else 1}"
    else:
        return None
    return f"layer{int(stage[1]) + 1}.{block[1]}.{inner}.{leaf}"


def resnet_variables(
    state_dict: Mapping[str, np.ndarray],
    depth: int,
    *,
    like: Mapping[str, Any] | None = None,
    source: str | Path = "",
) -> dict[str, Any]:
    """`{"params", "batch_stats"}` of a `ResNet(depth)` from a torchvision `state_dict`.

    Args:
      state_dict: torchvision names → arrays (`read_state_dict`); `fc.*` and
        `*.num_batches_tracked` are ignored.
      depth: 18 or 50.
      like: the variables to fill (arrays or `jax.ShapeDtypeStruct`s of a `ResNet(depth)`
        trunk, any output stride; their dtypes are kept). Default: `ResNet(depth)` of
        width 64.
      source: the file the state dict came from, for the error messages.

    Returns:
      A pytree shaped like `like`, of host numpy arrays.

    Raises:
      ValueError: naming the torchvision name, `source` and both shapes (torch layout),
        for a name that is missing, has no place in the model, or is mis-shaped; or
        naming the variable when `like` is not a ResNet-`depth`'s.
    """
    if depth not in DEPTHS:
        raise ValueError(f"ResNet depth must be one of {sorted(DEPTHS)}, got {depth}")
    where = f"{str(source)!r}" if source else "the state dict"
    like = _resnet_like(depth) if like is None else like
    convs = 2 if DEPTHS[depth][0] == "basic" else 3
    wanted = {name for name in state_dict if not _IGNORED.search(name)}
    used = set()

    def fill(key_path, leaf):
        path = tuple(str(getattr(k, "key", k)) for k in key_path)
        collection, inner = path[0], path[1:]
        name = _torch_name(inner, collection, convs)
        shape = tuple(leaf.shape)
        # Expected shape in torch's layout, so that both shapes in a message compare.
        torch_shape = (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else shape
        if name is None:
            raise ValueError(
                f"variable {'/'.join(path)} {shape} is not one of a ResNet-{depth}'s "
                f"(loading {where})"
            )
        if name not in state_dict:
            raise ValueError(
                f"{where} has no {name!r}: the ResNet-{depth} needs it with shape "
                f"{torch_shape} (for {'/'.join(path)})"
            )
        value = np.asarray(state_dict[name])
        if value.shape != torch_shape:
            raise ValueError(
                f"{name!r} in {where} has shape {value.shape}; the ResNet-{depth} expects "
                f"{torch_shape} (for {'/'.join(path)} {shape})"
            )
        used.add(name)
        if value.ndim == 4:
            value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
        return np.ascontiguousarray(value, dtype=leaf.dtype)

    filled = jax.tree_util.tree_map_with_path(fill, dict(like))
    extra = sorted(wanted - used)
    if extra:
        name = extra[0]
        raise ValueError(
            f"{name!r} {tuple(np.shape(state_dict[name]))} in {where} has no place in a "
            f"ResNet-{depth} (unused names: {extra[:5]}{' …' if len(extra) > 5 else ''})"
        )
    return filled


def load_resnet(
    path: str | Path, depth: int | None = None, *, like: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """`resnet_variables` of the file at `path` (`read_state_dict`).

    `depth` defaults to the file's (`state_dict_depth`); given, the file must match it.
    """
    state_dict = read_state_dict(path)
    found = state_dict_depth(state_dict, source=path)
    if depth is not None and depth != found:
        raise ValueError(f"{str(path)!r} holds ResNet-{found} weights, not ResNet-{depth}")
    return resnet_variables(state_dict, found, like=like, source=path)
