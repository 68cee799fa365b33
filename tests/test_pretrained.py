"""torchvision ResNet weights: reading the file formats, the mapping into `ResNet`, the
converter and `init_from`.

The equality tests build torchvision's ResNet (torchvision itself when it imports, else
a module written here with its structure and attribute names, so the same state-dict
names), save its state dict and compare its layer4 features with mtl_jax's on one input.
"""

from __future__ import annotations

import dataclasses
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax.experiment.warm_start import warm_start
from mtl_jax.models import ResNet, build_model, convert_weights, pretrained
from mtl_jax.tasks import Classification
from mtl_jax.train import TrainState

# Blocks per stage and convolutions per block (without the shortcut) of each depth.
LAYOUT = {18: ((2, 2, 2, 2), 2, 1), 50: ((3, 4, 6, 3), 3, 4)}
TOLERANCE = 1e-4


# ----------------------------------------------------------------------------- torch side


def _torch_resnet(depth: int):
    """torchvision's `resnet{depth}()`, or a module with the same structure and names."""
    torch = pytest.importorskip("torch")
    try:
        import torchvision

        return getattr(torchvision.models, f"resnet{depth}")()
    except (ImportError, RuntimeError, OSError, AttributeError):
        pass
    nn = torch.nn

    class BasicBlock(nn.Module):
        expansion = 1

        def __init__(self, inplanes, planes, stride=1, downsample=None):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.downsample = downsample
            self.stride = stride

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            shortcut = x if self.downsample is None else self.downsample(x)
            return self.relu(out + shortcut)

    class Bottleneck(nn.Module):
        expansion = 4

        def __init__(self, inplanes, planes, stride=1, downsample=None):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * 4)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = downsample
            self.stride = stride

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            shortcut = x if self.downsample is None else self.downsample(x)
            return self.relu(out + shortcut)

    class TorchResNet(nn.Module):
        def __init__(self, block, sizes, num_classes=1000):
            super().__init__()
            self.inplanes = 64
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            self.layer1 = self._make_layer(block, 64, sizes[0])
            self.layer2 = self._make_layer(block, 128, sizes[1], stride=2)
            self.layer3 = self._make_layer(block, 256, sizes[2], stride=2)
            self.layer4 = self._make_layer(block, 512, sizes[3], stride=2)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(512 * block.expansion, num_classes)

        def _make_layer(self, block, planes, blocks, stride=1):
            downsample = None
            if stride != 1 or self.inplanes != planes * block.expansion:
                downsample = nn.Sequential(
                    nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                    nn.BatchNorm2d(planes * block.expansion),
                )
            layers = [block(self.inplanes, planes, stride, downsample)]
            self.inplanes = planes * block.expansion
            layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
            return nn.Sequential(*layers)

        def forward(self, x):
            x = torch.flatten(self.avgpool(_layer4(self, x)), 1)
            return self.fc(x)

    block = BasicBlock if depth == 18 else Bottleneck
    return TorchResNet(block, LAYOUT[depth][0])


def _layer4(model, x):
    """The layer4 features of a torchvision ResNet."""
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    return model.layer4(model.layer3(model.layer2(model.layer1(x))))


def _randomised(model, seed: int):
    """`model` in eval mode with random weights and random BatchNorm affine parameters
    and running statistics (so that the statistics matter)."""
    import torch

    torch.manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.2)
                module.running_mean.normal_(0.0, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.num_batches_tracked.fill_(7)
    return model.eval()


def _dilate(model, output_stride: int):
    """LibMTL's / MTAN's `ResnetDilated`: stages 3 and 4 (output stride 8) or 4 (16)
    without stride, their 3×3 convolutions dilated (the formerly strided one by half)."""
    import torch

    dilations = {8: {"layer3": 2, "layer4": 4}, 16: {"layer4": 2}}[output_stride]
    for stage, dilate in dilations.items():
        for conv in getattr(model, stage).modules():
            if not isinstance(conv, torch.nn.Conv2d):
                continue
            if conv.stride == (2, 2):
                conv.stride = (1, 1)
                if conv.kernel_size == (3, 3):
                    conv.dilation = conv.padding = (dilate // 2, dilate // 2)
            elif conv.kernel_size == (3, 3):
                conv.dilation = conv.padding = (dilate, dilate)
    return model


def _torch_features(model, image: np.ndarray) -> np.ndarray:
    """layer4 features of an NHWC `image`, as NHWC."""
    import torch

    with torch.no_grad():
        out = _layer4(model, torch.from_numpy(image.transpose(0, 3, 1, 2).copy()))
    return out.numpy().transpose(0, 2, 3, 1)


def _like(module: ResNet, shape=(1, 32, 32, 3)):
    image = jax.ShapeDtypeStruct(shape, jnp.float32)
    return jax.eval_shape(lambda x: module.init(jax.random.key(0), x, train=False), image)


def _max_relative_error(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def _check_equal_features(tmp_path, depth: int, output_strides=(32,)):
    torch = pytest.importorskip("torch")
    model = _randomised(_torch_resnet(depth), seed=depth)
    path = tmp_path / f"resnet{depth}.pth"
    torch.save(model.state_dict(), path)
    assert convert_weights.main([str(path), str(tmp_path / "w.npz")]) == 0
    assert convert_weights.main([str(path), str(tmp_path / "w.safetensors")]) == 0
    image = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
    errors = {}
    for output_stride in output_strides:
        module = ResNet(depth, output_stride=output_stride)
        apply = jax.jit(lambda v, x, m=module: m.apply(v, x, train=False))
        if output_stride != 32:
            _dilate(model, output_stride)
        want = _torch_features(model, image)
        from_pth = pretrained.load_resnet(path, depth, like=_like(module))
        for name in ("resnet.pth", "w.npz", "w.safetensors"):
            variables = (
                from_pth
                if name == "resnet.pth"
                else pretrained.load_resnet(tmp_path / name, depth, like=_like(module))
            )
            jax.tree.map(np.testing.assert_array_equal, variables, from_pth)
            got = np.asarray(apply(variables, jnp.asarray(image)))
            assert got.shape == want.shape
            errors[output_stride, name] = _max_relative_error(got, want)
    print(f"ResNet-{depth} layer4 max relative error:", errors)
    assert max(errors.values()) <= TOLERANCE, errors
    return errors


def test_resnet18_matches_torchvision(tmp_path):
    _check_equal_features(tmp_path, 18, output_strides=(32, 8))


@pytest.mark.parametrize("output_stride", [32, pytest.param(8, marks=pytest.mark.slow)])
def test_resnet50_matches_torchvision(tmp_path, output_stride):
    _check_equal_features(tmp_path, 50, output_strides=(output_stride,))


def test_torch_module_has_torchvision_names():
    names = list(_torch_resnet(18).state_dict())
    assert len(names) == 122 and names[:6] == [
        "conv1.weight",
        "bn1.weight",
        "bn1.bias",
        "bn1.running_mean",
        "bn1.running_var",
        "bn1.num_batches_tracked",
    ]
    assert "layer2.0.downsample.0.weight" in names and names[-2:] == ["fc.weight", "fc.bias"]
    assert len(_torch_resnet(50).state_dict()) == 320


# ----------------------------------------------------------------------- torch-free side


def _fake_state_dict(depth: int, width: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
    """Random arrays under torchvision's names and shapes (written out independently of
    `pretrained`'s mapping), with `num_batches_tracked` and the classifier."""
    rng = np.random.default_rng(seed)
    sizes, convs, expansion = LAYOUT[depth]
    arrays = {}

    def conv(name, cout, cin, k):
        arrays[f"{name}.weight"] = rng.normal(size=(cout, cin, k, k)).astype(np.float32)

    def bn(name, c):
        arrays[f"{name}.weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        arrays[f"{name}.bias"] = rng.normal(size=c).astype(np.float32)
        arrays[f"{name}.running_mean"] = rng.normal(size=c).astype(np.float32)
        arrays[f"{name}.running_var"] = rng.uniform(0.5, 2.0, c).astype(np.float32)
        arrays[f"{name}.num_batches_tracked"] = np.array(3, np.int64)

    conv("conv1", width, 3, 7)
    bn("bn1", width)
    inplanes = width
    for stage, blocks in enumerate(sizes):
        planes = width * 2**stage
        for b in range(blocks):
            prefix = f"layer{stage + 1}.{b}"
            if convs == 2:
                shapes = [(planes, inplanes, 3), (planes, planes, 3)]
            else:
                shapes = [(planes, inplanes, 1), (planes, planes, 3), (planes * 4, planes, 1)]
            for k, shape in enumerate(shapes):
                conv(f"{prefix}.conv{k + 1}", *shape)
                bn(f"{prefix}.bn{k + 1}", shape[0])
            if b == 0 and (stage > 0 or inplanes != planes * expansion):
                conv(f"{prefix}.downsample.0", planes * expansion, inplanes, 1)
                bn(f"{prefix}.downsample.1", planes * expansion)
            inplanes = planes * expansion
    arrays["fc.weight"] = rng.normal(size=(10, inplanes)).astype(np.float32)
    arrays["fc.bias"] = np.zeros(10, np.float32)
    return arrays


def _safetensors_bytes(tensors: dict[str, tuple[str, tuple, bytes]]) -> bytes:
    """A safetensors file from `{name: (dtype, shape, little-endian bytes)}`."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset]}
        offset += len(data)
        header[name]["data_offsets"].append(offset)
    encoded = json.dumps(header).encode()
    return (
        len(encoded).to_bytes(8, "little")
        + encoded
        + b"".join(data for _, _, data in tensors.values())
    )


def test_safetensors_reading_of_each_dtype(tmp_path):
    rng = np.random.default_rng(1)
    f32 = rng.normal(size=(4, 3, 2, 2)).astype(np.float32)
    f16 = rng.normal(size=(5,)).astype(np.float16)
    # BF16 holds the upper 16 bits of a float32: values with zero low bits are exact.
    bf16 = (rng.normal(size=(2, 3)).astype(np.float32).view(np.uint32) & 0xFFFF0000).view(
        np.float32
    )
    tensors = {
        "conv.weight": ("F32", f32.shape, f32.astype("<f4").tobytes()),
        "bn.bias": ("F16", f16.shape, f16.astype("<f2").tobytes()),
        "bn.weight": ("BF16", bf16.shape, (bf16.view("<u4") >> 16).astype("<u2").tobytes()),
        "bn.num_batches_tracked": ("I64", (), np.array(12, "<i8").tobytes()),
    }
    path = tmp_path / "w.safetensors"
    path.write_bytes(_safetensors_bytes(tensors))
    arrays = pretrained.read_state_dict(path)
    assert sorted(arrays) == sorted(tensors)
    np.testing.assert_array_equal(arrays["conv.weight"], f32)
    np.testing.assert_array_equal(arrays["bn.bias"], f16.astype(np.float32))
    np.testing.assert_array_equal(arrays["bn.weight"], bf16)
    assert arrays["bn.weight"].dtype == arrays["bn.bias"].dtype == np.float32
    assert arrays["bn.num_batches_tracked"].dtype == np.int64
    assert arrays["bn.num_batches_tracked"] == 12


def test_safetensors_errors_name_the_file_and_tensor(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(_safetensors_bytes({"x": ("U8", (2,), b"\0\0")}))
    with pytest.raises(ValueError, match=r"bad\.safetensors.*'x' has dtype 'U8'"):
        pretrained.read_state_dict(path)
    path.write_bytes(_safetensors_bytes({"x": ("F32", (3,), b"\0" * 8)}))
    with pytest.raises(ValueError, match=r"'x' of shape \(3,\).*data_offsets"):
        pretrained.read_state_dict(path)
    path.write_bytes(b"\xff" * 8 + b"{}")
    with pytest.raises(ValueError, match="not a safetensors file"):
        pretrained.read_state_dict(path)


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_written_files_round_trip(tmp_path, suffix):
    state_dict = _fake_state_dict(18, width=4)
    state_dict["half"] = np.arange(3, dtype=np.float16)
    path = tmp_path / f"w{suffix}"
    pretrained.write_state_dict(state_dict, path)
    back = pretrained.read_state_dict(path)
    assert list(back) == list(state_dict)
    for name, array in state_dict.items():
        np.testing.assert_array_equal(back[name], array)
        assert back[name].dtype == (np.float32 if name == "half" else array.dtype)


def test_plain_numpy_savez_is_read(tmp_path):
    state_dict = _fake_state_dict(18, width=4)
    np.savez(tmp_path / "w.npz", **state_dict)
    back = pretrained.read_state_dict(tmp_path / "w.npz")
    assert pretrained.state_dict_depth(back) == 18
    like = _like(ResNet(18, width=4))
    variables = pretrained.resnet_variables(back, 18, like=like)
    kernel = variables["params"]["layers_1"]["ResidualBlock_0"]["Conv_2"]["kernel"]
    np.testing.assert_array_equal(
        kernel, state_dict["layer2.0.downsample.0.weight"].transpose(2, 3, 1, 0)
    )


@pytest.mark.parametrize("depth", [18, 50])
def test_every_name_fills_one_variable(depth):
    width = 4
    state_dict = _fake_state_dict(depth, width)
    module = ResNet(depth, width=width, output_stride=8)  # dilated: the same variables
    variables = pretrained.resnet_variables(state_dict, depth, like=_like(module))
    assert pretrained.state_dict_depth(state_dict) == depth
    assert pretrained.resnet_depth(variables) == depth
    used = [n for n in state_dict if not n.startswith("fc.") and "num_batches" not in n]
    leaves = jax.tree.leaves(variables)
    assert len(leaves) == len(used)
    # Each torchvision array appears exactly once among the leaves (they are all distinct).
    flat = sorted(np.asarray(leaf).ravel().tobytes() for leaf in leaves)
    want = sorted(
        (a.transpose(2, 3, 1, 0) if a.ndim == 4 else a).ravel().tobytes()
        for a in (state_dict[n] for n in used)
    )
    assert flat == want
    bn = state_dict["layer1.0.bn2.running_var"]
    got = variables["batch_stats"]["layers_0"]["ResidualBlock_0"]["BatchNorm_1"]["var"]
    np.testing.assert_array_equal(got, bn)
    got = variables["params"]["bn1"]["scale"]
    np.testing.assert_array_equal(got, state_dict["bn1.weight"])


def test_missing_extra_and_misshaped_names_raise(tmp_path):
    like = _like(ResNet(18, width=4))
    state_dict = _fake_state_dict(18, width=4)
    source = tmp_path / "r18.npz"

    missing = dict(state_dict)
    del missing["layer3.1.bn2.running_mean"]
    with pytest.raises(ValueError, match=r"r18\.npz.*'layer3\.1\.bn2\.running_mean'.*\(16,\)"):
        pretrained.resnet_variables(missing, 18, like=like, source=source)

    extra = dict(state_dict, **{"layer1.0.conv3.weight": np.zeros((4, 4, 1, 1), np.float32)})
    with pytest.raises(ValueError, match=r"'layer1\.0\.conv3\.weight' \(4, 4, 1, 1\) in .*r18"):
        pretrained.resnet_variables(extra, 18, like=like, source=source)

    wrong = dict(state_dict, **{"layer2.0.conv1.weight": np.zeros((8, 4, 1, 1), np.float32)})
    message = r"'layer2\.0\.conv1\.weight' in .*r18\.npz.*\(8, 4, 1, 1\).*expects \(8, 4, 3, 3\)"
    with pytest.raises(ValueError, match=message):
        pretrained.resnet_variables(wrong, 18, like=like, source=source)

    with pytest.raises(ValueError, match=r"w50\.npz' holds ResNet-50 weights, not ResNet-18"):
        pretrained.load_resnet(_save(tmp_path, _fake_state_dict(50, 4), "w50.npz"), 18)


def _save(tmp_path, state_dict, name):
    path = tmp_path / name
    pretrained.write_state_dict(state_dict, path)
    return path


def test_depth_of_a_state_dict():
    with pytest.raises(ValueError, match="does not hold torchvision ResNet weights"):
        pretrained.state_dict_depth({"encoder.weight": np.zeros(1)}, source="x.npz")
    deeper = _fake_state_dict(50, width=2)
    deeper["layer3.6.conv1.weight"] = np.zeros((8, 32, 1, 1), np.float32)
    with pytest.raises(ValueError, match=r"\(3, 4, 7, 3\) blocks per stage"):
        pretrained.state_dict_depth(deeper)


def test_torch_file_without_torch_names_the_file_and_extra(tmp_path, monkeypatch):
    path = tmp_path / "resnet18.pth"
    path.write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    with pytest.raises(ImportError, match=r"resnet18\.pth.*pip install 'mtl-jax\[torch\]'"):
        pretrained.read_state_dict(path)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        pretrained.read_state_dict(tmp_path / "missing.pth")


def test_converter_refuses_to_overwrite(tmp_path, capsys):
    source = _save(tmp_path, _fake_state_dict(18, width=4), "in.safetensors")
    target = tmp_path / "out.npz"
    assert convert_weights.main([str(source), str(target)]) == 0
    assert "ResNet-18" in capsys.readouterr().out
    target.write_bytes(b"keep")
    assert convert_weights.main([str(source), str(target)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert target.read_bytes() == b"keep"
    assert convert_weights.main([str(source), str(target), "--overwrite"]) == 0
    back = pretrained.read_state_dict(target)
    assert back.keys() == pretrained.read_state_dict(source).keys()
    assert convert_weights.main([str(source), str(tmp_path / "out.pth")]) == 1
    assert "must end in .npz or .safetensors" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.safetensors", "out.npz"]


def _state(trunk="resnet18", architecture="hps", width_multiplier=1 / 16):
    """A `TrainState` of a two-task model with random variables (no optimizer state:
    `warm_start` only reads and replaces the variables)."""
    tasks = {"b": Classification("b", num_classes=3), "a": Classification("a", num_classes=2)}
    model = build_model(
        trunk, tasks, architecture=architecture, head_hidden=(4,), width_multiplier=width_multiplier
    )
    size, channels = (28, 1) if trunk == "lenet" else (32, 3)
    image = jax.ShapeDtypeStruct((1, size, size, channels), jnp.float32)
    shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), image)
    rng = np.random.default_rng(5)
    variables = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape), s.dtype), shapes)
    return TrainState(
        step=jnp.int32(0),
        params=variables["params"],
        batch_stats=variables["batch_stats"],
        opt_state=(),
        weighting_state=(),
        rng=jnp.zeros(2, jnp.uint32),
    )


@pytest.mark.parametrize("architecture", ["hps", "mtan"])
def test_warm_start_fills_the_trunk_and_keeps_fresh_heads(tmp_path, architecture):
    state_dict = _fake_state_dict(18, width=4)
    path = _save(tmp_path, state_dict, "resnet18.safetensors")
    state = _state(architecture=architecture)
    warm, fresh = warm_start(state, path)
    assert fresh == ["a", "b"]
    want = pretrained.resnet_variables(state_dict, 18, like=_trunk_of(state))
    for collection in ("params", "batch_stats"):
        got = getattr(warm, collection)
        jax.tree.map(np.testing.assert_array_equal, _trunk_of(warm)[collection], want[collection])
        jax.tree.map(
            np.testing.assert_array_equal, got["tasks"], getattr(state, collection)["tasks"]
        )
        # MTAN's tied attention blocks are not part of the file: they stay as initialised.
        for name in set(got["shared"]) - set(pretrained.RESNET_MODULES):
            jax.tree.map(
                np.testing.assert_array_equal,
                got["shared"][name],
                getattr(state, collection)["shared"][name],
            )
        assert jax.tree.structure(got) == jax.tree.structure(getattr(state, collection))
    kernel = warm.params["shared"]["conv1"]["kernel"]
    assert kernel.dtype == jnp.float32
    np.testing.assert_array_equal(kernel, state_dict["conv1.weight"].transpose(2, 3, 1, 0))


def test_warm_start_fills_every_tasks_trunk_statistics_with_per_task_bn(tmp_path):
    """`input_bn="per_task"`: the trunk's running statistics live under each task; every
    task's set starts from the file's, the parameters as with shared statistics."""
    state_dict = _fake_state_dict(18, width=4)
    path = _save(tmp_path, state_dict, "resnet18.safetensors")
    tasks = {"b": Classification("b", num_classes=3), "a": Classification("a", num_classes=2)}
    model = dataclasses.replace(
        build_model("resnet18_encoder", tasks, head_hidden=(), width_multiplier=1 / 16),
        input_bn="per_task",
    )
    images = dict.fromkeys(tasks, jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
    shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), images)
    rng = np.random.default_rng(5)
    variables = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape), s.dtype), shapes)
    state = _state()._replace(params=variables["params"], batch_stats=variables["batch_stats"])
    assert not state.batch_stats["shared"]
    warm, fresh = warm_start(state, path)
    assert fresh == ["a", "b"]
    resnet_stats = {
        k: v for k, v in state.batch_stats["tasks"]["a"]["trunk"].items()
        if k in pretrained.RESNET_MODULES
    }  # fmt: skip
    like = {"params": _trunk_of(state)["params"], "batch_stats": resnet_stats}
    want = pretrained.resnet_variables(state_dict, 18, like=like)
    jax.tree.map(np.testing.assert_array_equal, _trunk_of(warm)["params"], want["params"])
    for name in tasks:
        got = warm.batch_stats["tasks"][name]["trunk"]
        jax.tree.map(
            np.testing.assert_array_equal,
            {k: got[k] for k in resnet_stats},
            want["batch_stats"],
        )
        # The encoder's hidden BatchNorm is not in the file: it stays as initialised.
        jax.tree.map(
            np.testing.assert_array_equal,
            got["hidden_bn"],
            state.batch_stats["tasks"][name]["trunk"]["hidden_bn"],
        )
    assert jax.tree.structure(warm.batch_stats) == jax.tree.structure(state.batch_stats)


def _trunk_of(state):
    return {
        c: {k: v for k, v in getattr(state, c)["shared"].items() if k in pretrained.RESNET_MODULES}
        for c in ("params", "batch_stats")
    }


def test_warm_start_names_the_config_key_for_another_trunk(tmp_path):
    path = _save(tmp_path, _fake_state_dict(50, width=4), "resnet50.npz")
    with pytest.raises(ValueError, match=r"ResNet-50 .*trunk is a ResNet-18.*model\.trunk="):
        warm_start(_state(), path)
    with pytest.raises(ValueError, match=r"model\.trunk='resnet50'.*shared modules"):
        warm_start(_state("lenet", width_multiplier=1.0), path)
    path = _save(tmp_path, _fake_state_dict(18, width=8), "resnet18.npz")
    with pytest.raises(ValueError, match=r"stem width 8.*model\.width_multiplier to 0\.125"):
        warm_start(_state(), path)


def test_a_pickled_module_is_not_a_state_dict(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "model.pt")
    with pytest.raises(ValueError, match=r"model\.pt' is not a readable state_dict file"):
        pretrained.read_state_dict(tmp_path / "model.pt")
    torch.save({"conv1.weight": torch.zeros(1), "epoch": 3}, tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match=r"entry 'epoch' is a int, not a tensor"):
        pretrained.read_state_dict(tmp_path / "checkpoint.pt")
    torch.save({"w": torch.ones(2, dtype=torch.bfloat16)}, tmp_path / "bf16.pt")
    back = pretrained.read_state_dict(tmp_path / "bf16.pt")
    assert back["w"].dtype == np.float32 and back["w"].tolist() == [1.0, 1.0]
