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


def run_experts(parent: nn.Module, expert: nn.Module, count: int, x, *, train: bool):
    """`count` copies of `expert` (independent weights, submodules `expert_{i}` of `parent`,
    called from its compact method) on x: their outputs stacked on a new leading axis
    [count, B, ...] (leaf by leaf for pytree outputs)."""
    outs = [expert.clone(parent=parent, name=f"expert_{i}")(x, train=train) for i in range(count)]
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *outs)


class MMoETrunk(nn.Module):
    """E copies of `expert` (independent weights), plus the flattened input for the gates.

    Attributes:
      expert: the expert network (any trunk); cloned `num_experts` times.
      num_experts: E.
      raw_input: return the input unflattened, as `rep["input"]` [B, H, W, C] instead of
        `rep["gate_input"]` (for heads that run their own experts on it, e.g. CGC's).
    """

    expert: nn.Module
    num_experts: int
    dtype: Dtype = jnp.float32
    raw_input: bool = False

    @nn.compact
    def __call__(self, x, *, train: bool = True):
        if self.num_experts < 1:
            raise ValueError(f"MMoE needs at least one expert, got {self.num_experts}")
        experts = run_experts(self, self.expert, self.num_experts, x, train=train)
        if self.raw_input:
            return {"experts": experts, "input": x.astype(self.dtype)}
        return {"experts": experts, "gate_input": x.reshape(x.shape[0], -1).astype(self.dtype)}


def softmax_gate(x, num_experts: int, *, dtype: Dtype, name: str = "gate") -> jax.Array:
    """A gate `softmax(W x + b)` over `num_experts` experts on the flattened input x [B, D]:
    weights [B, E] (float32) on the probability simplex (MMoE's Eq. 6, PLE's CGC gate).

    Call from a compact method: the Dense layer `name` becomes the caller's submodule.
    """
    logits = nn.Dense(num_experts, kernel_init=TORCH_DEFAULT, dtype=dtype, name=name)(x)
    # Softmax in float32: in bfloat16 the gate weights would not sum to one.
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)


def mix_experts(experts, weights: jax.Array):
    """`Σ_e w[b, e] · experts[e, b, ...]`: the per-example mixture of stacked expert outputs
    (an array [E, B, ...] or a pytree of them) with weights [B, E]."""
    return jax.tree.map(lambda e: jnp.einsum("eb...,be->b...", e, weights.astype(e.dtype)), experts)


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
        gate = softmax_gate(rep["gate_input"], self.num_experts, dtype=self.dtype)
        return self.tower(mix_experts(rep["experts"], gate), train=train)
