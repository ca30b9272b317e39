"""Vocabulary-parallel softmax cross-entropy for logits sharded inside `shard_map`.

Megatron's pattern without a saved float32 softmax: each device holds a
`[N, V/P]` slice of the logits and the global integer labels. The forward
computes per-shard logsumexp, target logit and smoothing sums, and combines
them with one `pmax` and one `psum` of a stacked `[4, N]` array. Only the
global logsumexp is saved; the backward recomputes the local softmax from the
local logits and needs no collective.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from . import _checks, _labels
from ._linear import _combine_shards, _sum_to, _token_loss
from ._reduce import reduce_loss


class _Config(NamedTuple):
    axis_name: str | tuple[str, ...]
    smoothing: float
    z_loss: float


def _global_classes(cfg, x):
    offset = lax.axis_index(cfg.axis_name) * x.shape[-1]
    return lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1) + offset


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _parallel_ce(cfg, logits, classes, mask, bad):
    return _parallel_ce_fwd(cfg, logits, classes, mask, bad)[0]


def _parallel_ce_fwd(cfg, logits, classes, mask, bad):
    eps = cfg.smoothing
    x = logits.astype(_checks.compute_dtype(logits.dtype))
    onehot = _global_classes(cfg, x) == classes[..., None].astype(jnp.int32)
    lse = jax.nn.logsumexp(x, axis=-1)
    z_y = jnp.sum(jnp.where(onehot, x, 0), axis=-1)
    finite = x > -jnp.inf
    z_sum = jnp.sum(jnp.where(finite, x, 0), axis=-1) if eps else jnp.zeros_like(lse)
    count = jnp.sum(finite, axis=-1, dtype=x.dtype) if eps else jnp.zeros_like(lse)
    lse, z_y, z_sum, count = _combine_shards(lse, (z_y, z_sum, count), cfg.axis_name)
    loss = _token_loss(cfg, lse, z_y, z_sum, count, mask, bad)
    return (loss, mask.astype(x.dtype)), (logits, classes, mask, bad, lse, count)


def _parallel_ce_bwd(cfg, res, cts):
    logits, classes, mask, bad, lse, count = res
    eps = cfg.smoothing
    x = logits.astype(lse.dtype)
    g = jnp.where(bad, jnp.nan, jnp.where(mask, cts[0], 0))[..., None]
    a = 1 + 2 * cfg.z_loss * lse if cfg.z_loss else jnp.ones_like(lse)
    onehot = _global_classes(cfg, x) == classes[..., None].astype(jnp.int32)
    target = jnp.where(onehot, 1 - eps, 0)
    if eps:
        target = target + jnp.where(x > -jnp.inf, eps / count[..., None], 0)
    dx = g * (a[..., None] * jnp.exp(x - lse[..., None]) - target)
    return _sum_to(dx.astype(logits.dtype), logits), None, None, None


_parallel_ce.defvjp(_parallel_ce_fwd, _parallel_ce_bwd)


_STATIC = ("axis_name", "ignore_index", "label_smoothing", "reduction", "z_loss")


@functools.partial(jax.jit, static_argnames=_STATIC)
def vocab_parallel_softmax_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    axis_name: str | tuple[str, ...],
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    where: ArrayLike | None = None,
    reduction: str = "mean",
    denominator: ArrayLike | None = None,
    z_loss: float = 0.0,
) -> jax.Array:
    r"""Softmax cross-entropy with the vocabulary sharded over a mesh axis, inside `shard_map`.

    Each device passes its `[..., V/P]` slice of the logits (shard $p$ holds
    classes $[pV/P, (p+1)V/P)$, found with `lax.axis_index`) and the global
    integer labels. The result equals
    [`softmax_cross_entropy`][jaxce.softmax_cross_entropy] of the full logits:

    $$
    L = \frac{1}{S}\sum_i m_i \Big[(1-\varepsilon)\big(\operatorname{lse}(x_i) - x_{i y_i}\big)
        + \frac{\varepsilon}{K_i}\sum_{c} \big(\operatorname{lse}(x_i) - x_{ic}\big)
        + \zeta \operatorname{lse}(x_i)^2\Big],
    \qquad \operatorname{lse}(x_i) = M_i + \log \sum_p e^{\operatorname{lse}_p(x_i) - M_i},
    $$

    with $M_i = \max_p \operatorname{lse}_p(x_i)$ from one `pmax`, and the
    shard sums (of $e^{\operatorname{lse}_p - M}$, the target logit and the
    smoothing sums) from one `psum` of a `[4, N]` array. The backward
    recomputes $P$ from the local logits and the saved global logsumexp:
    $m_i (P_i - Y_i)/S$ on each shard, with no collective. Reductions run over
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

    Returns:
      The same value on every shard of `axis_name`: a scalar, or per-example
      losses for `"none"`; float32 for half-precision logits.

    Raises:
      TypeError: non-floating `logits`, non-integer `labels`.
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
    eps = _checks.unit_interval("label_smoothing", label_smoothing)
    zeta = _checks.non_negative("z_loss", z_loss)
    _checks.reduction(reduction)
    ignore_index = _checks.integer("ignore_index", ignore_index, optional=True)
    axis = logits.ndim - 1
    classes = _labels.parse(logits, labels, axis, allow_probs=False).classes
    assert classes is not None
    num_classes = logits.shape[-1] * lax.axis_size(axis_name)
    mask, bad = _labels.example_mask(
        classes, logits.shape[:-1], num_classes, ignore_index=ignore_index, where=where
    )
    assert bad is not None
    losses, norm = _parallel_ce(_Config(axis_name, eps, zeta), logits, classes, mask, bad)
    return reduce_loss(losses, norm, reduction, denominator)
