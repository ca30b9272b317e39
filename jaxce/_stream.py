"""The streamed softmax: per-row statistics folded over blocks of classes, combined over shards.

A streamed loss never holds a row of its logits at once. Its source hands it
`[N, chunk]` blocks of consecutive classes (`Chunk`: chunks of `h W` in a fused
head, a device's columns of given logits in the vocabulary-parallel loss); each
is folded into per-row statistics and dropped. A softmax (`Softmax`) keeps a
running max and the sums of `exp(z_c - max)` and of values weighted by them,
rescaled whenever the max grows: one `exp` per logit, and the max kept apart
from the log-sum, so that two normalisers, or a normaliser and a logit, are
subtracted without cancellation (`test_large_offsets_lose_no_precision` in
`test_linear.py` and `test_linear_distill.py`). `Argmax` keeps the running
argmax. Over vocabulary shards, `combine` merges them all with one `pmax` of
the maxima and one `psum` of the rescaled sums (one `pmin` more for an
argmax).

The cross-entropy of a source of blocks (`cross_entropy_rule`) folds the
logsumexp, the target logit, its class weight and the smoothing sums, and
saves only per-row numbers; its backward asks the source for each block again
and hands back `d loss / d z = a P - t` for it, which the source turns into its
inputs' cotangents.

Imports `_labels`, `_numerics`, `_stats` and `_rule`; the family modules use it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from . import _labels, _numerics, _stats
from ._rule import cotangents, per_example_rule


class Chunk(NamedTuple):
    """A block `[N, chunk]` of logits of consecutive classes, and where it sits."""

    raw: jax.Array  # the logits before capping, in the compute dtype
    z: jax.Array  # the logits the loss sees, after capping
    start: jax.Array  # the first column, in this device's classes
    cols: jax.Array  # [1, chunk] global class index of each column
    fresh: jax.Array  # [1, chunk] columns not already counted by the previous block
    kernel: Any = None  # the kernel slice a fused head computed the block from

    def classes(self, vector: jax.Array | None) -> jax.Array | None:
        """This block's slice of a per-class vector (this device's classes, `[V]` or
        `[1, V]`), `[1, chunk]`."""
        if vector is None:
            return None
        width = self.cols.shape[1]
        return lax.dynamic_slice_in_dim(vector, self.start, width, axis=-1).reshape(1, width)


def is_target(classes: jax.Array, block: Chunk) -> jax.Array:
    """`[N, chunk]`: whether each column is its row's label."""
    return block.cols == classes[:, None].astype(block.cols.dtype)


def at_target(classes: jax.Array, block: Chunk, values: jax.Array) -> jax.Array:
    """`[N]`: `values` at each row's label if this block counts it first, else 0."""
    hit = is_target(classes, block) & block.fresh
    return jnp.sum(jnp.where(hit, values, 0), axis=1)


class Softmax(NamedTuple):
    """A softmax over the columns streamed so far, one `[N]` array per statistic.

    `top` is the running max of its logits (-inf until a finite one),
    `total = sum_c exp(z_c - top)`, and `sums` hold `sum_c exp(z_c - top) v_c`
    for each value `v` it averages. A block with a larger max rescales them all
    by `exp(top_old - top_new)`.
    """

    top: jax.Array
    total: jax.Array
    sums: tuple[jax.Array, ...] = ()

    @classmethod
    def empty(cls, n: int, dtype: Any, num_sums: int = 0) -> Softmax:
        zeros = jnp.zeros((n,), dtype)
        return cls(jnp.full((n,), -jnp.inf, dtype), zeros, (zeros,) * num_sums)

    def normaliser(self) -> tuple[jax.Array, jax.Array]:
        """The shift (the max; 0 if not finite) and `log sum_c exp(z_c - shift)`, each `[N, 1]`."""
        return _finite(self.top)[:, None], jnp.log(self.total)[:, None]

    def mean(self, i: int) -> jax.Array:
        """`sum_c softmax(z)_c v_c` of the `i`-th value, `[N, 1]`."""
        return (self.sums[i] / self.total)[:, None]


def _finite(top: jax.Array) -> jax.Array:
    return jnp.where(jnp.isfinite(top), top, 0)


def _rescale(top: jax.Array, new_top: jax.Array) -> jax.Array:
    """`exp(top - new_top)`, the worth of a sum shifted by `top`; 0 while `top` is -inf."""
    return jnp.where(top == -jnp.inf, 0, jnp.exp(top - _finite(new_top)))


def fold(state: Softmax, z: jax.Array, block: Chunk, values: tuple[jax.Array, ...] = ()) -> Softmax:
    """Adds a block's fresh logits `z [N, chunk]` (and its `values`, `[N, chunk]` each).

    A value counts nothing where its weight `exp(z_c - top)` is 0 (`0 log 0 = 0`),
    whatever it holds there (inf, NaN).
    """
    z = jnp.where(block.fresh, z, -jnp.inf)
    top = lax.stop_gradient(jnp.maximum(state.top, jnp.max(z, axis=1)))
    scale = _rescale(state.top, top)
    e = jnp.exp(z - _finite(top)[:, None])
    sums = tuple(
        _numerics.times(scale, s) + jnp.sum(_numerics.times(e, v), axis=1)
        for s, v in zip(state.sums, values, strict=True)
    )
    return Softmax(top, state.total * scale + jnp.sum(e, axis=1), sums)


class Argmax(NamedTuple):
    """The running max of the logits streamed so far and its class (ties to the lowest), `[N]`."""

    top: jax.Array
    argmax: jax.Array

    @classmethod
    def empty(cls, n: int, dtype: Any) -> Argmax:
        return cls(jnp.full((n,), -jnp.inf, dtype), jnp.zeros((n,), jnp.int32))

    def fold(self, z: jax.Array, block: Chunk) -> Argmax:
        """Adds a block's fresh logits `z [N, chunk]`."""
        z = jnp.where(block.fresh, z, -jnp.inf)
        return Argmax(*_stats.running_argmax(self, z, block.cols[0, 0]))


def combine(
    states: tuple[Softmax | Argmax | None, ...], sums: tuple[jax.Array | None, ...], axis_name: Any
) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """Running states and plain sums over every vocabulary shard: one `pmax`, one `psum`.

    The `pmax` takes every state's max, the `psum` the softmaxes' rescaled
    sums and the plain `sums`; an argmax costs one `pmin` more. Each comes back
    in its place, a None as None.
    """
    present = [state for state in states if state is not None]
    # The maxima are shifts, whose derivative cancels: stopped before the `pmax`, which
    # has no derivative, so that forward mode (a `custom_jvp`) passes it too.
    tops = lax.pmax(lax.stop_gradient(jnp.stack([state.top for state in present])), axis_name)
    parts: list[jax.Array] = []
    for state, top in zip(present, tops, strict=True):
        if isinstance(state, Softmax):
            scale = _rescale(state.top, top)
            parts += [state.total * scale, *(_numerics.times(scale, x) for x in state.sums)]
    parts += [x for x in sums if x is not None]
    total, top_of = iter(lax.psum(jnp.stack(parts), axis_name) if parts else ()), iter(tops)

    def combined(state: Softmax | Argmax) -> Softmax | Argmax:
        top = next(top_of)
        if isinstance(state, Argmax):
            return Argmax(top, _stats.shard_argmax(state.top, state.argmax, top, axis_name))
        return Softmax(top, next(total), tuple(next(total) for _ in state.sums))

    states = tuple(None if state is None else combined(state) for state in states)
    return states, tuple(None if x is None else next(total) for x in sums)


def weighted_count(
    mask: jax.Array,
    example_weights: jax.Array | None,
    weights: jax.Array | None,
    classes: jax.Array,
    axis_name: Any,
    dtype: Any,
) -> jax.Array:
    """`m_i v_i w_{y_i}`, each example's share of a cross-entropy's `"mean"` denominator.

    `mask`, `example_weights` and the labels `classes` have the examples'
    shape (or broadcast to it); over vocabulary shards the class `weights` are
    this shard's, and `w_y` costs one `psum` of `N` values.
    """
    norm = _labels.weighted_count(mask, example_weights, dtype)
    if weights is None:
        return norm
    weights = weights.astype(dtype)
    if axis_name is None:
        return norm * _numerics.class_value(weights, classes)
    offset = (lax.axis_index(axis_name) * weights.shape[0]).astype(classes.dtype)
    return norm * lax.psum(_numerics.class_value(weights, classes - offset), axis_name)


# The cross-entropy of a source of blocks.


class Statistics(NamedTuple):
    """A cross-entropy's per-row statistics over the columns streamed so far, `[N]` each."""

    softmax: Softmax  # lse = shift + log total
    best: Argmax | None  # the predicted class (statistics only)
    target: jax.Array  # z_y
    w_y: jax.Array | None  # the target's class weight (class weights only)
    finite_sum: jax.Array | None  # sum_c w_c z_c over the classes with a finite logit (smoothing)
    num_finite: jax.Array | None  # K', those classes (smoothing only)
    w_sum: jax.Array | None  # sum_c w_c over those classes (smoothing with class weights)

    @classmethod
    def empty(
        cls, n: int, dtype: Any, *, weights: bool, smoothing: bool, argmax: bool
    ) -> Statistics:
        def zeros(on: bool) -> Any:
            return jnp.zeros((n,), dtype) if on else None

        best = Argmax.empty(n, dtype) if argmax else None
        smooth = (zeros(smoothing), zeros(smoothing), zeros(smoothing and weights))
        return cls(Softmax.empty(n, dtype), best, zeros(True), zeros(weights), *smooth)

    def fold(self, block: Chunk, classes: jax.Array, w_c: jax.Array | None) -> Statistics:
        """Adds a block of logits; `w_c [1, chunk]` its class weights, or None."""
        z = block.z
        best = None if self.best is None else self.best.fold(z, block)
        hit = is_target(classes, block) & block.fresh
        terms = {"target": jnp.where(hit, z, 0)}
        if self.w_y is not None and w_c is not None:
            terms["w_y"] = jnp.where(hit, w_c, 0)
        if self.finite_sum is not None and self.num_finite is not None:
            finite = block.fresh & (z > -jnp.inf)
            terms["finite_sum"] = jnp.where(finite, _times(w_c, z), 0)
            terms["num_finite"] = finite.astype(self.num_finite.dtype)
            if self.w_sum is not None and w_c is not None:
                terms["w_sum"] = jnp.where(finite, w_c, 0)
        # The row sums in one reduction (`_numerics.sums`: no [N, chunk] term is kept).
        added = _numerics.sums([x.astype(z.dtype) for x in terms.values()], axis=1)
        sums = {name: getattr(self, name) + x for name, x in zip(terms, added, strict=True)}
        return self._replace(softmax=fold(self.softmax, z, block), best=best, **sums)

    def combine(self, axis_name: Any) -> Statistics:
        """The statistics over every vocabulary shard."""
        (softmax, best), sums = combine((self.softmax, self.best), self[2:], axis_name)
        return Statistics(softmax, best, *sums)


def _times(w: jax.Array | None, x: jax.Array) -> jax.Array:
    return x if w is None else w * x


class Residuals(NamedTuple):
    lse: jax.Array  # [N, 1], over the whole vocabulary, after capping
    nll: jax.Array  # lse - z_y
    w_y: Any  # the target's class weight (class weights only)
    num_finite: Any  # K', the classes with a finite logit (smoothing only)
    smooth: Any  # (1 / K') sum_c w_c (lse - z_c) over those classes (smoothing only)
    mean_weight: Any  # (1 / K') sum_c w_c over those classes (smoothing with class weights)


def _residuals(stats: Statistics) -> Residuals:
    shift, log_sum = stats.softmax.normaliser()
    lse = shift + log_sum
    # (shift - z_y) + log_sum: no cancellation between the normaliser and the target.
    nll = (shift - stats.target[:, None]) + log_sum
    w_y = None if stats.w_y is None else stats.w_y[:, None]
    count = smooth = mean_weight = None
    if stats.num_finite is not None and stats.finite_sum is not None:
        count = stats.num_finite[:, None]
        if stats.w_sum is not None:
            mean_weight = stats.w_sum[:, None] / count
        smooth = _times(mean_weight, lse) - stats.finite_sum[:, None] / count
    return Residuals(lse, nll, w_y, count, smooth, mean_weight)


def _loss(res: Residuals, smoothing: Any, z_loss: Any) -> jax.Array:
    """`(1 - eps) w_y (lse - z_y) + eps (1 / K') sum_c w_c (lse - z_c) + zeta lse^2`."""
    loss = _times(res.w_y, res.nll)
    if smoothing is not None:
        loss = (1 - smoothing) * loss + smoothing * res.smooth
    if z_loss is not None:
        loss = loss + z_loss * res.lse**2
    return loss


def cross_entropy_rule(blocks: Callable, backward: Callable) -> Callable:
    """The streamed softmax cross-entropy rule of a source of blocks.

    The rule's inputs have fields `classes [N]` (global labels), `weights`
    (this device's per-class weights, or None), `smoothing`, `z_loss` and
    `softcap`, and the source's own; its `cfg` has `axis_name` (the mesh
    axes sharding the vocabulary, or None), `compute_dtype`, `stats` (also
    output each row's logsumexp and argmax class) and `axis` (1).

    Args:
      blocks: `blocks(cfg, inp, step, state) -> state`, which folds each of
        the source's blocks in with `state = step(state, block)`.
      backward: `backward(cfg, inp, grads, rest, refs) -> (cotangents, rest)`,
        which calls `dz, dw, rest = grads(block, rest)` for each block again
        (`dz` and `dw`, `[N, chunk]`: the cotangent of its logits, before
        capping, and of its class weights, per row) and returns its own
        inputs' cotangents by name (`_rule.cotangents`) and the final `rest`;
        `refs` are arrays a loop's carry must vary like.

    Returns:
      `rule(cfg, mask, bad, inputs, example_weights=None)` of
      `_rule.per_example_rule`, `[N]` losses (with `cfg.stats`, also the
      logsumexp and the argmax class).
    """

    def fwd(cfg: Any, inp: Any) -> tuple[Any, Residuals]:
        n, eps, w = inp.classes.shape[0], inp.smoothing, inp.weights
        stats = Statistics.empty(
            n,
            cfg.compute_dtype,
            weights=w is not None,
            smoothing=eps is not None,
            argmax=cfg.stats,
        )
        stats = blocks(
            cfg, inp, lambda s, block: s.fold(block, inp.classes, block.classes(w)), stats
        )
        if cfg.axis_name is not None:
            stats = stats.combine(cfg.axis_name)
        res = _residuals(stats)
        loss = _loss(res, eps, inp.z_loss)
        if stats.best is None:
            return loss, res
        return (loss, res.lse, stats.best.argmax[:, None]), res

    def bwd(cfg: Any, inp: Any, res: Residuals, g: Any) -> Any:
        eps, cap = inp.smoothing, inp.softcap
        g, g_lse = (g[0], g[1]) if cfg.stats else (g, None)
        w_y: Any = 1 if res.w_y is None else res.w_y
        a = _numerics.logit_scale(w_y, eps, res.mean_weight, inp.z_loss, res.lse)

        def grads(block: Chunk, d_cap: Any) -> tuple[jax.Array, Any, Any]:
            # d loss / d z_c = a P_c - t_c, t = (1 - eps) w_y Y + eps / K' w_c [z_c finite].
            z, w_c = block.z, block.classes(inp.weights)
            onehot = is_target(inp.classes, block)
            probs = jnp.exp(z - res.lse)
            t = jnp.where(onehot, w_y if eps is None else (1 - eps) * w_y, 0)
            if eps is not None:
                t = t + _numerics.smoothing_spread(z, eps, res.num_finite, w_c)
            dz = g * (a * probs - t)
            if g_lse is not None:
                dz = dz + g_lse * probs  # d lse / d z = P
            dw = None
            if w_c is not None:
                dw = g * _numerics.class_weight_grad(
                    onehot, res.nll, eps, res.num_finite, z > -jnp.inf, res.lse - z
                )
            if cap is not None:
                dz, d_cap_c = _numerics.through_softcap(dz, block.raw, z, cap)
                d_cap = d_cap + jnp.sum(jnp.where(block.fresh, d_cap_c, 0), axis=1)
            return dz, dw, d_cap

        d_cap = None if cap is None else jnp.zeros(inp.classes.shape, res.lse.dtype)
        refs = tuple(jax.tree.leaves((g, g_lse, res)))
        own, d_cap = backward(cfg, inp, grads, d_cap, refs)
        d_eps = None if eps is None else g * (res.smooth - w_y * res.nll)
        d_zeta = None if inp.z_loss is None else g * res.lse**2
        d_cap = None if d_cap is None else d_cap[:, None]
        return cotangents(inp, **own, smoothing=d_eps, z_loss=d_zeta, softcap=d_cap)

    return per_example_rule(fwd, bwd)
