"""Golden values of every weighting method (STYLE rule 12): the inputs and the generator.

`compute(name)` runs three successive `weighting.aggregate` calls of one method on each
fixed case of `cases()` (the state carried from call to call, FAMO's `after_update` hook
called between them) and returns the three directions and weights as Python floats.
`tests/test_golden.py` compares them with the committed `tests/golden_values.json`.

Regenerate the table with

    .venv/bin/python -m tests.golden

only on purpose: a method whose results change on purpose (a fix, a new default) or a
new method. Say in the commit message which rows changed and why.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mtl_jax import weighting

TABLE = pathlib.Path(__file__).with_name("golden_values.json")
COMMAND = "python -m tests.golden"
NUM_STEPS = 3
NUM_TASKS = 3
NUM_PARAMS = 12
KEY = jax.random.PRNGKey(0)
# Of the NumPy generator of the inputs. `test_golden` checks that no method's result on
# them moves past the tolerance under one ulp of input noise; a new seed must pass that
# test too (seeds 1, 2 and 3, tried first, each left some method, MGDA, CAGrad, IMTL or
# ConFIG, moving past the default tolerance under 2.5 ulps of noise).
SEED = 20240601
# FAMO's `after_update` sees the losses after the step as these per-task fractions of
# those before. They must differ between tasks: with one common factor every task's
# log-loss decrease is the same, FAMO's logit gradient is rounding noise, and Adam
# (which normalises it) turns that noise into full-size steps.
AFTER_FACTORS = (0.9, 0.75, 0.95)

# The options every method is built with: the required ones, and those that make a
# stateful method move within three steps: DWA and STCH leave their first epochs after
# one step each; the methods that learn their weights with Adam get a learning rate of
# 0.1 instead of 1e-3, since Adam moves them by about the learning rate per step and a
# change of ~1e-3 in weights near 1 is too small for the tolerance to resolve (with the
# default, GradNorm's alpha 1.5 → 1.6 went unnoticed). Golden values hold for these
# options; change them only with the table.
FAST = 0.1
OPTIONS: dict[str, dict[str, Any]] = {
    "dwa": {"steps_per_epoch": 1},
    "gradnorm": {"learning_rate": FAST},
    "imtl": {"learning_rate": FAST},
    "imtl_l": {"learning_rate": FAST},
    "stch": {"steps_per_epoch": 1, "warmup_epochs": 0},
    "trimmed_mean": {"trim_number": 1},  # needs more than 2 × trim_number tasks
    "uncertainty": {"learning_rate": FAST},
}


def build(name: str, num_tasks: int) -> weighting.Weighting:
    """The method `name` with the options of the golden table."""
    options = dict(OPTIONS.get(name, {}))
    if name == "fixed":
        options["weights"] = {
            n: 1.0 + i for i, n in enumerate(weighting.default_task_names(num_tasks))
        }
    return weighting.create(name, **options)


def cases(seed: int = SEED) -> dict[str, dict[str, np.ndarray]]:
    """The fixed inputs: per case, `jacobians` [steps, T, P] and `losses` [steps, T].

    `random3`: three tasks with independent Gaussian gradients, a new matrix each step.
    `conflict3`: three tasks where task 1's gradient is nearly opposite task 0's
    (cosine ≈ −0.9), so that projection and conflict-averse methods act.
    Losses are positive and distinct. Every case has the same shapes, so that each
    method compiles once for all of them.
    """
    rng = np.random.default_rng(seed)
    random3 = rng.normal(size=(NUM_STEPS, NUM_TASKS, NUM_PARAMS))
    # Each task's loss shrinks at its own rate, so that loss-ratio methods (DWA, STCH,
    # GLS) see unequal progress.
    rates = rng.uniform(0.6, 0.95, size=NUM_TASKS)
    losses3 = rng.uniform(0.5, 2.5, size=NUM_TASKS) * rates ** np.arange(NUM_STEPS)[:, None]
    conflict3 = rng.normal(size=(NUM_STEPS, NUM_TASKS, NUM_PARAMS))
    conflict3[:, 1] = -0.9 * conflict3[:, 0] + 0.4 * conflict3[:, 1]
    conflict_losses = rng.uniform(0.5, 2.5, size=(NUM_STEPS, NUM_TASKS))
    bank = {
        "random3": {"jacobians": random3, "losses": losses3},
        "conflict3": {"jacobians": conflict3, "losses": conflict_losses},
    }
    return {
        case: {field: value.astype(np.float32) for field, value in arrays.items()}
        for case, arrays in bank.items()
    }


def inputs_digest() -> str:
    """SHA-256 of the float32 bytes of every input, to tell changed inputs from changed
    methods (NumPy's Gaussian stream is not guaranteed across major versions)."""
    digest = hashlib.sha256()
    for case, arrays in sorted(cases().items()):
        digest.update(case.encode())
        for field, value in sorted(arrays.items()):
            digest.update(field.encode())
            digest.update(np.ascontiguousarray(value, "<f4").tobytes())
    return digest.hexdigest()


def step_key(step: int) -> jax.Array:
    """The key of update `step` (the same in every case; non-stochastic methods ignore it)."""
    return jax.random.fold_in(KEY, step)


def compute(name: str, bank: dict[str, dict[str, np.ndarray]] | None = None) -> dict[str, Any]:
    """`{case: {"directions": [steps][P], "weights": [steps][T] or None}}` of `name` on
    `bank` (default `cases()`; weights are `None` for jacobian-kind methods, which return
    no weights). The step function compiles once for all cases."""
    method = build(name, NUM_TASKS)
    after_factors = jnp.asarray(AFTER_FACTORS, jnp.float32)

    @jax.jit
    def step(jac, losses, state, key):
        direction, weights, state = weighting.aggregate(
            method, jac, key=key, losses=losses, state=state
        )
        if method.after_update is not None:  # FAMO: the losses after the step
            state, _ = method.after_update(losses, after_factors * losses, state)
        return direction, weights, state

    result = {}
    for case, arrays in (cases() if bank is None else bank).items():
        state = method.init_for(
            weighting.default_task_names(NUM_TASKS),
            jax.ShapeDtypeStruct((NUM_PARAMS,), jnp.float32),
        )
        directions, weights = [], []
        for s in range(NUM_STEPS):
            direction, w, state = step(
                jnp.asarray(arrays["jacobians"][s]),
                jnp.asarray(arrays["losses"][s]),
                state,
                step_key(s),
            )
            directions.append([float(x) for x in np.asarray(direction)])
            weights.append(None if w is None else [float(x) for x in np.asarray(w)])
        result[case] = {
            "directions": directions,
            "weights": None if method.kind == weighting.JACOBIAN else weights,
        }
    assert step._cache_size() == 1, f"{name}: recompiled within the golden run"
    return result


def _dumps(value: Any, indent: int = 0) -> str:
    """JSON with dicts indented and each list of numbers on one line."""
    pad = "  " * (indent + 1)
    if isinstance(value, dict):
        items = [f"{pad}{json.dumps(k)}: {_dumps(v, indent + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + "  " * indent + "}"
    if isinstance(value, list) and value and isinstance(value[0], (list, dict)):
        items = [f"{pad}{_dumps(v, indent + 1)}" for v in value]
        return "[\n" + ",\n".join(items) + "\n" + "  " * indent + "]"
    return json.dumps(value, allow_nan=False)


def table() -> dict[str, Any]:
    """The whole golden table: header and every method of `weighting.METHODS`, sorted."""
    return {
        "header": {
            "command": COMMAND,
            "jax": jax.__version__,
            "numpy": np.__version__,
            "backend": jax.default_backend(),
            "values": "float32 results (float32 inputs) stored as float64 decimals: "
            "every number is exactly a float32",
            "steps": NUM_STEPS,
            "inputs_sha256": inputs_digest(),
        },
        "methods": {name: compute(name) for name in sorted(weighting.METHODS)},
    }


def main() -> None:
    TABLE.write_text(_dumps(table()) + "\n")
    print(f"wrote {TABLE} ({len(weighting.METHODS)} methods)")


if __name__ == "__main__":
    main()
