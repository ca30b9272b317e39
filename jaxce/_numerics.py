"""Numerics every loss family shares, each under one name with one meaning.

Log-normalisers, target picks, smoothed targets, `0 * inf = 0` products,
per-class reshapes, and the terms of a softmax cross-entropy's gradient that
its dense and streamed rules share. Pure array functions that know nothing of masks or
reductions; they import only jax and `_sharding`, and every module above may use them.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from . import _sharding


def log_normaliser(
    x: jax.Array, axis: int, *, dtype: Any = None, cap: Any = None
) -> tuple[jax.Array, jax.Array]:
    """The row max `m` (0 where not finite) and `log sum_c exp(x_c - m)`, kept apart (keepdims).

    The sum is `jax.nn.logsumexp`'s, but its two parts are kept apart:
    `log q_c = (x_c - m) - log_sum` loses nothing to cancellation, whereas
    `x_c - logsumexp(x)` loses `|x| * eps` (1e-3 at |x| = 1e4 in float32) to the
    rounding of the logsumexp itself (`test_softmax.py::test_large_offsets_lose_no_precision`).
    The max is taken in `x`'s own dtype (exact), so half-precision logits are
    widened only inside the fused sum. The shift carries no gradient; `log_sum`
    is differentiable to any order. Computed in `dtype`, default `x.dtype`, of
    the soft-capped logits `softcap(x, cap)` (capping is monotone: the max is
    the capped max).
    """
    dtype = x.dtype if dtype is None else dtype
    m = softcap(jnp.max(x, axis=axis, keepdims=True).astype(dtype), cap)
    m = lax.stop_gradient(jnp.where(jnp.isfinite(m), m, 0))
    return m, shifted_log_sum(x, m, axis, dtype, cap)


def shifted_log_sum(
    x: jax.Array, shift: jax.Array, axis: int, dtype: Any, cap: Any = None
) -> jax.Array:
    """`log sum_c exp(z_c - shift)` along `axis` (keepdims) of `z = softcap(x, cap)`, in `dtype`."""
    z = softcap(widen(x, dtype, shift), cap)
    return jnp.log(jnp.sum(jnp.exp(z - shift), axis=axis, keepdims=True))


def target_logit(x: jax.Array, classes: jax.Array, axis: int, dtype: Any) -> jax.Array:
    """`x` at the target class (keepdims), in `dtype`; `-inf` where no class matches.

    A gather of N values (O(N) reads of the logits), unless the class axis is
    split over devices (`classes_split`): then a gather would need the other
    devices' logits, and the pick is `max_c min(x_c, cap_c)` with `cap = +inf`
    at the target and `-inf` elsewhere, exact (also when the target is `-inf`,
    whatever the other logits are) and local to each device: a full pass over
    the logits. The cap comes from `|c - y|` in floating point, exact for
    K <= 2**24, so that pass has no comparison or select; beyond 2**24 classes
    it is the one-hot pick.
    """
    num_classes = x.shape[axis]
    if not classes_split(x, axis):
        # Labels outside [0, K) (negative ones too) pick nothing, like the split path.
        index = jnp.where(classes >= 0, classes, num_classes)
        index = jnp.expand_dims(index, axis)
        # Gathered in x's own dtype, then widened: the gradient is in x's dtype too.
        source = x if x.dtype == dtype else own_read(x, index)
        return _gathered(source, index, axis).astype(dtype)
    if num_classes > 2**24:
        onehot = target_mask(classes, x.shape, axis)
        return jnp.sum(jnp.where(onehot, x, 0), axis=axis, keepdims=True).astype(dtype)
    distance = jnp.abs(
        class_iota(x.ndim, num_classes, axis, dtype) - jnp.expand_dims(classes, axis).astype(dtype)
    )
    cap = (0.5 - distance) * jnp.inf
    return jnp.max(jnp.minimum(x.astype(dtype), cap), axis=axis, keepdims=True)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _gathered(x: jax.Array, index: jax.Array, axis: int) -> jax.Array:
    """`x` at `index` along `axis` (keepdims); `-inf` where the index is out of range."""
    return jnp.take_along_axis(x, index, axis=axis, mode="fill", fill_value=-jnp.inf)


@_gathered.defjvp
def _gathered_jvp(axis: int, primals: tuple, tangents: tuple) -> tuple[jax.Array, jax.Array]:
    # The tangent is picked by a comparison with the class index, not gathered, so
    # the gradient (its transpose) is one select pass writing x's dtype. A gather's
    # transpose is a scatter-add into a zeroed array, which XLA may compute in
    # float32 for half precision (`test_softmax.py::test_nll_gradient_is_a_select`).
    x, index = primals
    onehot = class_iota(x.ndim, x.shape[axis], axis, index.dtype) == index
    return _gathered(x, index, axis), jnp.sum(
        jnp.where(onehot, tangents[0], 0), axis=axis, keepdims=True
    )


def classes_split(x: jax.Array, axis: int) -> bool:
    """Whether `x`'s class axis may be split over devices, so that a gather would not be local.

    True inside `shard_map` (where `x` may be one device's slice of the
    classes) and on an Explicit mesh whose class axis is sharded. Elsewhere a
    gather reads only the N target logits: on one device, on a batch-sharded
    mesh, and on an Auto mesh, whose partitioner compiles it without gathering
    the logits (`tests/test_sharding.py`).
    """
    if _sharding.varying_axes(x):
        return True
    return _sharding.explicit_axes(x, axis % x.ndim)[1] is not None


def widen(x: jax.Array, dtype: Any, partner: jax.Array) -> jax.Array:
    """`x` in the wider `dtype`, converted by the pass that also reads `partner`."""
    return x if x.dtype == dtype else own_read(x, partner).astype(dtype)


def own_read(x: jax.Array, partner: jax.Array) -> jax.Array:
    """`x`, read by the pass that also reads `partner` (its shift, its label indices).

    Two passes that widen the same half-precision logits (a pick and a sum,
    the forward and the backward) would otherwise share one conversion, which
    XLA may materialise: a float32 copy of the whole logits
    (`test_performance.py::test_half_precision_makes_no_wide_copy`). An
    optimization barrier over `x` and a value of this pass alone makes each
    pass's read, and so its conversion, its own.
    """
    return lax.optimization_barrier((x, partner))[0]


def class_iota(ndim: int, num_classes: int, axis: int, dtype: Any) -> jax.Array:
    """The class index along `axis`, shaped to broadcast against an array of rank `ndim`."""
    shape = [1] * ndim
    shape[axis] = num_classes
    return lax.broadcasted_iota(dtype, shape, axis)


def target_mask(classes: jax.Array, shape: tuple[int, ...], axis: int) -> jax.Array:
    """Boolean one-hot of `classes` along `axis`; XLA fuses it into its consumer."""
    iota = class_iota(len(shape), shape[axis], axis, classes.dtype)
    return iota == jnp.expand_dims(classes, axis)


def class_value(vector: jax.Array, classes: jax.Array) -> jax.Array:
    """`vector[classes]` for a per-class vector; 0 for a class outside `[0, K)`.

    An O(N) gather from a K-vector (class weights), not from the logits. On an
    Explicit mesh, where a gather's output sharding is ambiguous, it is an
    O(N K) comparison with the class index instead, local to each device.
    """
    if _sharding.on_explicit_mesh(vector, classes):
        onehot = target_mask(classes, classes.shape + vector.shape, classes.ndim)
        return jnp.sum(jnp.where(onehot, vector, 0), axis=-1)
    # Negative classes too: `take` would count them from the end.
    index = jnp.where(classes >= 0, classes, vector.shape[0])
    return jnp.take(vector, index, mode="fill", fill_value=0)


def along_axis(vector: jax.Array, ndim: int, axis: int) -> jax.Array:
    """A per-class vector reshaped to broadcast against an array of rank `ndim`."""
    shape = [1] * ndim
    shape[axis] = vector.shape[0]
    return vector.reshape(shape)


def sum_to_shape(x: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Sums `x` down to `shape`, which it was broadcast from (a broadcast's transpose)."""
    lead = x.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and x.shape[lead + i] != 1
    )
    return jnp.sum(x, axis=axes, keepdims=True).reshape(shape) if axes else x.reshape(shape)


def times(a: Any, b: jax.Array) -> jax.Array:
    """`a * b` with `0 * inf = 0`: a term with no weight contributes nothing."""
    return jnp.where(a == 0, 0, a * b)


def where_mass(p: jax.Array, value: jax.Array) -> jax.Array:
    """`value` where the target has mass, else 0 (also in every derivative)."""
    return jnp.where(p != 0, value, 0)


def normalised(x: jax.Array, shift: jax.Array, log_sum: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`(q, log q)` of `q = softmax(x)` from its log-normaliser; `log q` is 0 where `q == 0`."""
    log_q = x - shift - log_sum
    q = jnp.exp(log_q)
    return q, where_mass(q, log_q)


def mixture_log_ratios(
    q: jax.Array, log_q: jax.Array, p: jax.Array, log_p: jax.Array, beta: Any
) -> tuple[jax.Array, jax.Array]:
    """`log(q / m)` and `log(p / m)` for `m = beta p + (1 - beta) q`, each 0 where its mass is 0.

    `m` is formed from the probabilities, not in log space: it is 0 only where
    both are (a term with no mass), and a class whose probabilities underflow
    contributes below float32's resolution of the sum either way.
    """
    m = beta * p + (1 - beta) * q
    log_m = jnp.log(jnp.where(m == 0, 1, m))
    return where_mass(q, log_q - log_m), where_mass(p, log_p - log_m)


def log_or_neg_inf(a: jax.Array, log: Any = jnp.log) -> jax.Array:
    """`log(a)` for `a > 0` and `-inf` at 0, with no NaN in either branch."""
    positive = a > 0
    return jnp.where(positive, log(jnp.where(positive, a, 1)), -jnp.inf)


def nan_where(bad: jax.Array | None, x: jax.Array) -> jax.Array:
    """NaN where `bad` (an invalid label), so training shows it at once."""
    return x if bad is None else jnp.where(bad, jnp.nan, x)


def sums(terms: Sequence[jax.Array], axis: int, keepdims: bool = False) -> tuple[jax.Array, ...]:
    """Each of `terms` (broadcast to one shape) summed along `axis`, in one reduction.

    One variadic reduction reads the elementwise producers of all its terms
    in one loop; separate `jnp.sum`s of producers that share inputs can make
    the compiler keep those producers, each as large as the terms, in memory
    (`tests/test_performance.py`). For cheap terms (selects, products): with
    costly ones the one loop can be the slower (KL's logarithms took 1.7x the
    time of two sums), so each use is timed in `make bench`.
    """
    shape = jnp.broadcast_shapes(*(jnp.shape(t) for t in terms))
    axis = axis % len(shape)
    out = _sums(tuple(jnp.broadcast_to(t, shape) for t in terms), axis)
    return tuple(jnp.expand_dims(x, axis) for x in out) if keepdims else out


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _sums(terms: tuple[jax.Array, ...], axis: int) -> tuple[jax.Array, ...]:
    zeros = tuple(jnp.zeros((), t.dtype) for t in terms)
    return tuple(lax.reduce(terms, zeros, lambda a, b: tuple(map(jnp.add, a, b)), (axis,)))


@_sums.defjvp
def _sums_jvp(axis: int, primals: tuple, tangents: tuple) -> tuple:
    # Linear, so also transposable (a generic reduction is not): a sum per tangent.
    (terms,), (dterms,) = primals, tangents
    return _sums(terms, axis), tuple(jnp.sum(t, axis) for t in dterms)


def finite_classes(x: jax.Array, axis: int) -> tuple[jax.Array, jax.Array]:
    """Which classes receive smoothing mass (finite logit), and how many per example."""
    finite = x > -jnp.inf
    return finite, jnp.sum(finite, axis=axis, keepdims=True).astype(x.dtype)


def smoothed(
    probs: jax.Array, eps: Any, finite: jax.Array | None, count: jax.Array | None
) -> jax.Array:
    """`(1 - eps) p + eps / K'` on the `K'` finite classes; `p` itself when `eps` is None."""
    if eps is None:
        return probs
    assert finite is not None and count is not None
    return (1 - eps) * probs + jnp.where(finite, eps / count, 0)


def softcap(z: jax.Array, cap: Any) -> jax.Array:
    """`cap * tanh(z / cap)`, Gemma 2's logit soft-capping; `z` itself when `cap` is None."""
    return z if cap is None else cap * jnp.tanh(z / cap)


def through_softcap(dz: jax.Array, raw: jax.Array, z: jax.Array, cap: Any):
    """From the cotangent of `z = softcap(raw, cap)`: those of `raw` and, per element, of `cap`.

    `dz/draw = 1 - tanh^2` and `dz/dcap = tanh - (raw / cap)(1 - tanh^2)`, with
    `tanh = z / cap`; the caller sums the second over what `cap` was broadcast to.
    """
    tanh = z / cap
    slope = 1 - tanh**2
    return dz * slope, times(dz, tanh - raw / cap * slope)


def row_through_softcap(
    dz: jax.Array, raw: jax.Array, z: jax.Array, cap: Any, axis: int
) -> tuple[jax.Array, jax.Array | None]:
    """`through_softcap` with the cap's cotangent summed over the classes on `axis`
    (keepdims): one per example. `(dz, None)` when `cap` is None."""
    if cap is None:
        return dz, None
    d_raw, d_cap = through_softcap(dz, raw, z, cap)
    return d_raw, jnp.sum(d_cap, axis, keepdims=True)


def logit_scale(
    w_y: Any, smoothing: Any, mean_weight: jax.Array | None, z_loss: Any, lse: jax.Array
) -> Any:
    """`a` in a softmax cross-entropy's `d loss / d x_c = a P_c - t_c`.

    With `t = (1 - eps) w_y Y + eps / K' w_c [x_c finite]`, `a = sum_c t_c`
    `= (1 - eps) w_y + eps mean_w` (`mean_w`, the mean class weight over the
    finite classes, 1 without class weights), plus `2 zeta lse` with a z-loss.
    """
    a = w_y
    if smoothing is not None:
        a = (1 - smoothing) * w_y + smoothing * (1 if mean_weight is None else mean_weight)
    if z_loss is not None:
        a = a + 2 * z_loss * lse
    return a


def smoothing_spread(x: jax.Array, smoothing: Any, count: Any, w: Any) -> jax.Array:
    """`eps / K' w_c [x_c finite]`: the smoothing part of a cross-entropy's target `t`
    (`w = 1` when None)."""
    return smoothing / count * jnp.where(x > -jnp.inf, 1 if w is None else w, 0)


def class_weight_grad(
    onehot: jax.Array,
    nll: jax.Array,
    smoothing: Any,
    count: Any,
    finite: Any,
    nll_c: Any,
) -> jax.Array:
    """`d loss / d w_c = (1 - eps) nll [c = y] + eps / K' (lse - x_c) [x_c finite]` of a
    softmax cross-entropy, with `nll = lse - x_y` and `nll_c = lse - x_c`."""
    d = jnp.where(onehot, nll if smoothing is None else (1 - smoothing) * nll, 0)
    if smoothing is not None:
        d = d + smoothing / count * jnp.where(finite, nll_c, 0)
    return d
