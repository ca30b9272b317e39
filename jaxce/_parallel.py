"""Vocabulary-parallel softmax cross-entropy for logits sharded inside `shard_map`.

Megatron's pattern without a saved float32 softmax: each device holds a
`[N, V/P]` slice of the logits and the global integer labels. The forward
computes per-shard logsumexp, target logit and smoothing sums, and combines
them with one `pmax` and one `psum` of a stacked `[4, N]` array. Only the
global logsumexp is saved; the backward recomputes the local softmax from the
local logits and needs no collective.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from . import _checks, _labels, _numerics, _sharding, _stats
from ._options import entry_point
from ._reduce import reduce_loss
from ._rule import per_example_rule


class _Config(NamedTuple):
    axis_name: str | tuple[str, ...]
    axis: int  # the class axis, last
    stats: bool = False  # also output the logsumexp and the argmax class


class _Inputs(NamedTuple):
    logits: jax.Array  # this shard's classes
    classes: jax.Array  # global labels
    smoothing: Any
    z_loss: Any
    softcap: Any  # c, or None: the loss sees z = c tanh(x / c)


class _Residuals(NamedTuple):
    lse: jax.Array  # global, over all shards
    num_finite: Any  # global count of finite logits (smoothing only)
    target: jax.Array
    mean_logit: Any  # mean of the finite logits (smoothing only)


def _is_target(cfg, inp, x):
    offset = lax.axis_index(cfg.axis_name) * x.shape[-1]
    iota = lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1) + offset
    return iota == inp.classes[..., None].astype(jnp.int32)


def _parallel_ce_fwd(cfg: _Config, inp: _Inputs) -> tuple[Any, _Residuals]:
    eps = inp.smoothing
    x = _numerics.softcap(inp.logits.astype(_checks.compute_dtype(inp.logits.dtype)), inp.softcap)
    lse = jax.nn.logsumexp(x, axis=-1)
    target = jnp.sum(jnp.where(_is_target(cfg, inp, x), x, 0), axis=-1)
    sums: tuple[jax.Array, ...] = (target,)
    if eps is not None:
        finite = x > -jnp.inf
        sums += (jnp.sum(jnp.where(finite, x, 0), axis=-1), jnp.sum(finite, -1, dtype=x.dtype))
    tops: tuple[jax.Array, ...] = ()
    if cfg.stats:
        offset = lax.axis_index(cfg.axis_name) * x.shape[-1]
        local = (jnp.max(x, axis=-1), jnp.argmax(x, axis=-1).astype(jnp.int32) + offset)
        tops = local[:1]
    combined = _sharding.combine_shards(lse, sums, cfg.axis_name, tops)
    if cfg.stats:
        predicted = _stats.shard_argmax(*local, combined[-1], cfg.axis_name)
        combined = combined[:-1]
    lse, target, *rest = (s[..., None] for s in combined)
    count = mean = None
    if eps is not None:
        z_sum, count = rest
        mean = z_sum / count
    loss = _numerics.token_cross_entropy(lse, target, eps, mean, inp.z_loss)
    residuals = _Residuals(lse, count, target, mean)
    if cfg.stats:
        return (loss, lse, predicted[..., None]), residuals
    return loss, residuals


def _parallel_ce_bwd(cfg: _Config, inp: _Inputs, res: _Residuals, g: jax.Array) -> tuple[Any, ...]:
    eps = inp.smoothing
    g, g_lse = (g[0], g[1]) if cfg.stats else (g, None)
    raw = inp.logits.astype(res.lse.dtype)
    x = _numerics.softcap(raw, inp.softcap)
    a = 1 if inp.z_loss is None else 1 + 2 * inp.z_loss * res.lse
    onehot = _is_target(cfg, inp, x)
    if eps is None:
        target = onehot.astype(x.dtype)
    else:
        target = jnp.where(onehot, 1 - eps, 0) + jnp.where(x > -jnp.inf, eps / res.num_finite, 0)
    probs = jnp.exp(x - res.lse)
    dx = g * (a * probs - target)
    if g_lse is not None:
        dx = dx + g_lse * probs  # d lse / d x = P
    d_eps = None if eps is None else g * (res.target - res.mean_logit)
    d_zeta = None if inp.z_loss is None else g * res.lse**2
    # Summed over this shard's classes; the skeleton sums it over the shards.
    dx, d_cap = _numerics.row_through_softcap(dx, raw, x, inp.softcap, -1)
    return dx, None, d_eps, d_zeta, d_cap


_parallel_ce = per_example_rule(_parallel_ce_fwd, _parallel_ce_bwd)


@entry_point(
    static=("axis_name", "ignore_index", "reduction", "return_stats"),
    hyperparameters={
        "label_smoothing": _checks.UNIT,
        "z_loss": _checks.NON_NEGATIVE,
        "logit_softcap": _checks.POSITIVE._replace(optional=True),
    },
    checks={"return_stats": _checks.flag},
)
def vocab_parallel_softmax_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    axis_name: str | tuple[str, ...],
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
    classes $[pV/P, (p+1)V/P)$, found with `lax.axis_index`) and the global
    integer labels. The result equals
    [`softmax_cross_entropy`][jaxce.softmax_cross_entropy] of the full logits:

    $$
    L = \frac{1}{S}\sum_i m_i v_i \Big[(1-\varepsilon)\big(\operatorname{lse}(x_i) - x_{i y_i}\big)
        + \frac{\varepsilon}{K_i}\sum_{c} \big(\operatorname{lse}(x_i) - x_{ic}\big)
        + \zeta \operatorname{lse}(x_i)^2\Big],
    \qquad S = \sum_i m_i v_i,
    $$

    $$
    \operatorname{lse}(x_i) = M_i + \log \sum_p e^{\operatorname{lse}_p(x_i) - M_i},
    $$

    with $M_i = \max_p \operatorname{lse}_p(x_i)$ from one `pmax`, and the
    shard sums (of $e^{\operatorname{lse}_p - M}$, the target logit and the
    smoothing sums) from one `psum` of a `[4, N]` array. The backward
    recomputes $P$ from the local logits and the saved global logsumexp:
    $m_i v_i (P_i - Y_i)/S$ on each shard, with no collective. Reductions run over
    the examples this call sees; with examples also sharded over devices,
    pass the global `denominator` (or use `"sum"`) and `psum` the result.

    Args:
      logits: this device's floating logits `(..., V/P)`, classes last.
      labels: global integer class indices in `[0, V)`, shape `logits.shape[:-1]`.
      axis_name: the `shard_map` mesh axis (or axes) the vocabulary is sharded on.
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
      TypeError: non-floating `logits` or `example_weights`, non-integer `labels`.
      ValueError: mismatched shapes, an unknown `reduction`, `label_smoothing`
        outside [0, 1], negative `z_loss`.

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
    num_classes = logits.shape[-1] * lax.axis_size(axis_name)
    v = _labels.per_example_weights(example_weights, logits.shape[:-1])
    mask, bad = _labels.example_mask(
        parsed.classes,
        logits.shape[:-1],
        num_classes,
        ignore_index=ignore_index,
        where=where,
        weights=v,
    )
    inputs = _Inputs(logits, parsed.classes, label_smoothing, z_loss, logit_softcap)
    out = _parallel_ce(_Config(axis_name, axis, return_stats), mask, bad, inputs, v)
    losses, lse, predicted = out if return_stats else (out, None, None)
    norm = _labels.weighted_count(mask, v, losses.dtype)
    loss = reduce_loss(losses, norm, reduction, denominator)
    if lse is None or predicted is None:
        return loss
    return loss, _stats.finish(lse, predicted, parsed.classes, _labels.kept(mask, v))
