"""Multi-gate mixture-of-experts."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mtl_jax.models import build_model
from mtl_jax.tasks import Boundary, Classification
from tests.test_models import check_architecture, count, random_variables


def _digits():
    return {"L": Classification("L"), "R": Classification("R")}


def test_parameters():
    """E LeNet experts (21,330 each) shared; per task a gate (784·E + E) and a tower."""
    model = build_model("lenet", _digits(), architecture="mmoe", num_experts=3)
    image = jax.ShapeDtypeStruct((2, 28, 28, 1), jnp.float32)
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), image)["params"]
    assert sorted(params["shared"]) == ["expert_0", "expert_1", "expert_2"]
    assert count(params["shared"]) == 3 * 21_330
    for head in params["tasks"].values():
        assert count(head["gate"]) == 784 * 3 + 3
        assert count(head["tower"]) == 3_060  # the LeNet HPS head


def test_identical_experts_reduce_to_hard_parameter_sharing():
    """Gates are convex weights: with equal experts MMoE is the expert plus the towers."""
    image = jnp.asarray(np.random.default_rng(0).normal(size=(4, 28, 28, 1)), jnp.float32)
    mmoe = build_model("lenet", _digits(), architecture="mmoe", num_experts=3)
    hps = build_model("lenet", _digits())
    params = random_variables(mmoe, image)["params"]
    no_stats = {"shared": {}, "tasks": {"L": {}, "R": {}}}  # LeNet has no BatchNorm

    def predict(model, params):
        return jax.jit(lambda p: model.apply({"params": p, "batch_stats": no_stats}, image)[0])(
            params
        )

    expert = params["shared"]["expert_0"]
    same = {"shared": {f"expert_{i}": expert for i in range(3)}, "tasks": params["tasks"]}
    plain = {"shared": expert, "tasks": {n: h["tower"] for n, h in params["tasks"].items()}}
    preds, expected = predict(mmoe, same), predict(hps, plain)
    for name in ("L", "R"):
        np.testing.assert_allclose(preds[name], expected[name], rtol=1e-5, atol=1e-5)
    # With different experts the gates matter.
    assert not np.allclose(predict(mmoe, params)["L"], expected["L"])


def test_mmoe_meets_the_architecture_contract():
    tasks = {"shape": Classification("shape", 4), "boundary": Boundary("boundary", 32, 32)}
    model = build_model(
        "seed_cnn", tasks, architecture="mmoe", num_experts=2, head_hidden=(8,), dense_head_hidden=4
    )
    image = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 32, 3)), jnp.float32)
    check_architecture(model, tasks, random_variables(model, image), image)
