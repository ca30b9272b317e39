r"""Focal losses (sigmoid and softmax) and Poly-1 cross-entropy.

All three are computed in log space: the focal factor $(1 - p_t)^\gamma$ is
`exp(gamma * log(1 - p_t))` with `log(1 - p_t)` obtained without cancellation
(a log-sigmoid, or a logsumexp over the non-target classes), so saturated
logits give finite losses and gradients for every $\gamma \ge 0$, including
$\gamma < 1$ where the factor's own derivative is unbounded.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from . import _checks, _labels, _numerics
from ._options import LossOptions, entry_point
from ._reduce import reduce_loss
from ._rule import cotangents, per_example_rule
from ._softmax import softmax_cross_entropy

_ALPHA = _checks.UNIT._replace(optional=True)  # None drops alpha_t; 0 weighs the negatives only


class _Config(NamedTuple):
    axis: int | None


# Sigmoid focal loss.


class _SigmoidInputs(NamedTuple):
    logits: jax.Array
    labels: jax.Array
    alpha: Any  # None: no alpha_t
    gamma: Any  # None: gamma = 0


class _SigmoidTerms(NamedTuple):
    x: jax.Array
    y: jax.Array
    sp_pos: jax.Array  # softplus(x) = -log s(-x)
    sp_neg: jax.Array  # softplus(-x) = -log s(x)
    log_y: jax.Array
    log_not_y: jax.Array
    log_u: jax.Array  # log(1 - p_t)
    factor: jax.Array  # (1 - p_t)^gamma
    alpha_t: jax.Array | None
    ce: jax.Array


def _sigmoid_terms(inp):
    x = inp.logits.astype(_checks.compute_dtype(inp.logits.dtype, inp.labels.dtype))
    y = inp.labels.astype(x.dtype)
    sp_pos, sp_neg = jax.nn.softplus(x), jax.nn.softplus(-x)
    log_y = _numerics.log_or_neg_inf(y)
    log_not_y = _numerics.log_or_neg_inf(1 - y)
    # 1 - p_t = y s(-x) + (1 - y) s(x), in log space.
    log_u = jnp.logaddexp(log_y - sp_pos, log_not_y - sp_neg)
    gamma, alpha = inp.gamma, inp.alpha
    factor = jnp.ones_like(x) if gamma is None else jnp.exp(_numerics.times(gamma, log_u))
    alpha_t = None if alpha is None else alpha * y + (1 - alpha) * (1 - y)
    ce = _numerics.times(y, sp_neg) + _numerics.times(1 - y, sp_pos)
    return _SigmoidTerms(x, y, sp_pos, sp_neg, log_y, log_not_y, log_u, factor, alpha_t, ce)


def _sigmoid_focal_fwd(cfg: _Config, inp: _SigmoidInputs) -> tuple[jax.Array, None]:
    t = _sigmoid_terms(inp)
    loss = t.factor * t.ce
    return (loss if t.alpha_t is None else _numerics.times(t.alpha_t, loss)), None


def _sigmoid_focal_bwd(
    cfg: _Config, inp: _SigmoidInputs, res: None, g: jax.Array
) -> _SigmoidInputs:
    t = _sigmoid_terms(inp)
    times, gamma, y = _numerics.times, inp.gamma, t.y
    # d(1 - p_t)^gamma / dx = gamma (1 - p_t)^gamma (1 - 2y) r with
    # r = s(x) s(-x) / (1 - p_t) = 1 / (1 + y e^-x + (1 - y) e^x) in [0, 1].
    dx = jax.nn.sigmoid(t.x) - y
    if gamma is not None:
        t_pos = jnp.where(y > 0, t.log_y - t.x, -jnp.inf)
        t_neg = jnp.where(y < 1, t.log_not_y + t.x, -jnp.inf)
        r = jnp.exp(-jnp.logaddexp(0, jnp.logaddexp(t_pos, t_neg)))
        dx = dx + gamma * (1 - 2 * y) * times(r, t.ce)
    dx = t.factor * dx
    # d/dy: ce' = -x, (1 - p_t)^gamma' = gamma (1 - p_t)^(gamma - 1) (s(-x) - s(x)).
    dy = times(t.factor, -t.x)
    d_gamma = d_alpha = None
    if gamma is not None:
        scale = times(gamma - 1, t.log_u)
        dfactor = gamma * (jnp.exp(scale - t.sp_pos) - jnp.exp(scale - t.sp_neg))
        dy = dy + times(t.ce, dfactor)
        # d/dgamma = (1 - p_t)^gamma log(1 - p_t) ce
        d_gamma = times(t.factor * t.ce, t.log_u)
    if t.alpha_t is not None:
        d_alpha = g * (2 * y - 1) * t.factor * t.ce
        dx = t.alpha_t * dx
        dy = times(t.alpha_t, dy) + (2 * inp.alpha - 1) * t.factor * t.ce
        d_gamma = None if d_gamma is None else times(t.alpha_t, d_gamma)
    d_gamma = None if d_gamma is None else times(g, d_gamma)
    return cotangents(inp, logits=g * dx, labels=times(g, dy), alpha=d_alpha, gamma=d_gamma)


_sigmoid_focal = per_example_rule(_sigmoid_focal_fwd, _sigmoid_focal_bwd)


@entry_point(
    static=("reduction",),
    hyperparameters={"alpha": _ALPHA, "gamma": _checks.NON_NEGATIVE},
    off={"gamma": 0.0},  # no focal factor
)
def sigmoid_focal_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    alpha: ArrayLike | None = 0.25,
    gamma: ArrayLike = 2.0,
    where: ArrayLike | None = None,
    reduction: str = "mean",
    example_weights: ArrayLike | None = None,
    autodiff: str = "reverse",
) -> jax.Array:
    r"""Sigmoid focal loss (Lin et al. 2017), with torchvision's semantics.

    With $p = \sigma(x)$, $p_t = p\,y + (1-p)(1-y)$ and
    $\alpha_t = \alpha y + (1-\alpha)(1-y)$, each element's loss is

    $$
    \ell = \alpha_t\,(1 - p_t)^{\gamma}\,\operatorname{BCE}(x, y),
    $$

    computed in log space: $\log(1 - p_t)$ is a log-sigmoid (a logaddexp of two
    for soft targets), so the loss and its gradient stay finite at logits of
    $\pm 1000$ and at $\pm\infty$ wherever the loss is finite, for every
    $\gamma \ge 0$ (also $\gamma < 1$, where $(1-p_t)^\gamma$ alone has an
    unbounded derivative). `alpha=None` drops $\alpha_t$ (torchvision's
    `alpha=-1`); with `gamma=0` and `alpha=None` this is
    [`sigmoid_binary_cross_entropy`][jaxce.sigmoid_binary_cross_entropy].

    Unlike torchvision, whose default `reduction` is `"none"`, the default is
    `"mean"` over the elements where `where` is True: with example weights
    $v_j$ and mask $m_j$, $\sum_j m_j v_j \ell_j / \sum_j m_j v_j$.

    The gradient is analytic (a `jax.custom_vjp`), exact for the logits, for
    soft labels and for `example_weights`, and differentiable again. Forward
    mode (`jax.jvp`, `jax.jacfwd`) takes `autodiff="forward"`.

    Args:
      logits: floating array of any shape.
      labels: targets of the logits' shape, 0/1 or soft in $[0, 1]$; floating
        or integer/boolean.
      alpha: $\alpha \in [0, 1]$ weighting positives, or None.
      gamma: focusing parameter $\gamma \ge 0$.
      where: boolean mask broadcastable to the logits' shape.
      reduction: `"mean"`, `"sum"` or `"none"`.
      example_weights: $v$, floating, broadcastable to the logits' shape:
        multiplies each element's loss and its share of the `"mean"`
        normaliser; 0 is `where=False` (exactly 0; its derivative is its loss). Should
        be non-negative (not checked, not clipped).
      autodiff: `"reverse"` (the default: a `jax.custom_vjp`) or `"forward"`:
        a `jax.custom_jvp` built from the same derivatives, so that `jax.jvp`,
        `jax.jacfwd` and `jax.linearize` work too (reverse mode still does; its
        cost is in the gradient guide).

    Returns:
      A scalar, or elementwise losses for `"none"`; float32 for half precision.

    Raises:
      TypeError: integer logits, non-floating `example_weights`, a non-boolean
        `where`.
      ValueError: `labels` not of the logits' shape, `example_weights` not
        broadcastable to it, `alpha` outside [0, 1], `gamma` < 0, an unknown
        `reduction`.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxce
      >>> logits = jnp.array([3.0, -2.0, 0.5, -1000.0])
      >>> labels = jnp.array([1.0, 0.0, 0.0, 1.0])
      >>> with jnp.printoptions(precision=4):
      ...     print(jaxce.sigmoid_focal_loss(logits, labels, reduction="none"))
      [2.7321e-05 1.3527e-03 2.8306e-01 2.5000e+02]

    References:
      Lin, Goyal, Girshick, He, Dollár. Focal Loss for Dense Object Detection.
      ICCV 2017. https://arxiv.org/abs/1708.02002
    """
    args = _labels.binary(logits, labels, where, name="logits", example_weights=example_weights)
    inputs = _SigmoidInputs(args.x, args.labels, alpha, gamma)
    losses = _sigmoid_focal(_Config(None), args.mask, args.bad, inputs, args.example_weights)
    norm = _labels.weighted_count(args.mask, args.example_weights, losses.dtype)
    return reduce_loss(losses, norm, reduction)


# Softmax focal loss.


class _FocalInputs(NamedTuple):
    logits: jax.Array
    classes: jax.Array
    weights: jax.Array | None  # per class, shaped along the class axis
    gamma: Any


class _FocalResiduals(NamedTuple):
    lse: jax.Array  # over all classes
    lse_other: jax.Array  # over the classes other than the target


class _FocalTerms(NamedTuple):
    x: jax.Array
    onehot: jax.Array
    others: jax.Array  # the logits with the target's set to -inf
    log_q: jax.Array  # log q_y
    log_not_q: jax.Array  # log(1 - q_y)
    factor: jax.Array  # (1 - q_y)^gamma
    w_y: Any


def _focal_terms(cfg, inp, res=None):
    axis, w = cfg.axis, inp.weights
    x = inp.logits.astype(
        _checks.compute_dtype(*(a.dtype for a in (inp.logits, w) if a is not None))
    )
    onehot = _numerics.target_mask(inp.classes, x.shape, axis)
    others = jnp.where(onehot, -jnp.inf, x)
    if res is None:
        logsumexp = functools.partial(jax.nn.logsumexp, axis=axis, keepdims=True)
        res = _FocalResiduals(logsumexp(x), logsumexp(others))
    log_q = _numerics.target_logit(x, inp.classes, axis, x.dtype) - res.lse
    # log(1 - q_y) = logsumexp over the other classes - lse: no cancellation as q_y -> 1.
    log_not_q = res.lse_other - res.lse
    gamma = inp.gamma
    factor = jnp.ones_like(log_q) if gamma is None else jnp.exp(_numerics.times(gamma, log_not_q))
    w_y: Any = 1
    if w is not None:
        w_y = jnp.expand_dims(
            _numerics.class_value(w.astype(x.dtype).reshape(-1), inp.classes), axis
        )
    return res, _FocalTerms(x, onehot, others, log_q, log_not_q, factor, w_y)


def _softmax_focal_fwd(cfg: _Config, inp: _FocalInputs) -> tuple[jax.Array, _FocalResiduals]:
    res, t = _focal_terms(cfg, inp)
    return -t.w_y * t.factor * t.log_q, res


def _softmax_focal_bwd(
    cfg: _Config, inp: _FocalInputs, res: _FocalResiduals, g: jax.Array
) -> _FocalInputs:
    _, t = _focal_terms(cfg, inp, res)
    p = jnp.exp(t.x - res.lse)
    # d/dx [-(1 - q)^gamma log q] = -(1 - q)^gamma [gamma log q (R - P) + Y - P], with R the
    # softmax over the other classes: d log(1 - q_y) / dx = R - P.
    inner = t.onehot.astype(t.x.dtype) - p
    d_gamma = None
    if inp.gamma is not None:
        r = jnp.where(t.others > -jnp.inf, jnp.exp(t.others - res.lse_other), 0)
        # r - p is exactly 0 when the target logit is -inf (then log q = -inf).
        inner = inner + inp.gamma * _numerics.times(r - p, t.log_q)
        # d/dgamma = -w_y (1 - q)^gamma log(1 - q) log q
        d_gamma = -g * t.w_y * _numerics.times(t.factor * t.log_q, t.log_not_q)
    dx = -g * t.w_y * t.factor * inner
    dw = None
    if inp.weights is not None:
        dw = jnp.where(t.onehot, -g * t.factor * t.log_q, 0)
    return cotangents(inp, logits=dx, weights=dw, gamma=d_gamma)


_softmax_focal = per_example_rule(_softmax_focal_fwd, _softmax_focal_bwd)


@entry_point(
    static=("ignore_index", "axis", "reduction"),
    hyperparameters={"gamma": _checks.NON_NEGATIVE},
    off={"gamma": 0.0},
)
def softmax_focal_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    gamma: ArrayLike = 2.0,
    weights: ArrayLike | None = None,
    ignore_index: int | None = None,
    axis: int = -1,
    where: ArrayLike | None = None,
    reduction: str = "mean",
    example_weights: ArrayLike | None = None,
    autodiff: str = "reverse",
) -> jax.Array:
    r"""Multiclass focal loss on softmax probabilities, computed in log space.

    With $q = \operatorname{softmax}(x_i)$, integer label $y_i$, mask $m_i$,
    example weights $v_i$ and class weights $w$, the `"mean"` loss is

    $$
    L = \frac{1}{S}\sum_i -m_i v_i\, w_{y_i} (1 - q_{iy_i})^{\gamma} \log q_{iy_i},
    \qquad S = \sum_i m_i v_i w_{y_i},
    $$

    normalised like weighted cross-entropy, which it equals at $\gamma = 0$.
    $\log q_y = x_y - \operatorname{lse}(x)$ and
    $\log(1 - q_y) = \operatorname{lse}_{c \ne y}(x_c) - \operatorname{lse}(x)$,
    so a confident correct prediction ($q_y \to 1$) costs no precision. A class
    whose logit is `-inf` is masked: finite loss, zero gradient.

    The gradient is analytic (a `jax.custom_vjp`),
    $-m_i v_i w_{y_i}(1-q_y)^\gamma\big[\gamma \log q_y\,(R - P) + Y - P\big]/S$ with
    $P = q$ and $R$ the softmax over the non-target classes; it is exact for
    the logits, `weights` and `example_weights` and differentiable again.
    Forward mode (`jax.jvp`, `jax.jacfwd`) takes `autodiff="forward"`.

    Args:
      logits: floating array with the classes on `axis`.
      labels: integer class indices, shape = logits shape without `axis`.
      gamma: focusing parameter $\gamma \ge 0$.
      weights: per-class weights, shape `(K,)` (the multiclass $\alpha$).
      ignore_index: integer label whose examples are excluded. Other labels
        outside `[0, K)` give NaN; under `jax.experimental.checkify` they raise.
      axis: the class axis.
      where: boolean mask broadcastable to the examples' shape.
      reduction: `"mean"`, `"sum"` or `"none"`.
      example_weights: $v$, floating, broadcastable to the examples' shape (the
        logits' shape without `axis`): multiplies each example's loss and its
        share of $S$; 0 is `where=False` (exactly 0; its derivative is its loss).
        Should be non-negative (not checked, not clipped).
      autodiff: `"reverse"` (the default: a `jax.custom_vjp`) or `"forward"`:
        a `jax.custom_jvp` built from the same derivatives, so that `jax.jvp`,
        `jax.jacfwd` and `jax.linearize` work too (reverse mode still does; its
        cost is in the gradient guide).

    Returns:
      A scalar, or per-example losses for `"none"`; float32 for half precision.

    Raises:
      TypeError: integer logits, non-integer labels, non-floating
        `example_weights`, a non-boolean `where`.
      ValueError: mismatched shapes, `weights` not of length K, `gamma` < 0, an
        unknown `reduction`.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxce
      >>> logits = jnp.array([[2.0, 1.0, 0.1], [0.0, 5.0, 0.2]])
      >>> labels = jnp.array([0, 1])
      >>> with jnp.printoptions(precision=4):
      ...     print(jaxce.softmax_focal_loss(logits, labels, reduction="none"))
      [4.8492e-02 3.2310e-06]
      >>> print(f"{jaxce.softmax_focal_loss(logits, labels, gamma=0.0):.4f}")
      0.2159

    References:
      Lin, Goyal, Girshick, He, Dollár. Focal Loss for Dense Object Detection.
      ICCV 2017. https://arxiv.org/abs/1708.02002
    """
    args = _labels.multiclass(
        logits,
        labels,
        axis=axis,
        ignore_index=ignore_index,
        where=where,
        weights=weights,
        example_weights=example_weights,
        allow_probs=False,
    )
    assert args.labels.classes is not None
    weights = (
        None
        if args.weights is None
        else _numerics.along_axis(args.weights, args.logits.ndim, args.axis)
    )
    inputs = _FocalInputs(args.logits, args.labels.classes, weights, gamma)
    cfg = _Config(args.axis)
    losses = _softmax_focal(cfg, args.mask, args.bad, inputs, args.example_weights)
    return reduce_loss(losses, _labels.normaliser(args, losses.dtype), reduction)


# Poly-1.


class _PolyInputs(NamedTuple):
    logits: jax.Array
    classes: jax.Array | None  # integer labels, or
    probs: jax.Array | None  # probability labels
    weights: jax.Array | None
    smoothing: Any


class _PolyResiduals(NamedTuple):
    lse: jax.Array
    a: jax.Array  # sum_c w_c q~_c P_c


def _poly_targets(cfg, inp):
    """`x`, the labels `y`, the (smoothed) targets `q~` and `w q~`, as in cross-entropy."""
    arrays = (inp.logits, inp.probs, inp.weights)
    x = inp.logits.astype(_checks.compute_dtype(*(a.dtype for a in arrays if a is not None)))
    if inp.probs is None:
        y = _numerics.target_mask(inp.classes, x.shape, cfg.axis).astype(x.dtype)
    else:
        y = inp.probs.astype(x.dtype)
    finite = count = None
    if inp.smoothing is not None:
        finite, count = _numerics.finite_classes(x, cfg.axis)
    q = _numerics.smoothed(y, inp.smoothing, finite, count)
    w = None if inp.weights is None else inp.weights.astype(x.dtype)
    return x, y, q, (q if w is None else w * q), w, finite, count


def _poly_term_fwd(cfg: _Config, inp: _PolyInputs) -> tuple[jax.Array, _PolyResiduals]:
    x, _, _, wq, _, _, _ = _poly_targets(cfg, inp)
    lse = jax.nn.logsumexp(x, axis=cfg.axis, keepdims=True)
    # sum_c w_c q~_c (1 - P_c) = sum_c w_c q~_c - A
    a = jnp.sum(wq * jnp.exp(x - lse), axis=cfg.axis, keepdims=True)
    return jnp.sum(wq, axis=cfg.axis, keepdims=True) - a, _PolyResiduals(lse, a)


def _poly_term_bwd(
    cfg: _Config, inp: _PolyInputs, res: _PolyResiduals, g: jax.Array
) -> _PolyInputs:
    x, y, q, wq, w, finite, count = _poly_targets(cfg, inp)
    p = jnp.exp(x - res.lse)
    dx = g * p * (res.a - wq)
    w_one_minus_p = (1 - p) if w is None else w * (1 - p)
    eps = inp.smoothing
    dprobs = None
    if inp.probs is not None:
        dprobs = g * w_one_minus_p * (1 if eps is None else 1 - eps)
    dw = None if w is None else g * q * (1 - p)
    d_eps = None
    if eps is not None:
        # d q~_c / d eps = [x_c finite] / K' - y_c
        dq = jnp.where(finite, 1 / count, 0) - y
        d_eps = g * jnp.sum(dq * w_one_minus_p, axis=cfg.axis, keepdims=True)
    return cotangents(inp, logits=dx, probs=dprobs, weights=dw, smoothing=d_eps)


_poly_term = per_example_rule(_poly_term_fwd, _poly_term_bwd)


_POLY_EPSILON = _checks.Interval(-1.0, hint=" (the loss must decrease in p_t)")


@entry_point(
    static=("axis", "ignore_index", "reduction"),
    hyperparameters={"epsilon": _POLY_EPSILON, "label_smoothing": _checks.UNIT},
    off={"epsilon": 0.0, "label_smoothing": 0.0},
)
def poly1_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    epsilon: ArrayLike = 1.0,
    axis: int = -1,
    weights: ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: ArrayLike = 0.0,
    where: ArrayLike | None = None,
    reduction: str = "mean",
    example_weights: ArrayLike | None = None,
    autodiff: str = "reverse",
) -> jax.Array:
    r"""Poly-1 cross-entropy (Leng et al. 2022): cross-entropy plus $\epsilon(1 - p_t)$.

    With $q = \operatorname{softmax}(x_i)$ and the target distribution
    $\tilde y_i$ (one-hot of an integer label, or probability labels), after
    label smoothing $\tilde y = (1-\varepsilon_s)\,y + \varepsilon_s/K_i$ as in
    [`softmax_cross_entropy`][jaxce.softmax_cross_entropy], the loss of
    example $i$ is

    $$
    \ell_i = \operatorname{CE}_i + \epsilon \sum_c w_c\,\tilde y_{ic}\,(1 - q_{ic}),
    $$

    i.e. $\operatorname{CE} + \epsilon\, w_y (1 - q_y)$ for a plain integer
    label. With smoothing the poly term uses the smoothed target, so
    $1 - p_t = \sum_c \tilde y_c (1 - q_c)$, as the paper's reference code for
    label smoothing does. Example weights $v_i$ multiply $\ell_i$. The
    `"mean"` normaliser, masking, `ignore_index`, invalid labels and the `-inf`
    class mask are those of cross-entropy ($S = \sum_i m_i v_i w_{y_i}$ for
    integer labels, $\sum_i m_i v_i$ for probability labels); `epsilon=0`
    gives exactly [`softmax_cross_entropy`][jaxce.softmax_cross_entropy].

    The gradient is analytic (cross-entropy's `custom_vjp` plus one for the
    poly term, $q_c(\sum_j w_j \tilde y_j q_j - w_c \tilde y_c)$); it is exact for
    the logits, probability labels, `weights` and `example_weights`, and
    differentiable again. Forward mode (`jax.jvp`, `jax.jacfwd`) takes `autodiff="forward"`.

    Args:
      logits: floating array with the classes on `axis`.
      labels: integer class indices (shape = logits shape without `axis`) or
        floating probabilities (the logits' shape).
      epsilon: $\epsilon \ge -1$ (the paper's range: the loss still decreases
        as $p_t$ grows).
      axis: the class axis.
      weights: per-class weights, shape `(K,)`.
      ignore_index: integer label whose examples are excluded (integer labels
        only).
      label_smoothing: $\varepsilon_s \in [0, 1]$.
      where: boolean mask broadcastable to the examples' shape.
      reduction: `"mean"`, `"sum"` or `"none"`.
      example_weights: $v$, floating, broadcastable to the examples' shape:
        multiplies each example's loss and its share of $S$; 0 is
        `where=False` (exactly 0; its derivative is its loss). Should be non-negative
        (not checked, not clipped).
      autodiff: `"reverse"` (the default: a `jax.custom_vjp`) or `"forward"`:
        a `jax.custom_jvp` built from the same derivatives, so that `jax.jvp`,
        `jax.jacfwd` and `jax.linearize` work too (reverse mode still does; its
        cost is in the gradient guide).

    Returns:
      A scalar, or per-example losses for `"none"`; float32 for half precision.

    Raises:
      TypeError: integer logits, labels neither integer nor floating,
        non-floating `example_weights`, a non-boolean `where`.
      ValueError: mismatched shapes, `weights` not of length K, `epsilon` < -1,
        `label_smoothing` outside [0, 1], an unknown `reduction`,
        `ignore_index` with probability labels.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxce
      >>> logits = jnp.array([[2.0, 1.0, 0.1], [0.0, 5.0, 0.2]])
      >>> labels = jnp.array([0, 1])
      >>> with jnp.printoptions(precision=4):
      ...     print(jaxce.poly1_cross_entropy(logits, labels, reduction="none"))
      [0.758  0.0296]
      >>> print(f"{jaxce.poly1_cross_entropy(logits, labels, epsilon=0.0):.4f}")
      0.2159

    References:
      Leng, Tan, Liu, Cubuk, Shi, Cheng, Anguelov, Tan. PolyLoss: A Polynomial
      Expansion Perspective of Classification Loss Functions. ICLR 2022.
      https://arxiv.org/abs/2204.12511
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
    # Smoothing that is off is not passed on: the cross-entropy's default is off too.
    smoothing = {} if label_smoothing is None else {"label_smoothing": label_smoothing}
    losses = softmax_cross_entropy(
        logits,
        labels,
        axis=axis,
        weights=weights,
        ignore_index=ignore_index,
        where=where,
        reduction="none",
        example_weights=example_weights,
        autodiff=autodiff,
        **smoothing,
    )
    if epsilon is not None:
        w = args.weights
        w = None if w is None else _numerics.along_axis(w, args.logits.ndim, args.axis)
        classes, probs = args.labels
        inputs = _PolyInputs(args.logits, classes, probs, w, label_smoothing)
        poly = _poly_term(_Config(args.axis), args.mask, None, inputs, args.example_weights)
        losses = losses + epsilon * poly
    return reduce_loss(losses, _labels.normaliser(args, losses.dtype), reduction)


@dataclasses.dataclass(frozen=True)
class FocalLoss(LossOptions):
    r"""Options of [`softmax_focal_loss`][jaxce.softmax_focal_loss] (multiclass), callable.

    Calling it computes, per example, $-w_y (1 - q_y)^\gamma \log q_y$ with
    $q = \operatorname{softmax}(x)$ and the stored $\gamma$ and class weights.
    Arrays that change with every batch are arguments of the call, not
    options: `criterion(logits, labels, where=mask, example_weights=v)`.

    Frozen and hashable (weights are stored as a tuple), so an instance can be
    a static argument of `jax.jit`. Options are validated on construction. For
    the sigmoid (binary, multi-label) variant, call
    [`sigmoid_focal_loss`][jaxce.sigmoid_focal_loss] directly, e.g. through
    `functools.partial`.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxce
      >>> criterion = jaxce.FocalLoss(gamma=2.0, weights=[1.0, 2.0, 1.0])
      >>> loss = criterion(jnp.array([[2.0, 1.0, 0.1], [0.0, 5.0, 0.2]]), jnp.array([0, 1]))
      >>> print(f"{loss:.4f}")
      0.0162
    """

    gamma: float = 2.0
    weights: tuple[float, ...] | None = None
    ignore_index: int | None = None
    axis: int = -1
    reduction: str = "mean"

    loss = staticmethod(softmax_focal_loss)
