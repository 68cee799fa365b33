"""Mixtures of shared and task-owned experts: CGC and PLE (Tang, Liu, Zhao & Gong, RecSys
2020) and the DSelect-k gate (Hazimeh, Zhao, Chowdhery, Sathiamoorthy, Chen, Mazumder,
Hong & Chi, NeurIPS 2021).

These extend MMoE (`mtl_jax.models.mmoe`, whose expert, gate and mixture helpers they
use). As there, experts are copies of a trunk (or of trunk stages) and gates are linear
layers on the flattened input of their level, as in LibMTL's `CGC`, `PLE` and `DSelect_k`.

Split ("shared" = used by every task):

* CGC: the shared experts are the trunk; each task's own experts, its gate over
  [shared experts, own experts] and its tower are its head. The trunk hands the heads
  the input next to the shared experts' outputs (`MMoETrunk(raw_input=True)`)::

      rep = {"experts": [E_s, B, ...] shared expert outputs, "input": [B, H, W, C]}

* PLE: level 0 is a CGC on the input; level j > 0 runs the same kind of mixture on the
  task's level-(j−1) mixture. Level 0's shared experts are the trunk. Those of the later
  levels run inside every task's branch (on that task's representation) with one set of
  weights: they are a tied head module (`PLE_TIED`, see `MultiTaskModel`), stored once
  under `params["shared"]["shared_experts"]`. Everything else of task t (its experts and
  gates at every level, its tower) is under `params["tasks"][t]`::

      params["shared"]   = {"expert_0", …, "shared_experts": {"level_1": {"expert_0", …}, …}}
      params["tasks"][t] = {"level_0": {"expert_0", …, "gate"}, …, "tower"}

* DSelect-k: MMoE with the DSelect-k gate instead of the softmax gate: the shared
  experts are the trunk (`MMoETrunk`), each task's gate and tower its head.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mtl_jax.models.layers import Dtype
from mtl_jax.models.mmoe import mix_experts, run_experts, softmax_gate

# Name of the tied submodule of every `PLEHead` (the shared experts of levels 1, 2, …).
PLE_TIED = "shared_experts"


def _flatten(x: jax.Array) -> jax.Array:
    return x.reshape(x.shape[0], -1)


class ExpertGroup(nn.Module):
    """`count` copies of `expert` (submodules `expert_{i}`); outputs stacked [count, B, ...]."""

    expert: nn.Module
    count: int

    @nn.compact
    def __call__(self, x, *, train: bool = True):
        return run_experts(self, self.expert, self.count, x, train=train)


class SharedExperts(nn.Module):
    """PLE's shared experts of levels 1 … L−1: `count` copies of each level's template.

    Called once per level, `shared(level, x)`; the experts of level j are `level_{j}`.

    Attributes:
      levels: the templates of levels 1 … L−1 (`levels[j - 1]` is level j's).
      count: shared experts per level, E_s.
    """

    levels: tuple[nn.Module, ...]
    count: int

    @nn.compact
    def __call__(self, level: int, x, *, train: bool = True):
        group = ExpertGroup(self.levels[level - 1], self.count, name=f"level_{level}")
        return group(x, train=train)


class CGCLevel(nn.Module):
    """One customized gate control of task k (PLE paper, Sec. 4, Eqs. 1–3).

    `g^k(x) = w^k(x) S^k(x)`: `S^k(x)` stacks the shared experts' outputs (given) and the
    task's own experts' outputs on x (computed here), in that order as in LibMTL, and
    `w^k(x) = softmax(W^k_g x)` reads the flattened x.

    Attributes:
      expert: the template of the task's experts.
      num_task_experts: E_t, the task's own experts at this level.
      dtype: computation dtype.
    """

    expert: nn.Module
    num_task_experts: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, shared, *, train: bool = True):
        own = run_experts(self, self.expert, self.num_task_experts, x, train=train)
        experts = jax.tree.map(lambda s, o: jnp.concatenate([s, o]), shared, own)
        count = jax.tree.leaves(experts)[0].shape[0]
        gate = softmax_gate(_flatten(x), count, dtype=self.dtype)
        return mix_experts(experts, gate)


class PLEHead(nn.Module):
    """Task k's part of CGC (one level) or PLE (L levels), and its tower.

    Progressive Layered Extraction (Tang et al., RecSys 2020, Sec. 4, Eqs. 5–6):
    `g^{k,j}(x) = w^{k,j}(g^{k,j-1}(x)) S^{k,j}(x)` and `y^k = t^k(g^{k,L-1}(x))`, with
    `g^{k,-1}(x) = x`. As in LibMTL's `PLE`, the shared and the task's experts of level j
    both read the task's previous mixture `g^{k,j-1}`; the paper's extra shared gate (which
    would feed the shared experts a mixture of every task's experts) is not built, so each
    task's experts stay task-owned. With one level this is CGC (Eqs. 1–4).

    Attributes:
      tower: the task's head t^k on its last mixture.
      levels: the expert templates of levels 0 … L−1 (level 0's shared experts are the
        trunk's; the others are `SharedExperts`, tied across heads).
      num_shared_experts: E_s per level.
      num_task_experts: E_t per level.
      dtype: computation dtype.
    """

    tower: nn.Module
    levels: tuple[nn.Module, ...]
    num_shared_experts: int
    num_task_experts: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, rep, *, train: bool = True):
        x, shared = rep["input"], rep["experts"]
        tied = None
        if len(self.levels) > 1:
            tied = SharedExperts(self.levels[1:], self.num_shared_experts, name=PLE_TIED)
        for level, expert in enumerate(self.levels):
            if level > 0:
                shared = tied(level, x, train=train)
            cgc = CGCLevel(expert, self.num_task_experts, self.dtype, name=f"level_{level}")
            x = cgc(x, shared, train=train)
        return self.tower(x, train=train)


# --- DSelect-k -------------------------------------------------------------------------------


def smooth_step(t: jax.Array, gamma: float = 1.0) -> jax.Array:
    """The cubic smooth-step of DSelect-k (Hazimeh et al., 2021, Sec. 3): 0 for t ≤ −γ/2,
    1 for t ≥ γ/2, and `−2/γ³ t³ + 3/(2γ) t + 1/2` in between (continuously
    differentiable; exactly 0 or 1 outside the interval, so a gate can select exactly)."""
    cubic = (-2.0 / gamma**3) * t**3 + (3.0 / (2.0 * gamma)) * t + 0.5
    return jnp.where(t <= -gamma / 2, 0.0, jnp.where(t >= gamma / 2, 1.0, cubic))


def binary_codes(num_experts: int) -> np.ndarray:
    """[E, m] bool, row i the m = ⌈log₂ E⌉-bit binary code of expert i (most significant
    bit first; m ≥ 1)."""
    bits = max(1, int(np.ceil(np.log2(num_experts))))
    shifts = np.arange(bits - 1, -1, -1)
    return ((np.arange(num_experts)[:, None] >> shifts) & 1).astype(bool)


def dselect_k_weights(
    selector_logits: jax.Array, combiner_logits: jax.Array, num_experts: int, gamma: float
) -> jax.Array:
    """The DSelect-k gate (Hazimeh et al., 2021, Sec. 3): weights [B, E] from k single-expert
    selectors.

    Selector i maps its codes z_i ∈ R^m through the smooth-step S and gives code c the
    weight `r_i(z_i)_c = Π_j S(z_ij)^{c_j} (1 − S(z_ij))^{1 − c_j}` (c_j the bits of c): a
    distribution over the 2^m codes that is one-hot once every |z_ij| ≥ γ/2. The gate is
    `q = Σ_i softmax(α)_i r_i(z_i)`, so it lies on the simplex and selects at most k
    experts once the selectors have converged.

    When E is not a power of two, codes c ≥ E name no expert; here code c counts for
    expert c mod E, so every selector stays a distribution over the E experts (one-hot
    when converged). LibMTL and the official code instead drop those codes (the gate then
    sums to less than one) and add `Σ 1/Σ_e r_i(z_i)_e` to the loss to push the selectors
    onto real codes.

    Args:
      selector_logits: z, [B, k, m].
      combiner_logits: α, [B, k].
      num_experts: E.
      gamma: γ of the smooth-step.
    """
    bits = selector_logits.shape[-1]
    codes = jnp.asarray(binary_codes(2**bits))  # [2^m, m]
    steps = smooth_step(selector_logits.astype(jnp.float32), gamma)[:, :, None, :]
    selectors = jnp.where(codes, steps, 1.0 - steps).prod(-1)  # [B, k, 2^m]
    fold = jax.nn.one_hot(np.arange(2**bits) % num_experts, num_experts)  # [2^m, E]
    combiner = jax.nn.softmax(combiner_logits.astype(jnp.float32), axis=-1)
    return jnp.einsum("bk,bkc,ce->be", combiner, selectors, fold)


def _symmetric_uniform(limit: float):
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -limit, limit)

    return init


class DSelectKHead(nn.Module):
    """Task k's DSelect-k gate (per-example: both logits are linear in the flattened input)
    and tower, on MMoE's shared experts (Hazimeh et al., NeurIPS 2021, Sec. 3–4).

    Initialisation as in LibMTL and the official code: the selector layer's weights and
    biases ~ U(±γ/100) (every selector starts in the smooth region, near uniform), the
    combiner's ~ U(±0.05). Unlike LibMTL, whose smooth-step always uses γ = 1 (it only
    scales the initialisation by `kgamma`), γ is also the smooth-step's.

    Not built: the entropy regulariser of the official code (LibMTL backpropagates
    `1e-6 · Σ r log r` inside its forward), which only speeds up the selectors'
    convergence to one-hot.

    Attributes:
      tower: the task's head on the gated mixture.
      num_experts: E (≥ 2), the shared experts.
      k: how many experts the gate selects (at most).
      gamma: γ of the smooth-step.
      dtype: computation dtype.
    """

    tower: nn.Module
    num_experts: int
    k: int = 2
    gamma: float = 1.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, rep, *, train: bool = True):
        x = rep["gate_input"]
        bits = binary_codes(self.num_experts).shape[1]
        selector_init = _symmetric_uniform(self.gamma / 100)
        selector_logits = nn.Dense(
            self.k * bits,
            kernel_init=selector_init,
            bias_init=selector_init,
            dtype=self.dtype,
            name="selector",
        )(x).reshape(x.shape[0], self.k, bits)
        combiner_init = _symmetric_uniform(0.05)
        combiner_logits = nn.Dense(
            self.k,
            kernel_init=combiner_init,
            bias_init=combiner_init,
            dtype=self.dtype,
            name="combiner",
        )(x)
        gate = dselect_k_weights(selector_logits, combiner_logits, self.num_experts, self.gamma)
        return self.tower(mix_experts(rep["experts"], gate), train=train)
