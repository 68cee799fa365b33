"""Per-task saliency: gradient × input, integrated gradients and Grad-CAM.

Each method explains one scalar per example, `f(x)` [B], of an image batch x [B, H, W, C].
The library functions take that scalar function; `task_saliency` builds one per task of
a `MultiTaskModel` (`task_scalar` says which scalar) and runs every method on each.

* gradient × input: `x ⊙ ∂f/∂x` (exact for a linear f: `w ⊙ x`).
* integrated gradients (Sundararajan et al., ICML 2017, Eq. 1):
  `IG_i(x) = (x_i − x'_i) ∫₀¹ ∂f(x' + α (x − x'))/∂x_i dα` from the baseline x' (default:
  the black image, all zeros), by a Riemann sum over `steps` intervals of α: the
  `"midpoint"` rule (default; α_k = (k − ½)/m, k = 1..m, m gradient evaluations) or the
  `"trapezoid"` rule (α_k = k/m, k = 0..m, end points weighted ½, m + 1 evaluations).
  Completeness, `Σ_i IG_i = f(x) − f(x')` (the paper's Proposition 1), holds up to the
  quadrature error, which shrinks with the steps; `TaskSaliency.completeness` reports it.
* Grad-CAM (Selvaraju et al., ICCV 2017, Eq. 1–2) on a feature map A [B, h, w, K]:
  `α_k = (1/Z) Σ_ij ∂f/∂A^k_ij` and `L = ReLU(Σ_k α_k A^k)` [B, h, w].

Per-example gradients come from one gradient of `Σ_b f(x)_b`, so `f` must treat the
examples of a batch independently — true of a model in evaluation mode (BatchNorm with
running averages, no dropout), which is how `task_saliency` runs it.

Which feature map Grad-CAM uses (`last_spatial_layer`): the trunk is run once under
`flax.linen.intercept_methods`, recording the output of every module method it calls
(the trunk itself included) in the order the calls *return*; the map is the last
recorded output that is a 4-D array [B, h, w, K] — the last spatial feature map computed
by the shared trunk. For LeNet that is `Conv_1`'s output (8 × 8 × 20; the pooling and
flattening after it are not modules); for a trunk whose own output is a feature map
(SeedCNN, SmallResNet without pooling) it is that output. Its gradient is taken by
adding a zero perturbation to that module output (the trunk itself is not changed), and a
trunk with no 4-D module output raises a ValueError.

Example:
    >>> import jax.numpy as jnp
    >>> w = jnp.array([[1.0, -2.0, 3.0]])
    >>> f = lambda x: jnp.sum(w * x, axis=-1)  # linear: one scalar per example
    >>> x = jnp.array([[2.0, 1.0, 1.0]])
    >>> gradient_x_input(f, x).tolist()
    [[2.0, -2.0, 3.0]]
    >>> ig = integrated_gradients(f, x, steps=4)
    >>> float(ig.sum()), float(f(x)[0] - f(jnp.zeros_like(x))[0])  # completeness
    (3.0, 3.0)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mtl_jax.models import MultiTaskModel
from mtl_jax.tasks import BinaryLabels, Boundary, Classification, Segmentation, Task

Array = jax.Array
ScalarFn = Callable[[Array], Array]  # a batch [B, ...] -> one scalar per example [B]

METHODS = ("gradient_x_input", "integrated_gradients", "grad_cam")
RULES = ("midpoint", "trapezoid")


def input_gradient(f: ScalarFn, x: Array) -> Array:
    """`∂f(x)_b/∂x_b` for every example b, shaped like x (f must keep examples apart)."""
    return jax.grad(lambda inputs: jnp.sum(f(inputs)))(x)


def gradient_x_input(f: ScalarFn, x: Array) -> Array:
    """Gradient × input attributions `x ⊙ ∂f/∂x`, shaped like x [B, ...].

    Args:
      f: maps a batch [B, ...] to one scalar per example [B].
      x: the batch explained.
    """
    return x * input_gradient(f, x)


def riemann_nodes(steps: int, rule: str = "midpoint") -> tuple[np.ndarray, np.ndarray]:
    """The α nodes and weights of the integrated-gradients sum (weights sum to 1).

    Raises:
      ValueError: `steps` < 1 or an unknown `rule` (one of `RULES`).
    """
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if rule == "midpoint":
        return (np.arange(steps) + 0.5) / steps, np.full(steps, 1.0 / steps)
    if rule == "trapezoid":
        weights = np.full(steps + 1, 1.0 / steps)
        weights[[0, -1]] *= 0.5
        return np.arange(steps + 1) / steps, weights
    raise ValueError(f"rule must be one of {list(RULES)}, got {rule!r}")


def integrated_gradients(
    f: ScalarFn,
    x: Array,
    *,
    baseline: Array | None = None,
    steps: int = 256,
    rule: str = "midpoint",
) -> Array:
    """Integrated gradients of `f` at `x` from `baseline` (Sundararajan et al. 2017, Eq. 1).

    The path integral is a Riemann sum over `steps` intervals (`rule`: see the module
    docstring); the gradients along the path are accumulated by `lax.scan`, so memory
    does not grow with `steps`.

    Args:
      f: maps a batch [B, ...] to one scalar per example [B].
      x: the batch explained.
      baseline: the reference input, shaped like x; None = zeros (a black image).
      steps: intervals of the sum (the midpoint rule evaluates `steps` gradients, the
        trapezoid rule `steps + 1`).
      rule: `"midpoint"` or `"trapezoid"`.

    Returns:
      Attributions shaped like x; their sum over an example approximates
      `f(x) − f(baseline)` (completeness).
    """
    alphas, weights = riemann_nodes(steps, rule)
    baseline = jnp.zeros_like(x) if baseline is None else jnp.asarray(baseline, x.dtype)
    delta = x - baseline

    def accumulate(total, node):
        alpha, weight = node
        return total + weight * input_gradient(f, baseline + alpha * delta), None

    nodes = (jnp.asarray(alphas, x.dtype), jnp.asarray(weights, x.dtype))
    total, _ = jax.lax.scan(accumulate, jnp.zeros_like(x), nodes)
    return delta * total


def grad_cam(features: Array, gradients: Array) -> Array:
    """Grad-CAM maps (Selvaraju et al. 2017, Eq. 1–2) from a feature map and its gradient.

    Args:
      features: A [B, h, w, K], the feature map.
      gradients: `∂y/∂A` [B, h, w, K] of the explained scalar y of each example.

    Returns:
      `ReLU(Σ_k α_k A^k)` [B, h, w], with `α_k = mean_ij ∂y/∂A^k_ij` (Eq. 1, Z = h·w).
    """
    if features.ndim != 4 or features.shape != gradients.shape:
        raise ValueError(
            f"grad_cam needs a feature map [B, h, w, K] and its gradient of the same shape, "
            f"got {features.shape} and {gradients.shape}"
        )
    alphas = jnp.mean(gradients, axis=(1, 2), keepdims=True)  # [B, 1, 1, K]
    return jax.nn.relu(jnp.sum(alphas * features, axis=-1))


# ---------------------------------------------------------------------------------------
# The trunk's last spatial feature map, found and perturbed through flax's interceptors.


class SpatialLayer(NamedTuple):
    """A trunk module output used by Grad-CAM.

    Attributes:
      index: position of the call among the trunk's recorded module calls (return order).
      path: the module's scope path (`()` = the trunk itself).
      method: the module method called (usually `"__call__"`).
      shape: the output shape [B, h, w, K].
    """

    index: int
    path: tuple[str, ...]
    method: str
    shape: tuple[int, ...]

    @property
    def name(self) -> str:
        """`"Conv_1"`, `"BasicBlock_2/_ConvBN_1"`, or `"<trunk output>"` for the trunk."""
        return "/".join(self.path) or "<trunk output>"


def module_outputs(fn: Callable[..., Any], *args: Any) -> list[tuple[tuple[str, ...], str, Any]]:
    """`(scope path, method, output)` of every Flax module method `fn(*args)` calls, in
    the order the calls return (`setup` left out). `fn` is traced abstractly
    (`jax.eval_shape`): outputs are `jax.ShapeDtypeStruct` pytrees."""
    calls: list[tuple[tuple[str, ...], str, Any]] = []

    def record(next_fun, call_args, call_kwargs, context):
        out = next_fun(*call_args, **call_kwargs)
        scope = context.module.scope
        if context.method_name != "setup" and scope is not None:
            shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), out)
            calls.append((tuple(scope.path), context.method_name, shapes))
        return out

    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)), args)
    with nn.intercept_methods(record):
        jax.eval_shape(fn, *abstract)
    return calls


def last_spatial_layer(
    model: MultiTaskModel, variables: Mapping[str, Any], image: Array
) -> SpatialLayer:
    """The trunk's last 4-D module output (see the module docstring for the rule).

    Raises:
      ValueError: no module of the trunk returns a [B, h, w, K] array (naming what the
        trunk's modules return).
    """
    params, stats = variables["params"]["shared"], variables["batch_stats"]["shared"]
    calls = module_outputs(
        lambda p, s, x: model.apply_shared(p, s, x, train=False)[0], params, stats, image
    )
    for index in reversed(range(len(calls))):
        path, method, out = calls[index]
        if isinstance(out, jax.ShapeDtypeStruct) and len(out.shape) == 4:
            return SpatialLayer(index, path, method, tuple(out.shape))
    seen = sorted(
        {
            f"{'/'.join(p) or '<trunk>'}: {getattr(o, 'shape', type(o).__name__)}"
            for p, _, o in calls
        }
    )
    raise ValueError(
        "Grad-CAM needs a spatial feature map, but no module of the trunk "
        f"{type(model.trunk).__name__} returns a 4-D [B, h, w, K] array; its modules return "
        f"{seen[:8]}"
    )


def _perturbed_representation(model, params, stats, image, layer: SpatialLayer, delta):
    """The trunk's representation with `delta` added to `layer`'s output, and that
    output (before the addition)."""
    state = {"count": 0, "features": None}

    def perturb(next_fun, call_args, call_kwargs, context):
        out = next_fun(*call_args, **call_kwargs)
        if context.method_name == "setup" or context.module.scope is None:
            return out
        index = state["count"]
        state["count"] += 1
        if index == layer.index:
            state["features"] = out
            out = out + delta.astype(out.dtype)
        return out

    with nn.intercept_methods(perturb):
        rep, _ = model.apply_shared(params, stats, image, train=False)
    if state["features"] is None:  # the trace differs from the one the layer came from
        raise ValueError(f"the trunk did not call {layer.name!r} as when the layer was found")
    return rep, state["features"]


# ---------------------------------------------------------------------------------------
# What is explained per task, and every method on every task of a model.


def task_scalar(task: Task, pred: Array, reference: Array | None = None) -> Array:
    """The scalar explained per example [B] for `task`'s prediction `pred` [B, ...].

    The class or sign chosen per example (per pixel for segmentation) is that of
    `reference`, the prediction on the explained images (default: `pred` itself), and is
    held fixed: along the integrated-gradients path and at the baseline the same logits
    are followed, so the explained function is one function of the input, and no
    gradient flows through the choice.

    * `Classification`: the logit of the predicted (arg-max) class;
    * `Segmentation`: the mean over pixels of the predicted class's logit;
    * `BinaryLabels` (binary / multi-label): `Σ_l s_l z_l` with `s_l = +1` where label l
      is predicted positive (`z_l > 0`) and −1 otherwise: the logit of the predicted
      outcome of every label (positive labels' evidence for, negative ones' against); a
      single binary label gets its predicted outcome's logit, never a zero scalar;
    * every other task (boundary, depth, normals, regression, a user's task): the mean
      of the prediction over all its non-batch axes — for `Boundary`, the mean edge
      logit over pixels.
    """
    pred = pred.astype(jnp.float32)
    reference = jax.lax.stop_gradient(pred if reference is None else reference)
    if isinstance(task, (Classification, Segmentation)):
        chosen = jnp.argmax(reference, axis=-1)[..., None]
        logit = jnp.take_along_axis(pred, chosen, axis=-1)[..., 0]
        return jnp.mean(logit.reshape(logit.shape[0], -1), axis=1)
    if isinstance(task, BinaryLabels):
        sign = jnp.where(reference > 0, 1.0, -1.0)
        return jnp.sum((sign * pred).reshape(pred.shape[0], -1), axis=1)
    return jnp.mean(pred.reshape(pred.shape[0], -1), axis=1)


def describe_scalar(task: Task) -> str:
    """A one-line description of `task_scalar` for `task` (saved with the maps)."""
    if isinstance(task, Segmentation):
        return "mean over pixels of the predicted class's logit"
    if isinstance(task, Classification):
        return "logit of the predicted class"
    if isinstance(task, BinaryLabels):
        return "sum over labels of the predicted outcome's logit (+z if z > 0 else -z)"
    if isinstance(task, Boundary):
        return "mean over pixels of the edge logit"
    return "mean of the prediction over pixels and channels"


class TaskSaliency(NamedTuple):
    """Every method's maps for every task, on one batch of images.

    Attributes:
      maps: `{method: {task: attributions}}`; `gradient_x_input` and
        `integrated_gradients` are shaped like the images [N, H, W, C], `grad_cam` is
        [N, h, w] on the feature map of `layer`.
      layer: the Grad-CAM feature map (None when Grad-CAM was not run).
      scalars: `{task: f(x)}` [N], the explained scalars (`task_scalar`).
      baseline_scalars: `{task: f(baseline)}` [N] (the black image by default), with the
        classes and signs chosen on the images.
    """

    maps: dict[str, dict[str, np.ndarray]]
    layer: SpatialLayer | None
    scalars: dict[str, np.ndarray]
    baseline_scalars: dict[str, np.ndarray]

    def completeness(self) -> dict[str, dict[str, float]]:
        """`{task: {"max_abs_error", "max_relative_error"}}` of integrated gradients:
        `|Σ IG − (f(x) − f(baseline))|`, over the examples (relative to |f(x) − f(x')|)."""
        out = {}
        for name, ig in self.maps.get("integrated_gradients", {}).items():
            total = np.asarray(ig, np.float64).reshape(ig.shape[0], -1).sum(axis=1)
            gap = np.asarray(self.scalars[name], np.float64) - self.baseline_scalars[name]
            error = np.abs(total - gap)
            out[name] = {
                "max_abs_error": float(error.max()),
                "max_relative_error": float((error / np.maximum(np.abs(gap), 1e-12)).max()),
            }
        return out


def task_functions(
    model: MultiTaskModel,
    tasks: Mapping[str, Task],
    names: Sequence[str] | None = None,
) -> dict[str, Callable[..., Array]]:
    """`{task: f(variables, images, reference=None) -> [B]}`: the explained scalar of each
    task (`task_scalar`, its choices taken from the prediction `reference`) through the
    whole model in evaluation mode."""
    names = list(model.task_names if names is None else names)
    unknown = sorted(set(names) - set(model.task_names))
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; the model's tasks: {list(model.task_names)}")

    def scalar_of(name):
        def f(variables, images, reference=None):
            return task_scalar(tasks[name], _predict(model, variables, images, name), reference)

        return f

    return {name: scalar_of(name) for name in names}


def _predict(model: MultiTaskModel, variables, images: Array, name: str) -> Array:
    """Task `name`'s prediction in evaluation mode."""
    params, stats = variables["params"], variables["batch_stats"]
    rep, _ = model.apply_shared(params["shared"], stats["shared"], images, train=False)
    pred, _ = model.apply_head(name, params["tasks"][name], stats["tasks"][name], rep, train=False)
    return pred


def task_grad_cam(
    model: MultiTaskModel,
    tasks: Mapping[str, Task],
    variables: Mapping[str, Any],
    images: Array,
    name: str,
    layer: SpatialLayer,
) -> Array:
    """Grad-CAM [B, h, w] of task `name`'s scalar on the trunk output `layer`."""
    params, stats = variables["params"], variables["batch_stats"]

    def scalar_sum(delta):
        rep, features = _perturbed_representation(
            model, params["shared"], stats["shared"], images, layer, delta
        )
        pred, _ = model.apply_head(
            name, params["tasks"][name], stats["tasks"][name], rep, train=False
        )
        return jnp.sum(task_scalar(tasks[name], pred)), features

    zeros = jnp.zeros(layer.shape, jnp.float32)
    gradients, features = jax.grad(scalar_sum, has_aux=True)(zeros)
    return grad_cam(features.astype(jnp.float32), gradients)


def task_saliency(
    model: MultiTaskModel,
    tasks: Mapping[str, Task],
    variables: Mapping[str, Any],
    images: Array,
    *,
    names: Sequence[str] | None = None,
    methods: Sequence[str] = METHODS,
    steps: int = 256,
    rule: str = "midpoint",
    baseline: Array | None = None,
) -> TaskSaliency:
    """Gradient × input, integrated gradients and Grad-CAM of every task's scalar.

    Args:
      model: the multi-task model (run in evaluation mode).
      tasks: its tasks by name (they decide the scalar, `task_scalar`).
      variables: `{"params", "batch_stats"}`.
      images: [N, H, W, C] float images, as the model takes them.
      names: the tasks explained (default: all, sorted).
      methods: which of `METHODS` to run (all by default); `maps` has those keys.
      steps: intervals of `integrated_gradients`.
      rule: its Riemann rule (`RULES`).
      baseline: its reference input; None = the black image.

    Raises:
      ValueError: Grad-CAM is asked for and the trunk has no spatial feature map
        (`last_spatial_layer`), or invalid `methods`, `steps` or `rule`.
    """
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not methods:
        raise ValueError(f"methods must be among {list(METHODS)}, got {list(methods)}")
    methods = tuple(m for m in METHODS if m in methods)
    riemann_nodes(steps, rule)  # validates before anything is traced
    images = jnp.asarray(images, jnp.float32)
    baseline = jnp.zeros_like(images) if baseline is None else jnp.asarray(baseline, jnp.float32)
    layer = last_spatial_layer(model, variables, images) if "grad_cam" in methods else None
    functions = task_functions(model, tasks, names)

    @functools.partial(jax.jit, static_argnames="name")
    def explain_one(variables, images, baseline, *, name):
        reference = _predict(model, variables, images, name)  # fixes classes and signs

        def f(x):
            return functions[name](variables, x, reference)

        run = {
            "gradient_x_input": lambda: gradient_x_input(f, images),
            "integrated_gradients": lambda: integrated_gradients(
                f, images, baseline=baseline, steps=steps, rule=rule
            ),
            "grad_cam": lambda: task_grad_cam(model, tasks, variables, images, name, layer),
        }
        out = {method: run[method]() for method in methods}
        return {**out, "scalar": f(images), "baseline_scalar": f(baseline)}

    maps: dict[str, dict[str, np.ndarray]] = {method: {} for method in methods}
    scalars, baseline_scalars = {}, {}
    for name in functions:
        out = jax.device_get(explain_one(variables, images, baseline, name=name))
        for method in methods:
            maps[method][name] = np.asarray(out[method])
        scalars[name] = np.asarray(out["scalar"])
        baseline_scalars[name] = np.asarray(out["baseline_scalar"])
    return TaskSaliency(maps, layer, scalars, baseline_scalars)


# ---------------------------------------------------------------------------------------
# Where the tasks look: overlap of their maps.


def magnitude(attribution: np.ndarray) -> np.ndarray:
    """Per-pixel attribution magnitude [N, H, W]: `|a|` summed over channels for image
    attributions [N, H, W, C]; Grad-CAM maps [N, h, w] (already ≥ 0) are returned as is."""
    attribution = np.abs(np.asarray(attribution, np.float64))
    return attribution.sum(axis=-1) if attribution.ndim == 4 else attribution


def map_cosines(a: np.ndarray, b: np.ndarray) -> list[float | None]:
    """Cosine similarity per image of two tasks' `magnitude` maps [N, ...] (flattened);
    None for an image where either map is all zero (no direction to compare)."""
    a = magnitude(a).reshape(len(a), -1)
    b = magnitude(b).reshape(len(b), -1)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = np.sum(a * b, axis=1)
    return [float(d / n) if n > 0 else None for d, n in zip(dots, norms, strict=True)]


def overlap(maps: Mapping[str, np.ndarray]) -> dict[str, dict[str, dict[str, Any]]]:
    """`{task_a: {task_b: {"mean", "std", "images", "per_image"}}}` for every pair a < b
    (sorted names) of one method's maps: the cosine of the tasks' `magnitude` maps per
    image, and its mean and (population) std over the images where both maps are nonzero
    (`images` counts them; mean and std are None when there is none). 1 = the tasks look
    at the same pixels in the same proportions; 0 = at disjoint pixels."""
    names = sorted(maps)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            per_image = map_cosines(maps[a], maps[b])
            defined = np.array([c for c in per_image if c is not None])
            out.setdefault(a, {})[b] = {
                "mean": float(defined.mean()) if defined.size else None,
                "std": float(defined.std()) if defined.size else None,
                "images": int(defined.size),
                "per_image": per_image,
            }
    return out
