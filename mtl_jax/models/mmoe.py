"""Multi-gate mixture-of-experts (Ma, Zhao, Yi, Chen, Hong & Chi, KDD 2018).

`y_k = h_k(Σ_i g_k(x)_i f_i(x))` with `g_k(x) = softmax(W_gk x)` (Eqs. 5–6): E expert
networks f_i shared by all tasks, and per task k a gate (one linear layer on the
flattened input, then softmax over experts) and a tower h_k. As in LibMTL's `MMoE`, the
experts are copies of an encoder and the gates read the raw input.

Split: the experts are "shared"; each task's gate and tower are its head. The gates need
the input, so the representation carries it next to the stacked expert outputs::

    rep = {"experts": [E, B, ...] expert outputs, "gate_input": [B, H·W·C] flattened image}

The image is not a parameter: gradients w.r.t. `gate_input` reach no shared weight.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtl_jax.models.layers import TORCH_DEFAULT, Dtype


class MMoETrunk(nn.Module):
    """E copies of `expert` (independent weights), plus the flattened input for the gates.

    Attributes:
      expert: the expert network (any trunk); cloned `num_experts` times.
      num_experts: E.
    """

    expert: nn.Module
    num_experts: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = True):
        if self.num_experts < 1:
            raise ValueError(f"MMoE needs at least one expert, got {self.num_experts}")
        outs = [
            self.expert.clone(parent=self, name=f"expert_{i}")(x, train=train)
            for i in range(self.num_experts)
        ]
        return {
            "experts": jax.tree.map(lambda *leaves: jnp.stack(leaves), *outs),
            "gate_input": x.reshape(x.shape[0], -1).astype(self.dtype),
        }


class MMoEHead(nn.Module):
    """Task k's gate (Dense(E) → softmax on the flattened input) and tower.

    Attributes:
      tower: the task's head on the gated mixture of expert outputs.
      num_experts: E.
    """

    tower: nn.Module
    num_experts: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, rep, *, train: bool = True):
        logits = nn.Dense(
            self.num_experts, kernel_init=TORCH_DEFAULT, dtype=self.dtype, name="gate"
        )(rep["gate_input"])
        # Softmax in float32: in bfloat16 the gate weights would not sum to one.
        gate = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
        mixed = jax.tree.map(
            lambda e: jnp.einsum("eb...,be->b...", e, gate.astype(e.dtype)), rep["experts"]
        )
        return self.tower(mixed, train=train)
