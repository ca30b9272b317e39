"""Softmax cross-entropy with an analytic backward, NLL, label smoothing, softmax.

The forward keeps only the per-example logsumexp (and a few other per-example
numbers) for the backward; the backward recomputes `P = exp(x - lse)` from the
logits in one fused pass and writes `(P - Y) * w / S` directly, so no N x K
probability matrix is ever stored between the two.

With integer labels the forward makes two fused passes over the N x K logits:
the target logit, read with a capped maximum rather than a gather (which would
not stay local on a class-sharded mesh) or a one-hot sum (which XLA:CPU writes
out as an N x K temporary), and the sum of exponentials shifted by it. The
backward is a third pass that selects the target's entry instead of
subtracting a one-hot array.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from . import _checks, _labels
from ._options import LossOptions
from ._reduce import reduce_loss


class _Config(NamedTuple):
    axis: int
    smoothing: float
    z_loss: float


def log_normaliser(x: jax.Array, axis: int, *, dtype: Any = None) -> tuple[jax.Array, jax.Array]:
    """The row max `m` (0 where not finite) and `log sum_c exp(x_c - m)`, kept apart (keepdims).

    `log q_c = (x_c - m) - log_sum` loses nothing to cancellation, whereas
    `x_c - lse(x)` loses `|x| * eps` (1e-3 at |x| = 1e4 in float32) to the
    rounding of `lse` itself. The max is taken in `x`'s own dtype (exact), so
    half-precision logits are widened only inside the fused sum. The shift
    carries no gradient; `log_sum` is differentiable to any order. Computed in
    `dtype`, default `x.dtype`.
    """
    dtype = x.dtype if dtype is None else dtype
    m = jnp.max(x, axis=axis, keepdims=True)
    m = lax.stop_gradient(jnp.where(jnp.isfinite(m), m, 0).astype(dtype))
    return m, _log_sum(x, m, axis, dtype)


def _log_sum(x: jax.Array, shift: jax.Array, axis: int, dtype: Any) -> jax.Array:
    return jnp.log(jnp.sum(jnp.exp(x.astype(dtype) - shift), axis=axis, keepdims=True))


def logsumexp(x: jax.Array, axis: int, *, dtype: Any = None) -> jax.Array:
    """Stable logsumexp along `axis`, keepdims; a row of all `-inf` gives `-inf`.

    Same formula and derivatives as `jax.nn.logsumexp`; see `log_normaliser`.
    """
    m, log_sum = log_normaliser(x, axis, dtype=dtype)
    return m + log_sum


def _target_logit(x: jax.Array, classes: jax.Array, axis: int, dtype: Any) -> jax.Array:
    """`x` at the target class (keepdims), in `dtype`; `-inf` where no class matches.

    `max_c min(x_c, cap_c)` with `cap = +inf` at the target and `-inf` elsewhere
    is exactly the target logit (also when it is `-inf`, and whatever the other
    logits are). The cap comes from `|c - y|` in floating point, exact for
    K <= 2**24, so the whole pass is one fused reduction without a comparison,
    a select or a gather; beyond 2**24 classes it falls back to the one-hot pick.
    """
    num_classes = x.shape[axis]
    if num_classes > 2**24:
        return _labels.pick(x, _labels.target_mask(classes, x.shape, axis), axis).astype(dtype)
    shape = [1] * x.ndim
    shape[axis] = num_classes
    distance = jnp.abs(
        lax.broadcasted_iota(dtype, shape, axis) - jnp.expand_dims(classes, axis).astype(dtype)
    )
    cap = (0.5 - distance) * jnp.inf
    return jnp.max(jnp.minimum(x.astype(dtype), cap), axis=axis, keepdims=True)


def _class_sum(x: jax.Array, axis: int) -> jax.Array:
    """Sums over every axis but the class axis (a per-class gradient)."""
    return jnp.sum(x, axis=tuple(a for a in range(x.ndim) if a != axis))


def _nan_where(bad: jax.Array | None, x: jax.Array) -> jax.Array:
    return x if bad is None else jnp.where(bad, jnp.nan, x)


def _smoothing_support(x: jax.Array, axis: int) -> tuple[jax.Array, jax.Array]:
    """Classes that receive smoothing mass (finite logit) and how many per example."""
    finite = x > -jnp.inf
    return finite, jnp.sum(finite, axis=axis, keepdims=True).astype(x.dtype)


# Integer class labels.


def _class_normaliser(logits, classes, axis, dtype):
    """`(shift, log_sum, nll)` (keepdims) with `lse = shift + log_sum`, in two fused passes.

    The shift is the target logit, so `nll = log sum_c exp(x_c - x_y)` exactly,
    a sum that is at least 1, with no separate pass for the row maximum. Only if
    some row overflows (a logit more than ~88 above its target's in float32) or
    is not finite does the batch take the max-shifted path (two more passes).
    """
    target = _target_logit(logits, classes, axis, dtype)
    shift = lax.stop_gradient(jnp.where(jnp.isfinite(target), target, 0))
    log_sum = _log_sum(logits, shift, axis, dtype)
    shift, log_sum = lax.cond(
        jnp.all(jnp.isfinite(log_sum)),
        lambda: (shift, log_sum),
        lambda: log_normaliser(logits, axis, dtype=dtype),
    )
    # (shift - x_y) + log_sum: exact in the common path, no cancellation in either.
    return shift, log_sum, (shift - target) + log_sum


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _class_ce(cfg, logits, classes, weights, mask, bad):
    return _class_ce_fwd(cfg, logits, classes, weights, mask, bad)[0]


def _class_ce_fwd(cfg, logits, classes, weights, mask, bad):
    axis, eps = cfg.axis, cfg.smoothing
    dtype = _checks.compute_dtype(logits.dtype, *([] if weights is None else [weights.dtype]))
    m = jnp.expand_dims(mask, axis)
    shift, log_sum, nll = _class_normaliser(logits, classes, axis, dtype)
    lse = shift + log_sum
    w = None if weights is None else _labels.along_axis(weights.astype(dtype), logits.ndim, axis)
    if w is None:
        w_y = jnp.ones_like(lse)
    else:
        w_y = _target_logit(jnp.broadcast_to(w, logits.shape), classes, axis, dtype)
        w_y = jnp.where(w_y == -jnp.inf, 0, w_y)  # no target class: a masked example
    loss = (1 - eps) * w_y * nll
    count = w_sum = None
    if eps:
        x = logits.astype(dtype)
        finite, count = _smoothing_support(x, axis)
        spread = jnp.where(finite, (shift - x) + log_sum, 0)
        if w is None:
            w_sum = count
        else:
            w_sum = jnp.sum(jnp.where(finite, w, 0), axis=axis, keepdims=True)
            spread = w * spread
        loss = loss + eps / count * jnp.sum(spread, axis=axis, keepdims=True)
    if cfg.z_loss:
        loss = loss + cfg.z_loss * lse**2
    loss = _nan_where(jnp.expand_dims(bad, axis), jnp.where(m, loss, 0))
    norm = jnp.where(m, w_y, 0)
    out = (jnp.squeeze(loss, axis), jnp.squeeze(norm, axis))
    return out, (logits, classes, weights, mask, bad, shift, log_sum, nll, w_y, count, w_sum)


def _class_ce_bwd(cfg, res, cts):
    logits, classes, weights, mask, bad, shift, log_sum, nll, w_y, count, w_sum = res
    axis, eps = cfg.axis, cfg.smoothing
    x = logits.astype(shift.dtype)
    m = jnp.expand_dims(mask, axis)
    g, h = (jnp.expand_dims(c, axis) for c in cts)
    g = _nan_where(jnp.expand_dims(bad, axis), jnp.where(m, g, 0))
    onehot = _labels.target_mask(classes, x.shape, axis)
    w = None if weights is None else _labels.along_axis(weights.astype(x.dtype), x.ndim, axis)
    # d loss_i / d x_ic = a_i P_ic - t_ic, with t = (1 - eps) w_y Y + eps / K'_i w_c [x_ic finite].
    a = (1 - eps) * w_y
    t_y = (1 - eps) * w_y
    spread = 0
    if eps:
        finite = x > -jnp.inf
        a = a + eps * w_sum / count
        t_y = t_y + jnp.where(nll < jnp.inf, eps / count * w_y, 0)
        spread = eps / count * jnp.where(finite, 1 if w is None else w, 0)
    if cfg.z_loss:
        a = a + 2 * cfg.z_loss * (shift + log_sum)
    # exp(x - lse), not exp((x - shift) - log_sum): XLA:CPU runs this form about 15%
    # faster. P then carries the rounding of lse, at most |lse| * eps relative: the
    # same as rounding the logits themselves does, so nothing a float32 input holds is lost.
    dense = a * jnp.exp(x - (shift + log_sum)) - spread
    # At the target, a P_y - t_y = a expm1(-nll) + (a - t_y): no cancellation as P_y -> 1,
    # and a select (not a subtraction of a one-hot) in the one fused pass.
    at_target = a * jnp.expm1(-nll) + (a - t_y)
    dx = jnp.where(m, g * jnp.where(onehot, at_target, dense), 0).astype(logits.dtype)
    dw = None
    if weights is not None:
        per_class = jnp.where(onehot, (1 - eps) * g * nll + h, 0)
        if eps:
            per_class = per_class + g * eps / count * jnp.where(finite, (shift - x) + log_sum, 0)
        dw = _class_sum(jnp.where(m, per_class, 0), axis).astype(weights.dtype)
    return dx, None, dw, None, None


_class_ce.defvjp(_class_ce_fwd, _class_ce_bwd)


# Probability labels.


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _prob_ce(cfg, logits, probs, weights, mask):
    return _prob_ce_fwd(cfg, logits, probs, weights, mask)[0]


def _smoothed_targets(cfg, x, probs, weights, count=None):
    """`w_c * q_c` with `q = (1 - eps) p + eps / K'` on the finite classes.

    `count` is `K'` per example when already known (the backward reuses the
    forward's, saving a pass over the logits).
    """
    axis, eps = cfg.axis, cfg.smoothing
    q = probs.astype(x.dtype)
    if eps:
        finite = x > -jnp.inf
        if count is None:
            count = jnp.sum(finite, axis=axis, keepdims=True).astype(x.dtype)
        q = (1 - eps) * q + jnp.where(finite, eps / count, 0)
    w = None if weights is None else _labels.along_axis(weights.astype(x.dtype), x.ndim, axis)
    return q, (q if w is None else w * q), w


def _prob_ce_fwd(cfg, logits, probs, weights, mask):
    axis = cfg.axis
    dtypes = [logits.dtype, probs.dtype] + ([] if weights is None else [weights.dtype])
    x = logits.astype(_checks.compute_dtype(*dtypes))
    m = jnp.expand_dims(mask, axis)
    shift, log_sum = log_normaliser(x, axis)
    count = _smoothing_support(x, axis)[1] if cfg.smoothing else None
    _, wq, _ = _smoothed_targets(cfg, x, probs, weights, count)
    # 0 * log 0 = 0: a class with no target mass contributes nothing, even at -inf.
    nll = (shift - x) + log_sum
    loss = jnp.sum(jnp.where(wq != 0, wq * nll, 0), axis=axis, keepdims=True)
    wq_sum = jnp.sum(wq, axis=axis, keepdims=True)
    if cfg.z_loss:
        loss = loss + cfg.z_loss * (shift + log_sum) ** 2
    loss = jnp.where(m, loss, 0)
    out = (jnp.squeeze(loss, axis), mask.astype(x.dtype))
    return out, (logits, probs, weights, mask, shift, log_sum, wq_sum, count)


def _prob_ce_bwd(cfg, res, cts):
    logits, probs, weights, mask, shift, log_sum, wq_sum, count = res
    axis, eps = cfg.axis, cfg.smoothing
    x = logits.astype(shift.dtype)
    m = jnp.expand_dims(mask, axis)
    g = jnp.where(m, jnp.expand_dims(cts[0], axis), 0)
    q, wq, w = _smoothed_targets(cfg, x, probs, weights, count)
    a = wq_sum + (2 * cfg.z_loss * (shift + log_sum) if cfg.z_loss else 0)
    dx = jnp.where(m, g * (a * jnp.exp(x - (shift + log_sum)) - wq), 0).astype(logits.dtype)
    nll = (shift - x) + log_sum
    dprobs = (1 - eps) * g * (nll if w is None else w * nll)
    # A -inf logit with no target mass is a masked class: zero gradient there too,
    # rather than the +inf one-sided derivative of 0 * log 0.
    masked_class = (q == 0) & (x == -jnp.inf)
    dprobs = jnp.where(m & ~masked_class, dprobs, 0).astype(probs.dtype)
    dw = None
    if weights is not None:
        per_class = jnp.where(q != 0, g * q * nll, 0)
        dw = _class_sum(jnp.where(m, per_class, 0), axis).astype(weights.dtype)
    return dx, dprobs, dw, None


_prob_ce.defvjp(_prob_ce_fwd, _prob_ce_bwd)


_CE_STATIC = ("axis", "ignore_index", "label_smoothing", "reduction", "z_loss")


@functools.partial(jax.jit, static_argnames=_CE_STATIC)
def softmax_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    axis: int = -1,
    weights: ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    where: ArrayLike | None = None,
    reduction: str = "mean",
    denominator: ArrayLike | None = None,
    z_loss: float = 0.0,
) -> jax.Array:
    r"""Softmax cross-entropy between logits and class labels or probabilities.

    With integer labels $y_i$, mask $m_i$ (0 where ignored or `where` is
    False) and class weights $w$, the `"mean"` loss is PyTorch's

    $$
    L = \frac{1}{S}\sum_i m_i \Big[(1-\varepsilon)\, w_{y_i}\big(\ell_i - x_{i y_i}\big)
        + \frac{\varepsilon}{K_i}\sum_{c} w_c \big(\ell_i - x_{ic}\big)
        + \zeta\, \ell_i^2\Big],
    \qquad S = \sum_i m_i w_{y_i},
    $$

    where $\ell_i = \log\sum_c e^{x_{ic}}$ and the smoothing sum runs over the
    $K_i$ classes whose logit is finite (a `-inf` logit marks a masked class
    and gets no smoothing mass). With floating labels $p$ (same shape as the
    logits) the loss of example $i$ is $\sum_c w_c \tilde p_{ic}(\ell_i - x_{ic})$ with
    $\tilde p = (1-\varepsilon)p + \varepsilon/K_i$, and $S = \sum_i m_i$.
    If no example counts, the mean is 0 with zero gradient.

    The gradient is analytic (a `jax.custom_vjp`): for integer labels without
    smoothing it is $m_i w_{y_i}(P_i - Y_i)/S$ with $P = \operatorname{softmax}(x)$.
    It is exact for the logits, probability labels and `weights`, and
    differentiable again (`jax.hessian`, `grad(grad)`); forward mode (`jvp`)
    is not supported by `jax.custom_vjp`.

    Args:
      logits: floating array with the classes on `axis`, e.g. `(N, K)` or
        PyTorch's `(N, K, d1, ...)` with `axis=1`.
      labels: integer class indices, shape = logits shape without `axis`; or
        floating probabilities with the logits' shape.
      axis: the class axis.
      weights: per-class weights, shape `(K,)`.
      ignore_index: integer label whose examples are excluded (integer labels
        only). Other labels outside `[0, K)` give NaN; under
        `jax.experimental.checkify` they raise an error naming the label.
      label_smoothing: $\varepsilon \in [0, 1]$.
      where: boolean mask broadcastable to the examples' shape; False excludes
        an example like `ignore_index`.
      reduction: `"mean"`, `"sum"` or `"none"` (per example, 0 where excluded).
      denominator: replaces $S$ in `"mean"`, e.g. the token count of a whole
        global batch when the loss is summed over micro-batches or hosts.
      z_loss: $\zeta \ge 0$, coefficient of the $\operatorname{lse}^2$
        penalty (PaLM); masked like the loss, not multiplied by class weights.

    Returns:
      A scalar, or per-example losses for `"none"`; float32 for half-precision
      logits, otherwise the logits' floating type.

    Raises:
      TypeError: integer logits, labels that are neither integer nor floating,
        a non-boolean `where`.
      ValueError: mismatched shapes, `weights` not of length K, an unknown
        `reduction`, `label_smoothing` outside [0, 1], negative `z_loss`,
        `ignore_index` with probability labels.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxce
      >>> logits = jnp.array([[2.0, 1.0, 0.1], [0.0, 5.0, 0.2]])
      >>> labels = jnp.array([0, 1])
      >>> print(f"{jaxce.softmax_cross_entropy(logits, labels):.4f}")
      0.2159
      >>> with jnp.printoptions(precision=4):
      ...     print(jaxce.softmax_cross_entropy(logits, labels, reduction="none"))
      [0.417  0.0149]
    """
    eps = _checks.unit_interval("label_smoothing", label_smoothing)
    zeta = _checks.non_negative("z_loss", z_loss)
    _checks.reduction(reduction)
    args = _labels.multiclass(
        logits, labels, axis=axis, ignore_index=ignore_index, where=where, weights=weights
    )
    losses, norm = per_example(_Config(args.axis, eps, zeta), args)
    return reduce_loss(losses, norm, reduction, denominator)


def per_example(cfg: _Config, args: _labels.Multiclass) -> tuple[jax.Array, jax.Array]:
    """Per-example cross-entropy and its normaliser, for integer or probability labels."""
    if args.labels.classes is not None:
        return _class_ce(cfg, args.logits, args.labels.classes, args.weights, args.mask, args.bad)
    return _prob_ce(cfg, args.logits, args.labels.probs, args.weights, args.mask)


@functools.partial(jax.jit, static_argnames=("axis", "ignore_index", "reduction"))
def nll_loss(
    log_probs: ArrayLike,
    labels: ArrayLike,
    *,
    axis: int = -1,
    weights: ArrayLike | None = None,
    ignore_index: int | None = None,
    where: ArrayLike | None = None,
    reduction: str = "mean",
    denominator: ArrayLike | None = None,
) -> jax.Array:
    r"""Negative log-likelihood of integer labels under given log-probabilities.

    $$
    L = \frac{\sum_i m_i w_{y_i} (-\log q_{i y_i})}{\sum_i m_i w_{y_i}}
    $$

    The loss is linear in `log_probs`, so its gradient, $-m_i w_{y_i} Y_i / S$,
    is what autodiff of the pick produces; no custom rule is needed. Masking,
    weights, invalid labels and reductions are those of
    [`softmax_cross_entropy`][jaxce.softmax_cross_entropy].

    Args:
      log_probs: floating log-probabilities with the classes on `axis`.
      labels: integer class indices, shape = `log_probs` shape without `axis`.
      axis: the class axis.
      weights: per-class weights, shape `(K,)`.
      ignore_index: integer label whose examples are excluded.
      where: boolean mask broadcastable to the examples' shape.
      reduction: `"mean"`, `"sum"` or `"none"`.
      denominator: replaces $S$ in `"mean"`.

    Returns:
      A scalar, or per-example losses for `"none"`; float32 for half precision.

    Raises:
      TypeError: non-floating `log_probs` or non-integer `labels`.
      ValueError: mismatched shapes or an unknown `reduction`.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import jaxce
      >>> log_probs = jax.nn.log_softmax(jnp.array([[2.0, 1.0, 0.1], [0.0, 5.0, 0.2]]))
      >>> print(f"{jaxce.nll_loss(log_probs, jnp.array([0, 1])):.4f}")
      0.2159
    """
    _checks.reduction(reduction)
    log_probs, axis, labels_, weights, mask, bad = _labels.multiclass(
        log_probs,
        labels,
        axis=axis,
        ignore_index=ignore_index,
        where=where,
        weights=weights,
        allow_probs=False,
        logits_name="log_probs",
    )
    classes = labels_.classes
    assert classes is not None and bad is not None
    dtypes = [log_probs.dtype] + ([] if weights is None else [weights.dtype])
    lp = log_probs.astype(_checks.compute_dtype(*dtypes))
    onehot = _labels.target_mask(classes, lp.shape, axis)
    w = None if weights is None else _labels.along_axis(weights.astype(lp.dtype), lp.ndim, axis)
    w_y = (
        jnp.ones(mask.shape, lp.dtype) if w is None else _labels.pick(w, onehot, axis).squeeze(axis)
    )
    loss = -w_y * _labels.pick(lp, onehot, axis).squeeze(axis)
    loss = _nan_where(bad, jnp.where(mask, loss, 0))
    return reduce_loss(loss, jnp.where(mask, w_y, 0), reduction, denominator)


@functools.partial(jax.jit, static_argnames=("epsilon", "num_classes", "axis"))
def smooth_labels(
    labels: ArrayLike,
    epsilon: float,
    *,
    num_classes: int | None = None,
    axis: int = -1,
) -> jax.Array:
    r"""Label smoothing: integer or one-hot labels to smoothed probabilities.

    $$\tilde y = (1-\varepsilon)\,\mathrm{onehot}(y) + \varepsilon / K$$

    Args:
      labels: integer class indices (then `num_classes` is required and the
        class axis is inserted at `axis`), or floating one-hot/probability
        labels with the classes on `axis`.
      epsilon: $\varepsilon \in [0, 1]$.
      num_classes: $K$, for integer labels.
      axis: the class axis of the result.

    Returns:
      Floating targets; float32 for integer labels. An integer label outside
      `[0, K)` gives a row of NaN rather than a silently wrong target.

    Raises:
      TypeError: labels neither integer nor floating.
      ValueError: `epsilon` outside [0, 1], `num_classes` missing for integer
        labels or not matching floating labels.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxce
      >>> with jnp.printoptions(precision=4):
      ...     print(jaxce.smooth_labels(jnp.array([0, 2]), 0.1, num_classes=3))
      [[0.9333 0.0333 0.0333]
       [0.0333 0.0333 0.9333]]
    """
    eps = _checks.unit_interval("epsilon", epsilon)
    labels = jnp.asarray(labels)
    if jnp.issubdtype(labels.dtype, jnp.integer):
        if num_classes is None:
            raise ValueError("num_classes is required for integer labels; got None.")
        k = _checks.positive_integer("num_classes", num_classes)
        shape = labels.shape + (k,)
        axis = _checks.class_axis(axis, len(shape))
        shape = _checks.without_axis(shape, len(shape) - 1)
        shape = shape[:axis] + (k,) + shape[axis:]
        onehot = _labels.target_mask(labels, shape, axis)
        bad = jnp.expand_dims((labels < 0) | (labels >= k), axis)
        return _nan_where(bad, jnp.where(onehot, 1 - eps, 0) + eps / k).astype(jnp.float32)
    labels = _checks.floating("labels", labels)
    axis = _checks.class_axis(axis, labels.ndim, name="labels")
    k = labels.shape[axis]
    if num_classes is not None and num_classes != k:
        raise ValueError(
            f"num_classes must equal labels.shape[{axis}] = {k} for floating labels; "
            f"got {num_classes}."
        )
    return (1 - eps) * labels + eps / k


def _scaled_logits(logits, temperature, axis, where):
    logits = _checks.floating("logits", logits)
    axis = _checks.class_axis(axis, logits.ndim)
    x = logits.astype(_checks.compute_dtype(logits.dtype))
    x = x / jnp.asarray(temperature).astype(x.dtype)
    if where is not None:
        x = jnp.where(_checks.example_mask(where, logits.shape, of="logits shape"), x, -jnp.inf)
    return x, axis, logits.dtype


@functools.partial(jax.jit, static_argnames=("axis", "log"))
def _softmax(logits, temperature, axis, where, log):
    x, axis, dtype = _scaled_logits(logits, temperature, axis, where)
    out = jax.nn.log_softmax(x, axis=axis) if log else jax.nn.softmax(x, axis=axis)
    return out.astype(dtype)


def log_softmax(
    logits: ArrayLike,
    *,
    temperature: ArrayLike = 1.0,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Stable log-softmax of `logits / temperature`.

    $$\log q_c = x_c/T - \log\sum_j e^{x_j/T}$$

    Computed in float32 or wider and returned in the logits' dtype. Classes
    where `where` is False are excluded (their output is `-inf`).

    Args:
      logits: floating array with the classes on `axis`.
      temperature: $T > 0$; may be a traced scalar (differentiable), in which
        case its sign cannot be checked.
      axis: the class axis.
      where: boolean mask of included classes, broadcastable to `logits`.

    Returns:
      Log-probabilities, shape and dtype of `logits`.

    Raises:
      ValueError: a concrete `temperature` that is not finite and positive.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxce
      >>> with jnp.printoptions(precision=4):
      ...     print(jaxce.log_softmax(jnp.array([1000.0, 1001.0, 1002.0])))
      [-2.4076 -1.4076 -0.4076]
    """
    temperature = _checks.positive("temperature", temperature)
    return _softmax(logits, temperature, axis, where, log=True)


def softmax(
    logits: ArrayLike,
    *,
    temperature: ArrayLike = 1.0,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Stable softmax of `logits / temperature`.

    $$q_c = \frac{e^{x_c/T}}{\sum_j e^{x_j/T}}$$

    A larger $T$ flattens the distribution, a smaller one sharpens it. Classes
    where `where` is False get probability 0.

    Args:
      logits: floating array with the classes on `axis`.
      temperature: $T > 0$; may be a traced scalar (differentiable), in which
        case its sign cannot be checked.
      axis: the class axis.
      where: boolean mask of included classes, broadcastable to `logits`.

    Returns:
      Probabilities, shape and dtype of `logits`.

    Raises:
      ValueError: a concrete `temperature` that is not finite and positive.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxce
      >>> with jnp.printoptions(precision=4):
      ...     print(jaxce.softmax(jnp.array([2.0, 1.0, 0.1])))
      ...     print(jaxce.softmax(jnp.array([2.0, 1.0, 0.1]), temperature=10.0))
      [0.659  0.2424 0.0986]
      [0.3661 0.3312 0.3027]
    """
    temperature = _checks.positive("temperature", temperature)
    return _softmax(logits, temperature, axis, where, log=False)


@dataclasses.dataclass(frozen=True)
class CrossEntropyLoss(LossOptions):
    r"""Options of [`softmax_cross_entropy`][jaxce.softmax_cross_entropy], held in a callable.

    Calling it computes $\frac{1}{S}\sum_i m_i w_{y_i}\big(\log\sum_c e^{x_{ic}} - x_{iy_i}\big)$
    (with the smoothing and z-loss terms of the function) with the stored options.

    Frozen and hashable (weights are stored as a tuple), so an instance can be a
    static argument of `jax.jit`. Options are validated on construction.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxce
      >>> criterion = jaxce.CrossEntropyLoss(weights=[1.0, 10.0])
      >>> loss = criterion(jnp.array([[2.0, 1.0], [2.0, 1.0]]), jnp.array([1, 1]))
      >>> print(f"{loss:.4f}")
      1.3133
    """

    weights: tuple[float, ...] | None = None
    ignore_index: int | None = None
    label_smoothing: float = 0.0
    reduction: str = "mean"
    axis: int = -1
    z_loss: float = 0.0

    loss = staticmethod(softmax_cross_entropy)

    def __post_init__(self) -> None:
        self._freeze_arrays()
        _checks.integer("ignore_index", self.ignore_index, optional=True)
        _checks.unit_interval("label_smoothing", self.label_smoothing)
        _checks.reduction(self.reduction)
        _checks.integer("axis", self.axis)
        _checks.non_negative("z_loss", self.z_loss)
