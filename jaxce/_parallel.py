"""Vocabulary-parallel softmax cross-entropy for logits sharded inside `shard_map`.

Megatron's pattern without a saved float32 softmax: each device holds a
`[N, V/P]` slice of the logits and the global integer labels. The loss is the
streamed softmax cross-entropy (`_stream`) of one block, the device's slice:
the forward folds its max, sum of exponentials, target logit and smoothing
sums and combines them over the devices with one `pmax` and one `psum`; only
per-token numbers are saved, and the backward recomputes the local softmax
from the local logits with no collective.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from . import _checks, _labels, _numerics, _stats, _stream
from ._options import entry_point
from ._reduce import reduce_loss


class _Config(NamedTuple):
    axis_name: str | tuple[str, ...]
    compute_dtype: Any
    stats: bool = False  # also output the logsumexp and the argmax class
    axis: int = 1  # the class axis of the [N, V/P] logits


class _Inputs(NamedTuple):
    logits: jax.Array  # [N, V/P], this shard's classes
    classes: jax.Array  # [N], global labels
    weights: jax.Array | None  # [1, V/P], this shard's classes, along the class axis
    smoothing: Any
    z_loss: Any
    softcap: Any  # c, or None: the loss sees z = c tanh(x / c)


def _block(cfg: _Config, inp: _Inputs) -> _stream.Chunk:
    """This shard's logits, one block: a single pass over them needs no loop to stream it."""
    raw = inp.logits.astype(cfg.compute_dtype)
    width = raw.shape[1]
    cols = lax.axis_index(cfg.axis_name) * width + lax.iota(jnp.int32, width)
    start, fresh = jnp.zeros((), jnp.int32), jnp.ones((1, width), bool)
    return _stream.Chunk(raw, _numerics.softcap(raw, inp.softcap), start, cols[None, :], fresh)


def _fold(cfg: _Config, inp: _Inputs, step: Callable, state: Any) -> Any:
    return step(state, _block(cfg, inp))


def _grads(
    cfg: _Config, inp: _Inputs, grads: Callable, rest: Any, refs: tuple
) -> tuple[dict[str, Any], Any]:
    dz, dw, rest = grads(_block(cfg, inp), rest)
    return {"logits": dz, "weights": dw}, rest


_parallel_ce = _stream.cross_entropy_rule(_fold, _grads)


@entry_point(
    static=("axis_name", "ignore_index", "reduction", "return_stats"),
    hyperparameters={
        "label_smoothing": _checks.UNIT,
        "z_loss": _checks.NON_NEGATIVE,
        "logit_softcap": _checks.POSITIVE._replace(optional=True),
    },
    off={"label_smoothing": 0.0, "z_loss": 0.0},
    checks={"return_stats": _checks.flag},
)
def vocab_parallel_softmax_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    axis_name: str | tuple[str, ...],
    weights: ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: ArrayLike = 0.0,
    where: ArrayLike | None = None,
    reduction: str = "mean",
    denominator: ArrayLike | None = None,
    z_loss: ArrayLike = 0.0,
    logit_softcap: ArrayLike | None = None,
    return_stats: bool = False,
    example_weights: ArrayLike | None = None,
    autodiff: str = "reverse",
) -> jax.Array | tuple[jax.Array, _stats.CrossEntropyStats]:
    r"""Softmax cross-entropy with the vocabulary sharded over a mesh axis, inside `shard_map`.

    Each device passes its `[..., V/P]` slice of the logits (shard $p$ holds
    classes $[pV/P, (p+1)V/P)$, found with `lax.axis_index`), the global
    integer labels and, for class weights, its `(V/P,)` slice of them. The
    result equals [`softmax_cross_entropy`][jaxce.softmax_cross_entropy] of
    the full logits (and the full weights $w$, 1 by default):

    $$
    L = \frac{1}{S}\sum_i m_i v_i \Big[(1-\varepsilon)\, w_{y_i}
        \big(\operatorname{lse}(x_i) - x_{i y_i}\big)
        + \frac{\varepsilon}{K_i}\sum_{c} w_c \big(\operatorname{lse}(x_i) - x_{ic}\big)
        + \zeta \operatorname{lse}(x_i)^2\Big],
    \qquad S = \sum_i m_i v_i w_{y_i},
    $$

    $$
    \operatorname{lse}(x_i) = M_i + \log \sum_p e^{M_{ip} - M_i} \sum_{c \in p} e^{x_{ic} - M_{ip}},
    $$

    with each shard's maximum $M_{ip}$ and $M_i = \max_p M_{ip}$ from one
    `pmax`, and the shard sums (the rescaled sums of exponentials, the target
    logit, its class weight and the smoothing sums) from one `psum` of a
    stacked `[k, N]` array, $k \le 6$. The maximum is kept apart from the
    log-sum: $\operatorname{lse}(x_i) - x_{iy_i}$ is computed as
    $(M_i - x_{iy_i}) + \log \sum$, without cancellation. With class
    weights, $S$ needs one more `psum` of $N$ values. The backward recomputes
    $P$ from the local logits and the saved global logsumexp:
    $m_i v_i w_{y_i} (P_i - Y_i)/S$ on each shard (smoothing and z-loss
    included), with no collective. Reductions run over the examples this call
    sees; with examples also sharded over devices, pass the global
    `denominator` (or use `"sum"`) and `psum` the result.

    Args:
      logits: this device's floating logits `(..., V/P)`, classes last.
      labels: global integer class indices in `[0, V)`, shape `logits.shape[:-1]`.
      axis_name: the `shard_map` mesh axis (or axes) the vocabulary is sharded on.
      weights: optional per-class weights, this device's `(V/P,)` slice of
        the `(V,)` vector (`in_specs` `P(axis_name)`), like the logits and like
        the kernel and `weights` of
        [`linear_softmax_cross_entropy`][jaxce.linear_softmax_cross_entropy]
        with `axis_name`: PyTorch's `weight`, as in `softmax_cross_entropy`,
        with an exact gradient (this shard's slice of it).
      ignore_index: integer label whose examples are excluded.
      label_smoothing: $\varepsilon \in [0, 1]$, spread over the classes with a
        finite logit on all shards.
      where: boolean mask broadcastable to `labels.shape`.
      reduction: `"mean"`, `"sum"` or `"none"`.
      denominator: replaces $S$ in `"mean"`.
      z_loss: $\zeta \ge 0$.
      logit_softcap: $c > 0$ or None: the loss sees $c \tanh(x / c)$ instead
        of the logits, as in `softmax_cross_entropy`.
      return_stats: also return a
        [`CrossEntropyStats`][jaxce.CrossEntropyStats] of per-example arrays
        (the global logsumexp, differentiable; the global argmax class; whether
        it is the label), the same on every shard. The shards' maxima ride in
        the forward's `pmax`; the argmax costs one more `pmin` of $N$ indices.
      example_weights: $v$, floating, broadcastable to `labels.shape` (the
        same on every shard of `axis_name`): multiplies each example's loss and
        its share of $S$; 0 is `where=False` (exactly 0; its derivative is its loss).
        Should be non-negative (not checked, not clipped). Their gradient is
        exact and, like the loss, needs no collective beyond the forward's.
      autodiff: `"reverse"` (the default: a `jax.custom_vjp`) or `"forward"`:
        a `jax.custom_jvp` built from the same derivatives, so that `jax.jvp`,
        `jax.jacfwd` and `jax.linearize` work too (reverse mode still does; its
        cost is in the gradient guide).

    Returns:
      The same value on every shard of `axis_name`: a scalar, or per-example
      losses for `"none"`; float32 for half-precision logits. With
      `return_stats`, the pair `(loss, stats)`.

    Raises:
      TypeError: non-floating `logits`, `weights` or `example_weights`,
        non-integer `labels`.
      ValueError: mismatched shapes, `weights` not of length V/P (this
        device's classes), an unknown `reduction`, `label_smoothing` outside
        [0, 1], negative `z_loss`.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jax.sharding import PartitionSpec as P
      >>> import jaxce
      >>> mesh = jax.make_mesh((1,), ("vocab",), axis_types=(jax.sharding.AxisType.Auto,))
      >>> logits = jnp.array([[2.0, 1.0, 0.1, -1.0], [0.0, 5.0, 0.2, 0.3]])
      >>> labels = jnp.array([0, 1])
      >>> loss = jax.shard_map(
      ...     lambda x, y: jaxce.vocab_parallel_softmax_cross_entropy(x, y, axis_name="vocab"),
      ...     mesh=mesh, in_specs=(P(None, "vocab"), P()), out_specs=P(),
      ... )(logits, labels)
      >>> with jnp.printoptions(precision=4):
      ...     print(jnp.stack([loss, jaxce.softmax_cross_entropy(logits, labels)]))
      [0.2365 0.2365]
    """
    logits = _checks.floating("logits", logits)
    if logits.ndim < 1:
        raise ValueError("logits must have at least one dimension (the classes); got a scalar.")
    axis = logits.ndim - 1
    parsed = _labels.parse(logits, labels, axis, allow_probs=False)
    assert parsed.classes is not None
    local_classes = logits.shape[-1]
    weights = _checks.class_vector("weights", weights, local_classes)
    example_shape = logits.shape[:-1]
    v = _labels.per_example_weights(example_weights, example_shape)
    mask, bad = _labels.example_mask(
        parsed.classes,
        example_shape,
        local_classes * lax.axis_size(axis_name),
        ignore_index=ignore_index,
        where=where,
        weights=v,
    )
    n = int(np.prod(example_shape))
    flat = parsed.classes.reshape(n)
    inputs = _Inputs(
        logits.reshape(n, local_classes),
        flat,
        None if weights is None else weights.reshape(1, local_classes),
        label_smoothing,
        z_loss,
        logit_softcap,
    )
    dtype = _checks.compute_dtype(*(x.dtype for x in (logits, weights) if x is not None))
    out = _parallel_ce(
        _Config(axis_name, dtype, return_stats),
        mask.reshape(n),
        None if bad is None else bad.reshape(n),
        inputs,
        None if v is None else jnp.broadcast_to(v, example_shape).reshape(n),
    )
    losses, lse, predicted = out if return_stats else (out, None, None)
    losses = losses.reshape(example_shape)
    norm = _stream.weighted_count(mask, v, weights, parsed.classes, axis_name, losses.dtype)
    loss = reduce_loss(losses, norm, reduction, denominator)
    if lse is None or predicted is None:
        return loss
    lse, predicted = lse.reshape(example_shape), predicted.reshape(example_shape)
    return loss, _stats.finish(lse, predicted, parsed.classes, _labels.kept(mask, v))
