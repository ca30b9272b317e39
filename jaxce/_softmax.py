"""Softmax cross-entropy with an analytic backward, NLL, label smoothing, softmax.

The forward keeps only per-example numbers (the log-normaliser in two parts,
the target's NLL, the smoothing sums) for the backward, which recomputes
`P = exp(x - lse)` from the logits in one fused pass and writes
`(P - Y) * w / S` directly: no N x K probability matrix is ever stored
between the two.

With integer labels the forward reads the N x K logits once: the sum of
exponentials shifted by the target logit, which is a gather of N values
(`_numerics.target_logit`; a second pass only where the class axis is split
over devices). The backward is one more pass that selects the target's entry
instead of subtracting a one-hot array.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from . import _checks, _labels, _numerics, _stats
from ._options import LossOptions, entry_point
from ._reduce import reduce_loss
from ._rule import cotangents, per_example_rule


class _Config(NamedTuple):
    axis: int
    stats: bool = False  # also output the logsumexp (differentiable)


# Integer class labels.


class _ClassInputs(NamedTuple):
    logits: jax.Array
    classes: jax.Array
    weights: jax.Array | None  # per class, shaped along the class axis
    smoothing: Any  # eps, or None when off
    z_loss: Any  # zeta, or None when off
    softcap: Any  # c, or None when off: the loss sees z = c tanh(x / c)


class _ClassResiduals(NamedTuple):
    shift: jax.Array  # lse = shift + log_sum
    log_sum: jax.Array
    nll: jax.Array  # lse - x_y
    w_y: Any  # the target's class weight
    num_finite: Any  # K', the classes with a finite logit (smoothing only)
    w_finite: Any  # sum_c w_c over those classes
    smooth: Any  # (1 / K') sum_c w_c (lse - x_c) over those classes


def _target_normaliser(x, classes, axis, dtype, cap):
    """`(shift, log_sum, nll)` (keepdims) with `lse = shift + log_sum`, in one pass over `x`.

    The shift is the target logit, so `nll = log sum_c exp(x_c - x_y)` exactly,
    a sum that is at least 1, with no separate pass for the row maximum.
    `jax.nn.logsumexp(x) - x_y` would lose `|x| * eps` to cancellation
    (`test_softmax.py::test_large_offsets_lose_no_precision`). Only if some row
    overflows (a logit more than ~88 above its target's in float32) or is not
    finite does the batch take the max-shifted path (two more passes).
    """
    target = _numerics.softcap(_numerics.target_logit(x, classes, axis, dtype), cap)
    shift = lax.stop_gradient(jnp.where(jnp.isfinite(target), target, 0))
    log_sum = _numerics.shifted_log_sum(x, shift, axis, dtype, cap)
    shift, log_sum = lax.cond(
        jnp.all(jnp.isfinite(log_sum)),
        lambda: (shift, log_sum),
        lambda: _numerics.log_normaliser(x, axis, dtype=dtype, cap=cap),
    )
    # (shift - x_y) + log_sum: exact in the common path, no cancellation in either.
    return shift, log_sum, (shift - target) + log_sum


def _class_ce_fwd(cfg: _Config, inp: _ClassInputs) -> tuple[Any, _ClassResiduals]:
    axis, eps, w = cfg.axis, inp.smoothing, inp.weights
    dtype = _checks.compute_dtype(inp.logits.dtype, *([] if w is None else [w.dtype]))
    shift, log_sum, nll = _target_normaliser(inp.logits, inp.classes, axis, dtype, inp.softcap)
    lse = shift + log_sum
    w_y = count = w_finite = smooth = None
    loss = nll
    if w is not None:
        w = w.astype(dtype)
        w_y = jnp.expand_dims(_numerics.class_value(w.reshape(-1), inp.classes), axis)
        loss = w_y * nll
    if eps is not None:
        x = _numerics.softcap(_numerics.widen(inp.logits, dtype, log_sum), inp.softcap)
        finite = x > -jnp.inf
        nll_c = jnp.where(finite, (shift - x) + log_sum, 0)
        terms = [nll_c if w is None else w * nll_c, finite.astype(dtype)]
        if w is not None:
            terms.append(jnp.where(finite, w, 0))
        smooth, count, *w_sum = _numerics.sums(terms, axis, keepdims=True)
        w_finite = w_sum[0] if w_sum else count
        smooth = smooth / count
        loss = (1 - eps) * loss + eps * smooth
    if inp.z_loss is not None:
        loss = loss + inp.z_loss * lse**2
    residuals = _ClassResiduals(shift, log_sum, nll, w_y, count, w_finite, smooth)
    return ((loss, lse) if cfg.stats else loss), residuals


def _class_ce_bwd(
    cfg: _Config, inp: _ClassInputs, res: _ClassResiduals, g: jax.Array
) -> _ClassInputs:
    axis, eps, w = cfg.axis, inp.smoothing, inp.weights
    g, g_lse = g if cfg.stats else (g, None)
    lse = res.shift + res.log_sum
    raw = _numerics.widen(inp.logits, lse.dtype, lse)
    x = _numerics.softcap(raw, inp.softcap)
    w_y: Any = 1 if res.w_y is None else res.w_y
    w = None if w is None else w.astype(x.dtype)
    # d loss / d x_c = a P_c - t_c, with t = (1 - eps) w_y Y + eps / K' w_c [x_c finite].
    mean_weight = None if eps is None else res.w_finite / res.num_finite
    a = _numerics.logit_scale(w_y, eps, mean_weight, inp.z_loss, lse)
    t_y = w_y
    spread: Any = 0
    d_eps = None
    if eps is not None:
        t_y = (1 - eps) * w_y + jnp.where(res.nll < jnp.inf, eps / res.num_finite * w_y, 0)
        spread = _numerics.smoothing_spread(x, eps, res.num_finite, w)
        d_eps = g * (res.smooth - w_y * res.nll)
    # exp(x - lse), not exp((x - shift) - log_sum): one subtraction fewer per element.
    # P then carries the rounding of lse, at most |lse| * eps relative: the same as
    # rounding the logits themselves does.
    probs = jnp.exp(x - lse)
    dense = a * probs - spread
    # At the target, a P_y - t_y = a expm1(-nll) + (a - t_y): no cancellation as P_y -> 1,
    # and a select (not a subtraction of a one-hot) in the one fused pass.
    at_target = a * jnp.expm1(-res.nll) + (a - t_y)
    onehot = _numerics.target_mask(inp.classes, x.shape, axis)
    dx = g * jnp.where(onehot, at_target, dense)
    if g_lse is not None:
        dx = dx + g_lse * probs  # d lse / d x = P
    dw = None
    if w is not None:
        nll_c = (res.shift - x) + res.log_sum
        dw = g * _numerics.class_weight_grad(
            onehot, res.nll, eps, res.num_finite, x > -jnp.inf, nll_c
        )
    d_zeta = None if inp.z_loss is None else g * lse**2
    dx, d_cap = _numerics.row_through_softcap(dx, raw, x, inp.softcap, axis)
    return cotangents(inp, logits=dx, weights=dw, smoothing=d_eps, z_loss=d_zeta, softcap=d_cap)


_class_ce = per_example_rule(_class_ce_fwd, _class_ce_bwd)


# Probability labels.


class _ProbInputs(NamedTuple):
    logits: jax.Array
    probs: jax.Array
    weights: jax.Array | None
    smoothing: Any
    z_loss: Any
    softcap: Any


class _ProbResiduals(NamedTuple):
    shift: jax.Array
    log_sum: jax.Array
    num_finite: Any  # K' (smoothing only)
    wq_sum: jax.Array  # sum_c w_c q_c of the smoothed targets q


def _prob_targets(inp, x, count, partner):
    """The smoothed targets `q` and `w q`, with the finite-class mask (None without smoothing).

    The labels are widened by the pass that also reads `partner` (`_numerics.widen`)."""
    finite = None if inp.smoothing is None else x > -jnp.inf
    probs = _numerics.widen(inp.probs, x.dtype, partner)
    q = _numerics.smoothed(probs, inp.smoothing, finite, count)
    w = None if inp.weights is None else inp.weights.astype(x.dtype)
    return finite, q, (q if w is None else w * q), w


def _prob_ce_fwd(cfg: _Config, inp: _ProbInputs) -> tuple[Any, _ProbResiduals]:
    axis = cfg.axis
    arrays = (inp.logits, inp.probs, inp.weights)
    dtype = _checks.compute_dtype(*(a.dtype for a in arrays if a is not None))
    # Each pass widens what it reads (`_numerics.widen`): no wide copy of either input.
    shift, log_sum = _numerics.log_normaliser(inp.logits, axis, dtype=dtype, cap=inp.softcap)
    count = None
    if inp.smoothing is not None:
        capped = _numerics.softcap(_numerics.widen(inp.logits, dtype, shift), inp.softcap)
        count = _numerics.finite_classes(capped, axis)[1]
    x = _numerics.softcap(_numerics.widen(inp.logits, dtype, log_sum), inp.softcap)
    _, _, wq, _ = _prob_targets(inp, x, count, log_sum)
    # 0 * log 0 = 0: a class with no target mass contributes nothing, even at -inf.
    nll = (shift - x) + log_sum
    loss, wq_sum = _numerics.sums([jnp.where(wq != 0, wq * nll, 0), wq], axis, keepdims=True)
    if inp.z_loss is not None:
        loss = loss + inp.z_loss * (shift + log_sum) ** 2
    residuals = _ProbResiduals(shift, log_sum, count, wq_sum)
    return ((loss, shift + log_sum) if cfg.stats else loss), residuals


def _prob_ce_bwd(cfg: _Config, inp: _ProbInputs, res: _ProbResiduals, g: jax.Array) -> _ProbInputs:
    eps = inp.smoothing
    g, g_lse = g if cfg.stats else (g, None)
    lse = res.shift + res.log_sum
    raw = _numerics.widen(inp.logits, lse.dtype, lse)
    x = _numerics.softcap(raw, inp.softcap)
    finite, q, wq, w = _prob_targets(inp, x, res.num_finite, lse)
    a = res.wq_sum + (0 if inp.z_loss is None else 2 * inp.z_loss * lse)
    probs = jnp.exp(x - lse)
    dx = g * (a * probs - wq)
    if g_lse is not None:
        dx = dx + g_lse * probs
    nll = (res.shift - x) + res.log_sum
    dprobs = g * (nll if w is None else w * nll) * (1 if eps is None else 1 - eps)
    # A -inf logit with no target mass is a masked class: zero gradient there too,
    # rather than the +inf one-sided derivative of 0 * log 0.
    dprobs = jnp.where((q == 0) & (x == -jnp.inf), 0, dprobs)
    dw = None if w is None else jnp.where(q != 0, g * q * nll, 0)
    d_eps = None
    if eps is not None:
        # d q_c / d eps = [x_c finite] / K' - p_c
        dq = jnp.where(finite, 1 / res.num_finite, 0) - _numerics.widen(inp.probs, x.dtype, lse)
        d_eps = g * jnp.sum(
            _numerics.times(dq if w is None else w * dq, nll), cfg.axis, keepdims=True
        )
    d_zeta = None if inp.z_loss is None else g * lse**2
    dx, d_cap = _numerics.row_through_softcap(dx, raw, x, inp.softcap, cfg.axis)
    return cotangents(
        inp, logits=dx, probs=dprobs, weights=dw, smoothing=d_eps, z_loss=d_zeta, softcap=d_cap
    )


_prob_ce = per_example_rule(_prob_ce_fwd, _prob_ce_bwd)


def per_example(
    args: _labels.Multiclass,
    smoothing: Any,
    z_loss: Any,
    softcap: Any = None,
    stats: bool = False,
) -> Any:
    """Per-example cross-entropy for integer or probability labels (0 where masked);
    with `stats`, also each example's logsumexp (differentiable)."""
    cfg = _Config(args.axis, stats)
    weights = args.weights
    if weights is not None:
        weights = _numerics.along_axis(weights, args.logits.ndim, args.axis)
    if args.labels.classes is not None:
        inputs = _ClassInputs(args.logits, args.labels.classes, weights, smoothing, z_loss, softcap)
        return _class_ce(cfg, args.mask, args.bad, inputs, args.example_weights)
    assert args.labels.probs is not None
    probs = _ProbInputs(args.logits, args.labels.probs, weights, smoothing, z_loss, softcap)
    return _prob_ce(cfg, args.mask, None, probs, args.example_weights)


_CE_STATIC = ("axis", "ignore_index", "reduction")
_CE_HYPERPARAMETERS = {
    "label_smoothing": _checks.UNIT,
    "z_loss": _checks.NON_NEGATIVE,
    "logit_softcap": _checks.POSITIVE._replace(optional=True),
}


@entry_point(
    static=(*_CE_STATIC, "return_stats"),
    hyperparameters=_CE_HYPERPARAMETERS,
    off={"label_smoothing": 0.0, "z_loss": 0.0},
    checks={"return_stats": _checks.flag},
)
def softmax_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    axis: int = -1,
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
    r"""Softmax cross-entropy between logits and class labels or probabilities.

    With integer labels $y_i$, mask $m_i$ (0 where ignored or `where` is
    False), example weights $v_i$ and class weights $w$, the `"mean"` loss is
    PyTorch's, each example's term multiplied by $v_i$:

    $$
    L = \frac{1}{S}\sum_i m_i v_i \Big[(1-\varepsilon)\, w_{y_i}\big(\ell_i - x_{i y_i}\big)
        + \frac{\varepsilon}{K_i}\sum_{c} w_c \big(\ell_i - x_{ic}\big)
        + \zeta\, \ell_i^2\Big],
    \qquad S = \sum_i m_i v_i w_{y_i},
    $$

    where $\ell_i = \log\sum_c e^{x_{ic}}$ and the smoothing sum runs over the
    $K_i$ classes whose logit is finite (a `-inf` logit marks a masked class
    and gets no smoothing mass). With floating labels $p$ (same shape as the
    logits) the loss of example $i$ is $v_i\sum_c w_c \tilde p_{ic}(\ell_i - x_{ic})$ with
    $\tilde p = (1-\varepsilon)p + \varepsilon/K_i$, and $S = \sum_i m_i v_i$.
    If no example counts (also an empty batch), the mean is 0 with zero gradient.

    The gradient is analytic (a `jax.custom_vjp`): for integer labels without
    smoothing it is $m_i v_i w_{y_i}(P_i - Y_i)/S$ with $P = \operatorname{softmax}(x)$.
    It is exact for the logits, probability labels, `weights` and
    `example_weights` (with their share of $S$), and differentiable again
    (`jax.hessian`, `grad(grad)`). Forward mode (`jax.jvp`, `jax.jacfwd`,
    `jax.linearize`) takes `autodiff="forward"`.

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
      label_smoothing: $\varepsilon \in [0, 1]$; a Python number or a traced
        scalar (a schedule compiles once), differentiable like every float option.
      where: boolean mask broadcastable to the examples' shape; False excludes
        an example like `ignore_index`.
      reduction: `"mean"`, `"sum"` or `"none"` (per example, 0 where excluded).
      denominator: replaces $S$ in `"mean"`, e.g. the token count of a whole
        global batch when the loss is summed over micro-batches or hosts.
      z_loss: $\zeta \ge 0$, coefficient of the $\operatorname{lse}^2$
        penalty (PaLM); masked like the loss, not multiplied by class weights.
      logit_softcap: $c > 0$ or None: the loss (and everything above) sees
        $c \tanh(x / c)$ instead of the logits $x$ (Gemma 2), as
        [`linear_softmax_cross_entropy`][jaxce.linear_softmax_cross_entropy]
        does; the gradient goes through the cap, and to $c$ when traced.
      return_stats: also return a
        [`CrossEntropyStats`][jaxce.CrossEntropyStats] of per-example
        arrays: the logsumexp (differentiable), the argmax class and whether
        it is the label (for probability labels: the label's most probable
        class). One more pass over the logits, for the argmax.
      example_weights: $v$, floating, broadcastable to the examples' shape
        (the logits' shape without `axis`): multiplies each example's loss
        (z-loss included) and its share of $S$. A weight of 0 is
        `where=False`: the example contributes exactly 0, and nothing to any
        other input's gradient, whatever its logits or label hold; the
        derivative with respect to its weight is its loss term, also at 0.
        Weights should be finite and non-negative; they are not checked
        (they may be traced) nor clipped: a negative weight is used as given,
        and a mean whose $S$ is 0 is 0.
      autodiff: `"reverse"` (the default: a `jax.custom_vjp`) or `"forward"`:
        a `jax.custom_jvp` built from the same derivatives, so that `jax.jvp`,
        `jax.jacfwd` and `jax.linearize` work too (reverse mode still does; its
        cost is in the gradient guide).

    Returns:
      A scalar, or per-example losses for `"none"`; float32 for half-precision
      logits, otherwise the logits' floating type. With `return_stats`, the
      pair `(loss, stats)`.

    Raises:
      TypeError: integer logits, labels that are neither integer nor floating,
        a non-boolean `where`, non-floating `example_weights`.
      ValueError: mismatched shapes, `weights` not of length K,
        `example_weights` not broadcastable to the examples' shape, an unknown
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
      >>> v = jnp.array([3.0, 1.0])  # the first example counts three times
      >>> print(f"{jaxce.softmax_cross_entropy(logits, labels, example_weights=v):.4f}")
      0.3165
      >>> capped = jaxce.softmax_cross_entropy(logits, labels, logit_softcap=2.0)
      >>> print(f"{capped:.4f} {jaxce.softmax_cross_entropy(2 * jnp.tanh(logits / 2), labels):.4f}")
      0.4257 0.4257
    """
    args = _labels.multiclass(
        logits,
        labels,
        axis=axis,
        ignore_index=ignore_index,
        where=where,
        weights=weights,
        example_weights=example_weights,
    )
    out = per_example(args, label_smoothing, z_loss, logit_softcap, return_stats)
    losses, lse = out if return_stats else (out, None)
    loss = reduce_loss(losses, _labels.normaliser(args, losses.dtype), reduction, denominator)
    if lse is None:
        return loss
    # The argmax of the logits as given (widening changes no order); capped, ties may appear.
    x = args.logits
    if logit_softcap is not None:
        x = _numerics.softcap(x.astype(lse.dtype), logit_softcap)
    predicted = jnp.argmax(x, axis=args.axis)
    labels_ = args.labels.classes
    if labels_ is None:
        assert args.labels.probs is not None
        labels_ = jnp.argmax(args.labels.probs, axis=args.axis)
    return loss, _stats.finish(
        lse, predicted, labels_, _labels.kept(args.mask, args.example_weights)
    )


@entry_point(static=_CE_STATIC)
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
    example_weights: ArrayLike | None = None,
    autodiff: str = "reverse",
) -> jax.Array:
    r"""Negative log-likelihood of integer labels under given log-probabilities.

    $$
    L = \frac{\sum_i m_i v_i w_{y_i} (-\log q_{i y_i})}{\sum_i m_i v_i w_{y_i}}
    $$

    The loss is linear in `log_probs`, so its gradient, $-m_i v_i w_{y_i} Y_i / S$,
    is what autodiff of the pick produces; no custom rule is needed. Masking,
    class and example weights, invalid labels and reductions are those of
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
      example_weights: $v$, floating, broadcastable to the examples' shape:
        multiplies each example's loss and its share of $S$; 0 is
        `where=False`. Should be non-negative (not checked, not clipped).
      autodiff: `"reverse"` (the default: a `jax.custom_vjp`) or `"forward"`:
        a `jax.custom_jvp` built from the same derivatives, so that `jax.jvp`,
        `jax.jacfwd` and `jax.linearize` work too (reverse mode still does; its
        cost is in the gradient guide).

    Returns:
      A scalar, or per-example losses for `"none"`; float32 for half precision.

    Raises:
      TypeError: non-floating `log_probs` or `example_weights`, non-integer `labels`.
      ValueError: mismatched shapes or an unknown `reduction`.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import jaxce
      >>> log_probs = jax.nn.log_softmax(jnp.array([[2.0, 1.0, 0.1], [0.0, 5.0, 0.2]]))
      >>> print(f"{jaxce.nll_loss(log_probs, jnp.array([0, 1])):.4f}")
      0.2159
    """
    args = _labels.multiclass(
        log_probs,
        labels,
        axis=axis,
        ignore_index=ignore_index,
        where=where,
        weights=weights,
        example_weights=example_weights,
        allow_probs=False,
        logits_name="log_probs",
    )
    classes = args.labels.classes
    assert classes is not None
    options = (args.weights, args.example_weights)
    dtypes = [args.logits.dtype] + [a.dtype for a in options if a is not None]
    dtype = _checks.compute_dtype(*dtypes)
    # Autodiff of the pick is the loss's whole gradient.
    picked = jnp.squeeze(_numerics.target_logit(args.logits, classes, args.axis, dtype), args.axis)
    if args.weights is not None:
        picked = picked * _numerics.class_value(args.weights.astype(dtype), classes)
    loss = _labels.weigh(-picked, args.example_weights, args.mask)
    loss = _numerics.nan_where(args.bad, loss)
    return reduce_loss(loss, _labels.normaliser(args, dtype), reduction, denominator)


def _num_classes(name: str, value: Any) -> int | None:
    return None if value is None else _checks.positive_integer(name, value)


@entry_point(
    static=("num_classes", "axis"),
    hyperparameters={"epsilon": _checks.UNIT},
    checks={"num_classes": _num_classes},
)
def _smooth_labels(labels, *, epsilon, num_classes, axis):
    labels = jnp.asarray(labels)
    if jnp.issubdtype(labels.dtype, jnp.integer):
        if num_classes is None:
            raise ValueError("num_classes is required for integer labels; got None.")
        k = num_classes
        shape = labels.shape + (k,)
        axis = _checks.class_axis(axis, len(shape))
        shape = _checks.without_axis(shape, len(shape) - 1)
        shape = shape[:axis] + (k,) + shape[axis:]
        onehot = _numerics.target_mask(labels, shape, axis)
        bad = jnp.expand_dims((labels < 0) | (labels >= k), axis)
        targets = jnp.where(onehot, 1 - epsilon, 0) + epsilon / k
        return _numerics.nan_where(bad, targets).astype(jnp.float32)
    labels = _checks.floating("labels", labels)
    axis = _checks.class_axis(axis, labels.ndim, name="labels")
    k = labels.shape[axis]
    if num_classes is not None and num_classes != k:
        raise ValueError(
            f"num_classes must equal labels.shape[{axis}] = {k} for floating labels; "
            f"got {num_classes}."
        )
    return ((1 - epsilon) * labels + epsilon / k).astype(labels.dtype)


def smooth_labels(
    labels: ArrayLike,
    epsilon: ArrayLike,
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
      epsilon: $\varepsilon \in [0, 1]$, a Python number or a traced scalar.
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
    return _smooth_labels(labels, epsilon=epsilon, num_classes=num_classes, axis=axis)


@entry_point(
    static=("axis", "log"),
    hyperparameters={"temperature": _checks.POSITIVE},
    off={"temperature": 1.0},
)
def _softmax(logits, *, temperature, axis, where, log):
    logits = _checks.floating("logits", logits)
    axis = _checks.class_axis(axis, logits.ndim)
    x = logits.astype(_checks.compute_dtype(logits.dtype))
    if temperature is not None:
        x = x / jnp.asarray(temperature).astype(x.dtype)
    if where is not None:
        x = jnp.where(_checks.example_mask(where, logits.shape, of="logits shape"), x, -jnp.inf)
    out = jax.nn.log_softmax(x, axis=axis) if log else jax.nn.softmax(x, axis=axis)
    return out.astype(logits.dtype)


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
      temperature: $T > 0$, a Python number or a traced scalar
        (differentiable; NaN if a traced value is not positive).
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
    return _softmax(logits, temperature=temperature, axis=axis, where=where, log=True)


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
      temperature: $T > 0$, a Python number or a traced scalar
        (differentiable; NaN if a traced value is not positive).
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
    return _softmax(logits, temperature=temperature, axis=axis, where=where, log=False)


@dataclasses.dataclass(frozen=True)
class CrossEntropyLoss(LossOptions):
    r"""Options of [`softmax_cross_entropy`][jaxce.softmax_cross_entropy], held in a callable.

    Calling it computes
    $\frac{1}{S}\sum_i m_i v_i w_{y_i}\big(\log\sum_c e^{x_{ic}} - x_{iy_i}\big)$
    (with the smoothing and z-loss terms of the function) with the stored options.
    Arrays that change with every batch are arguments of the call, not options:
    `criterion(logits, labels, where=mask, example_weights=v)`.

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
    logit_softcap: float | None = None

    loss = staticmethod(softmax_cross_entropy)
