"""CGC, PLE, DSelect-k (`models.experts`) and Learning to Branch (`models.branching`).

Parameter counts are worked out by hand from LibMTL's definitions (LibMTL/architecture/
CGC.py, PLE.py, DSelect_k.py, LTB.py) on the LeNet trunk: 21,330 parameters, cut into
stages of 260 (conv 5×5, 1→10), 5,020 (conv 5×5, 10→20) and 16,050 (Dense 320→50); a
LibMTL gate is `Linear(numel of its input, experts)`; the LeNet HPS head has 3,060.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import cli
from mtl_jax import workdir as wd
from mtl_jax.errors import OptionError
from mtl_jax.models import build_model
from mtl_jax.models.branching import branch_weights
from mtl_jax.models.experts import binary_codes, dselect_k_weights, smooth_step
from mtl_jax.tasks import Classification, Segmentation
from tests.test_models import _leaf_perturbations, check_architecture, count, random_variables

ARCHITECTURES = ("cgc", "ple", "dselect_k", "ltb")
LENET = 21_330
TOWER = 3_060  # the LeNet HPS head: Dense(50→50) + Dense(50→10)


def _digits():
    return {"L": Classification("L"), "R": Classification("R")}


def _shapes(model, image):
    return jax.eval_shape(model.init, jax.random.PRNGKey(0), image)


def _lenet_image(batch: int = 2):
    return jnp.asarray(np.random.default_rng(0).normal(size=(batch, 28, 28, 1)), jnp.float32)


# --- Parameter counts and layout ---------------------------------------------------------


def test_cgc_parameters():
    """LibMTL's CGC with num_experts [2, 1, 1]: 2 shared LeNets; per task 1 own LeNet, a
    gate Linear(784, 2 + 1) and the tower."""
    model = build_model(
        "lenet", _digits(), architecture="cgc", num_shared_experts=2, num_task_experts=1
    )
    params = _shapes(model, _lenet_image())["params"]
    assert sorted(params["shared"]) == ["expert_0", "expert_1"]
    assert count(params["shared"]) == 2 * LENET
    for head in params["tasks"].values():
        assert sorted(head) == ["level_0", "tower"]
        assert sorted(head["level_0"]) == ["expert_0", "gate"]
        assert count(head["level_0"]["gate"]) == (784 + 1) * 3
        assert count(head) == LENET + (784 + 1) * 3 + TOWER == 26_745


def test_ple_parameters():
    """LibMTL's PLE (one level per stage: 3 on LeNet) with num_experts [1, 1, 1]: per level
    one shared and one own expert, and a gate Linear(numel of the level's input, 2): 784,
    12·12·10 = 1,440 and 4·4·20 = 320 inputs. Level 0's shared expert is the trunk; the
    later levels' shared experts are tied (stored once, under "shared")."""
    model = build_model("lenet", _digits(), architecture="ple")
    assert model.tied == ("shared_experts",)
    params = _shapes(model, _lenet_image())["params"]
    assert sorted(params["shared"]) == ["expert_0", "shared_experts"]
    assert count(params["shared"]["expert_0"]) == 260
    assert sorted(params["shared"]["shared_experts"]) == ["level_1", "level_2"]
    assert count(params["shared"]) == 260 + 5_020 + 16_050 == LENET
    gates = (784 + 1) * 2 + (1_440 + 1) * 2 + (320 + 1) * 2
    for head in params["tasks"].values():
        assert sorted(head) == ["level_0", "level_1", "level_2", "tower"]
        assert count(head["level_1"]["gate"]) == (1_440 + 1) * 2
        assert count(head) == LENET + gates + TOWER == 29_484
    # Two levels: stages {0, 1} and {2}.
    two = build_model("lenet", _digits(), architecture="ple", ple_levels=2)
    params = _shapes(two, _lenet_image())["params"]
    assert count(params["shared"]["expert_0"]) == 260 + 5_020
    assert count(params["tasks"]["L"]) == LENET + (784 + 1) * 2 + (320 + 1) * 2 + TOWER


def test_dselect_k_parameters():
    """LibMTL's DSelect_k, 3 experts, num_nonzeros k = 2: m = ⌈log₂ 3⌉ = 2 code bits; per
    task z-logits Linear(784, k·m) and w-logits Linear(784, k), and the tower."""
    model = build_model("lenet", _digits(), architecture="dselect_k", num_experts=3, dselect_k=2)
    params = _shapes(model, _lenet_image())["params"]
    assert sorted(params["shared"]) == ["expert_0", "expert_1", "expert_2"]
    assert count(params["shared"]) == 3 * LENET
    for head in params["tasks"].values():
        assert sorted(head) == ["combiner", "selector", "tower"]
        assert count(head["selector"]) == (784 + 1) * 2 * 2
        assert count(head["combiner"]) == (784 + 1) * 2
        assert count(head) == 4_710 + TOWER


def test_ltb_parameters():
    """LibMTL's LTB: one full encoder per task and α ones(6, T, T), of which α[1..4] (the
    branching points between its 5 stages) are used; on LeNet's 3 stages, 2 branching
    points. Shared: both columns' first two stages and α_1; per task its α_2 row, its
    column's last stage and the tower."""
    model = build_model("lenet", _digits(), architecture="ltb")
    params = _shapes(model, _lenet_image())["params"]
    assert sorted(params["shared"]) == ["branch_1", "column_0", "column_1"]
    assert params["shared"]["branch_1"].shape == (2, 2)
    assert sorted(params["shared"]["column_0"]) == ["block_0", "block_1"]
    assert count(params["shared"]) == 2 * (260 + 5_020) + 2 * 2
    for head in params["tasks"].values():
        assert sorted(head) == ["block", "branch", "tower"]
        assert head["branch"].shape == (2,)
        assert count(head) == 2 + 16_050 + TOWER
    total = count(params)
    assert total == 2 * LENET + 2 * 2 * 2 + 2 * TOWER  # LibMTL: + 4·T² unused α entries
    resnet = build_model(
        "resnet18", _digits(), architecture="ltb", width_multiplier=1 / 16, head_hidden=()
    )
    params = _shapes(resnet, jnp.zeros((2, 32, 32, 3)))["params"]
    assert [k for k in sorted(params["shared"]) if k.startswith("branch")] == [
        "branch_1",
        "branch_2",
        "branch_3",
    ]


# --- Forward shapes ------------------------------------------------------------------------


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_forward_shapes_on_lenet_and_resnet(architecture):
    digits = {"L": Classification("L"), "R": Classification("R", 4)}
    model = build_model("lenet", digits, architecture=architecture)
    image = _lenet_image()
    variables = _shapes(model, image)
    preds, _ = jax.eval_shape(
        lambda v: model.apply(v, image, train=True, rng=jax.random.PRNGKey(1)), variables
    )
    assert {n: p.shape for n, p in preds.items()} == {"L": (2, 10), "R": (2, 4)}
    dense = {"seg": Segmentation("seg", 3, height=32, width=32), "c": Classification("c", 5)}
    model = build_model("resnet18", dense, architecture=architecture, width_multiplier=1 / 16)
    image = jnp.zeros((2, 32, 32, 3))
    variables = _shapes(model, image)
    preds, _ = jax.eval_shape(
        lambda v: model.apply(v, image, train=True, rng=jax.random.PRNGKey(1)), variables
    )
    assert {n: p.shape for n, p in preds.items()} == {"seg": (2, 32, 32, 3), "c": (2, 5)}
    assert {p.dtype for p in preds.values()} == {jnp.dtype(jnp.float32)}


# --- Gates -----------------------------------------------------------------------------


def test_cgc_with_identical_experts_reduces_to_hard_parameter_sharing():
    """CGC's gate is a convex combination: with every expert equal, CGC is that expert
    plus the towers."""
    image = _lenet_image(4)
    cgc = build_model("lenet", _digits(), architecture="cgc", num_shared_experts=2)
    hps = build_model("lenet", _digits())
    params = random_variables(cgc, image)["params"]
    no_stats = {"shared": {}, "tasks": {"L": {}, "R": {}}}
    expert = params["shared"]["expert_0"]
    same = {
        "shared": {"expert_0": expert, "expert_1": expert},
        "tasks": {
            n: {**h, "level_0": {**h["level_0"], "expert_0": expert}}
            for n, h in params["tasks"].items()
        },
    }
    plain = {"shared": expert, "tasks": {n: h["tower"] for n, h in params["tasks"].items()}}

    def predict(model, params):
        return jax.jit(lambda p: model.apply({"params": p, "batch_stats": no_stats}, image)[0])(
            params
        )

    preds, expected = predict(cgc, same), predict(hps, plain)
    for name in ("L", "R"):
        np.testing.assert_allclose(preds[name], expected[name], rtol=1e-5, atol=1e-5)
    assert not np.allclose(predict(cgc, params)["L"], expected["L"])


def test_smooth_step():
    gamma = 2.0
    t = jnp.array([-5.0, -1.0, -0.5, 0.0, 0.5, 1.0, 5.0])
    np.testing.assert_allclose(
        smooth_step(t, gamma), [0.0, 0.0, 0.15625, 0.5, 0.84375, 1.0, 1.0], atol=1e-6
    )
    slope = jax.vmap(jax.grad(lambda x: smooth_step(x, gamma)))(jnp.array([-1.0, 0.0, 1.0]))
    np.testing.assert_allclose(slope, [0.0, 3 / (2 * gamma), 0.0], atol=1e-6)  # C¹ at ±γ/2


@pytest.mark.parametrize("num_experts", [2, 3, 5, 8])
def test_dselect_k_gate_lies_on_the_simplex_and_selects_at_most_k(num_experts):
    rng = np.random.default_rng(num_experts)
    k, gamma = 2, 1.0
    bits = binary_codes(num_experts).shape[1]
    assert binary_codes(num_experts).shape == (num_experts, bits)
    selector = jnp.asarray(rng.normal(scale=0.2, size=(16, k, bits)), jnp.float32)
    combiner = jnp.asarray(rng.normal(size=(16, k)), jnp.float32)
    weights = np.asarray(dselect_k_weights(selector, combiner, num_experts, gamma))
    assert weights.shape == (16, num_experts)
    assert np.all(weights >= 0)
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
    assert np.all((weights > 0).sum(-1) == num_experts)  # smooth region: all experts
    # Converged selectors (|z| ≥ γ/2): each is one-hot, so at most k experts are selected.
    saturated = jnp.sign(selector) * gamma
    weights = np.asarray(dselect_k_weights(saturated, combiner, num_experts, gamma))
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
    assert np.all((weights > 0).sum(-1) <= k)


def test_dselect_k_meets_the_architecture_contract():
    # A wide smooth-step keeps every selector in its smooth region: every expert reaches
    # every task, as the contract's ownership check needs.
    model = build_model(
        "lenet", _digits(), architecture="dselect_k", num_experts=3, dselect_gamma=50.0
    )
    image = _lenet_image()
    check_architecture(model, _digits(), random_variables(model, image), image)


@pytest.mark.parametrize(("architecture", "options"), [("cgc", {}), ("ple", {"ple_levels": 2})])
def test_cgc_and_ple_meet_the_architecture_contract(architecture, options):
    model = build_model("lenet", _digits(), architecture=architecture, **options)
    image = _lenet_image()
    check_architecture(model, _digits(), random_variables(model, image), image)


# --- Learning to Branch --------------------------------------------------------------------


def test_branch_weights():
    logits = jnp.array([[0.0, 3.0, 1.0], [2.0, 2.0, 0.0]])
    np.testing.assert_array_equal(branch_weights(logits), [[0, 1, 0], [1, 0, 0]])  # ties: lowest
    key = jax.random.PRNGKey(0)
    sample = branch_weights(logits, temperature=0.5, key=key)
    np.testing.assert_allclose(sample.sum(-1), 1.0, rtol=1e-6)
    assert set(np.round(np.asarray(sample), 5).ravel()) <= {0.0, 1.0}
    # Straight-through: the gradient of the soft sample reaches every logit.
    grad = jax.grad(lambda a: (branch_weights(a, key=key) * jnp.arange(3.0)).sum())(logits)
    assert np.all(grad != 0)
    sample = jax.jit(lambda key: branch_weights(logits, key=key))
    draws = {tuple(np.argmax(sample(jax.random.PRNGKey(s)), -1).tolist()) for s in range(20)}
    assert len(draws) > 1  # the key, not a fixed seed, decides the sample


def test_ltb_samples_from_the_callers_rng_and_evaluates_deterministically():
    model = build_model("lenet", _digits(), architecture="ltb")
    image = _lenet_image()
    variables = random_variables(model, image)
    evaluate = jax.jit(lambda v: model.apply(v, image)[0])
    first, again = evaluate(variables), evaluate(variables)
    for name in ("L", "R"):
        np.testing.assert_array_equal(first[name], again[name])
    train = jax.jit(lambda v, key: model.apply(v, image, train=True, rng=key)[0])
    same = [train(variables, jax.random.PRNGKey(3)), train(variables, jax.random.PRNGKey(3))]
    np.testing.assert_array_equal(same[0]["L"], same[1]["L"])
    outputs = {np.asarray(train(variables, jax.random.PRNGKey(s))["L"]).tobytes() for s in range(8)}
    assert len(outputs) > 1
    with pytest.raises(ValueError, match="PRNG key"):
        model.apply(variables, image, train=True)


def test_ltb_task_parameters_reach_only_their_task():
    """A leaf of `tasks[t]` moves task t's prediction and no other's (shared leaves reach a
    task only through the branches its tree picks, so they are not checked here)."""
    model = build_model("lenet", _digits(), architecture="ltb")
    image = _lenet_image()
    variables = random_variables(model, image)
    evaluate = jax.jit(lambda p: model.apply({**variables, "params": p}, image)[0])
    base = evaluate(variables["params"])
    for part, path, changed in _leaf_perturbations(variables["params"]):
        if part == "shared":
            continue
        out = evaluate(changed)
        moved = {name for name in ("L", "R") if not np.array_equal(out[name], base[name])}
        where = f"{part}{jax.tree_util.keystr(path)}"
        # A perturbed α row may keep its argmax (the evaluation tree): then nothing moves.
        expected = moved & {part} if "branch" in where else {part}
        assert moved == expected, f"{where} moved {sorted(moved)}"


# --- Options -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("architecture", "kwargs", "option"),
    [
        ("cgc", {"num_shared_experts": 0}, "num_shared_experts"),
        ("ple", {"num_task_experts": 0}, "num_task_experts"),
        ("ple", {"ple_levels": 4}, "ple_levels"),
        ("dselect_k", {"num_experts": 1}, "num_experts"),
        ("dselect_k", {"num_experts": 3, "dselect_k": 4}, "dselect_k"),
        ("dselect_k", {"dselect_gamma": 0.0}, "dselect_gamma"),
        ("ltb", {"ltb_levels": 1}, "ltb_levels"),
        ("ltb", {"ltb_temperature": -1.0}, "ltb_temperature"),
    ],
)
def test_options_are_checked(architecture, kwargs, option):
    with pytest.raises(OptionError, match=option) as error:
        build_model("lenet", _digits(), architecture=architecture, **kwargs)
    assert error.value.option == option


@pytest.mark.parametrize("architecture", ["ple", "ltb"])
def test_staged_architectures_name_the_trunks_they_support(architecture):
    with pytest.raises(OptionError, match="supported trunks") as error:
        build_model("seed_cnn", _digits(), architecture=architecture)
    assert error.value.option == "architecture"


# --- The experiment CLI ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("architecture", "options"),
    [
        # ~17-20 s each on 2 CPU cores: only PLE runs in the default test run; CGC (PLE
        # with one level), DSelect-k (MMoE's trunk) and LTB (its forward is covered
        # in-process above) with the slow tests.
        pytest.param("cgc", ["--config.model.num_shared_experts=2"], marks=pytest.mark.slow),
        ("ple", ["--config.model.ple_levels=2"]),
        pytest.param(
            "dselect_k",
            ["--config.model.num_experts=2", "--config.model.dselect_k=1"],
            marks=pytest.mark.slow,
        ),
        pytest.param("ltb", ["--config.model.ltb_temperature=0.5"], marks=pytest.mark.slow),
    ],
)
def test_trains_from_the_cli(tmp_path, tiny_multi_mnist, architecture, options):
    workdir = tmp_path / "run"
    argv = [
        "train", "--config", "test", "--workdir", str(workdir), "--no-progress",
        f"--config.model.architecture={architecture}", *options,
        "--config.tasks=left,right", "--config.num_steps=2", "--config.checkpoint_every_steps=2",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    records = [r for r in wd.read_metrics(workdir / wd.METRICS_FILE) if "loss" in r]
    assert [r["step"] for r in records] == [1, 2]
    for record in records:
        assert all(np.isfinite(v) for v in record["loss"].values())


def test_new_model_keys_are_added_keys_with_their_defaults():
    """Runs saved before these options existed match a config holding the defaults."""
    from experiments.configs import base

    keys = ("num_shared_experts", "num_task_experts", "ple_levels", "dselect_k")
    keys += ("dselect_gamma", "ltb_levels", "ltb_temperature")
    model = base.get_config().model
    for key in keys:
        assert wd.ADDED_KEYS[f"model.{key}"] == model[key], key
    saved = wd.config_record(base.get_config())
    for key in keys:
        del saved["model"][key]
    assert wd.config_differences(saved, wd.config_record(base.get_config())) == []
