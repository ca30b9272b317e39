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
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from . import _checks, _labels, _softmax
from ._binary import binary_labels, times
from ._options import LossOptions
from ._reduce import reduce_loss


def _log_or_neg_inf(a: jax.Array, log: object = jnp.log) -> jax.Array:
    """`log(a)` for `a > 0`, `-inf` at 0, without a NaN in either branch."""
    positive = a > 0
    return jnp.where(positive, log(jnp.where(positive, a, 1)), -jnp.inf)  # type: ignore[operator]


def _class_sum(x: jax.Array, axis: int) -> jax.Array:
    return jnp.sum(x, axis=tuple(a for a in range(x.ndim) if a != axis))


# Sigmoid focal loss.


class _SigmoidConfig(NamedTuple):
    alpha: float | None
    gamma: float


def _sigmoid_terms(cfg, logits, labels):
    x = logits.astype(_checks.compute_dtype(logits.dtype, labels.dtype))
    y = labels.astype(x.dtype)
    sp_pos, sp_neg = jax.nn.softplus(x), jax.nn.softplus(-x)  # -log s(-x), -log s(x)
    log_y = _log_or_neg_inf(y)
    log_not_y = _log_or_neg_inf(1 - y)
    # 1 - p_t = y s(-x) + (1 - y) s(x), in log space.
    log_u = jnp.logaddexp(log_y - sp_pos, log_not_y - sp_neg)
    factor = jnp.ones_like(x) if cfg.gamma == 0 else jnp.exp(cfg.gamma * log_u)
    alpha_t = None if cfg.alpha is None else cfg.alpha * y + (1 - cfg.alpha) * (1 - y)
    ce = times(y, sp_neg) + times(1 - y, sp_pos)
    return x, y, sp_pos, sp_neg, log_y, log_not_y, log_u, factor, alpha_t, ce


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _sigmoid_focal(cfg, logits, labels, mask):
    return _sigmoid_focal_fwd(cfg, logits, labels, mask)[0]


def _sigmoid_focal_fwd(cfg, logits, labels, mask):
    *_, factor, alpha_t, ce = _sigmoid_terms(cfg, logits, labels)
    loss = factor * ce
    if alpha_t is not None:
        loss = times(alpha_t, loss)
    return jnp.where(mask, loss, 0), (logits, labels, mask)


def _sigmoid_focal_bwd(cfg, res, g):
    logits, labels, mask = res
    x, y, sp_pos, sp_neg, log_y, log_not_y, log_u, factor, alpha_t, ce = _sigmoid_terms(
        cfg, logits, labels
    )
    gamma = cfg.gamma
    g = jnp.where(mask, g, 0)
    # d(1 - p_t)^gamma / dx = gamma (1 - p_t)^gamma (1 - 2y) r with
    # r = s(x) s(-x) / (1 - p_t) = 1 / (1 + y e^-x + (1 - y) e^x) in [0, 1].
    dx = jax.nn.sigmoid(x) - y
    if gamma:
        t_pos = jnp.where(y > 0, log_y - x, -jnp.inf)
        t_neg = jnp.where(y < 1, log_not_y + x, -jnp.inf)
        r = jnp.exp(-jnp.logaddexp(0, jnp.logaddexp(t_pos, t_neg)))
        dx = dx + gamma * (1 - 2 * y) * times(r, ce)
    dx = factor * dx
    # d/dy: ce' = -x, (1 - p_t)^gamma' = gamma (1 - p_t)^(gamma - 1) (s(-x) - s(x)).
    dy = times(factor, -x)
    if gamma:
        scale = 0 if gamma == 1 else (gamma - 1) * log_u
        dfactor = gamma * (jnp.exp(scale - sp_pos) - jnp.exp(scale - sp_neg))
        dy = dy + times(ce, dfactor)
    if alpha_t is not None:
        assert cfg.alpha is not None
        dx = alpha_t * dx
        dy = times(alpha_t, dy) + (2 * cfg.alpha - 1) * factor * ce
    dx = jnp.where(mask, g * dx, 0)
    dy = jnp.where(mask, times(g, dy), 0)
    return dx.astype(logits.dtype), dy.astype(labels.dtype), None


_sigmoid_focal.defvjp(_sigmoid_focal_fwd, _sigmoid_focal_bwd)


def _alpha(alpha: float | None) -> float | None:
    return None if alpha is None else _checks.unit_interval("alpha", alpha)


@functools.partial(jax.jit, static_argnames=("alpha", "gamma", "reduction"))
def sigmoid_focal_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    alpha: float | None = 0.25,
    gamma: float = 2.0,
    where: ArrayLike | None = None,
    reduction: str = "mean",
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
    `"mean"` over the elements where `where` is True.

    The gradient is analytic (a `jax.custom_vjp`), exact for the logits and
    for soft labels, and differentiable again; forward mode (`jvp`) is not
    supported by `jax.custom_vjp`.

    Args:
      logits: floating array of any shape.
      labels: targets of the logits' shape, 0/1 or soft in $[0, 1]$; floating
        or integer/boolean.
      alpha: $\alpha \in [0, 1]$ weighting positives, or None.
      gamma: focusing parameter $\gamma \ge 0$.
      where: boolean mask broadcastable to the logits' shape.
      reduction: `"mean"`, `"sum"` or `"none"`.

    Returns:
      A scalar, or elementwise losses for `"none"`; float32 for half precision.

    Raises:
      TypeError: integer logits, a non-boolean `where`.
      ValueError: `labels` not of the logits' shape, `alpha` outside [0, 1],
        `gamma` < 0, an unknown `reduction`.

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
    logits = _checks.floating("logits", logits)
    shape = logits.shape
    cfg = _SigmoidConfig(_alpha(alpha), _checks.non_negative("gamma", gamma))
    _checks.reduction(reduction)
    labels = binary_labels(labels, shape, _checks.compute_dtype(logits.dtype), "logits")
    mask = _checks.example_mask(where, shape)
    losses = _sigmoid_focal(cfg, logits, labels, mask)
    return reduce_loss(losses, mask.astype(losses.dtype), reduction)


# Softmax focal loss.


class _SoftmaxConfig(NamedTuple):
    axis: int
    gamma: float


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _softmax_focal(cfg, logits, classes, weights, mask, bad):
    return _softmax_focal_fwd(cfg, logits, classes, weights, mask, bad)[0]


def _focal_terms(cfg, logits, classes, weights, lse=None, lse_other=None):
    axis = cfg.axis
    dtype = _checks.compute_dtype(logits.dtype, *([] if weights is None else [weights.dtype]))
    x = logits.astype(dtype)
    onehot = _labels.target_mask(classes, x.shape, axis)
    others = jnp.where(onehot, -jnp.inf, x)
    if lse is None:
        lse, lse_other = _softmax.logsumexp(x, axis), _softmax.logsumexp(others, axis)
    log_q = _labels.pick(x, onehot, axis) - lse
    # log(1 - q_y) = logsumexp over the other classes - lse: no cancellation as q_y -> 1.
    factor = jnp.ones_like(lse) if cfg.gamma == 0 else jnp.exp(cfg.gamma * (lse_other - lse))
    w = None if weights is None else _labels.along_axis(weights.astype(dtype), x.ndim, axis)
    w_y = jnp.ones_like(lse) if w is None else _labels.pick(w, onehot, axis)
    return x, onehot, others, lse, lse_other, log_q, factor, w_y


def _softmax_focal_fwd(cfg, logits, classes, weights, mask, bad):
    axis = cfg.axis
    _, _, _, lse, lse_other, log_q, factor, w_y = _focal_terms(cfg, logits, classes, weights)
    m = jnp.expand_dims(mask, axis)
    loss = _softmax._nan_where(jnp.expand_dims(bad, axis), jnp.where(m, -w_y * factor * log_q, 0))
    norm = jnp.where(m, w_y, 0)
    out = (jnp.squeeze(loss, axis), jnp.squeeze(norm, axis))
    return out, (logits, classes, weights, mask, bad, lse, lse_other)


def _softmax_focal_bwd(cfg, res, cts):
    logits, classes, weights, mask, bad, lse, lse_other = res
    axis = cfg.axis
    x, onehot, others, _, _, log_q, factor, w_y = _focal_terms(
        cfg, logits, classes, weights, lse, lse_other
    )
    m = jnp.expand_dims(mask, axis)
    g, h = (jnp.expand_dims(c, axis) for c in cts)
    g = _softmax._nan_where(jnp.expand_dims(bad, axis), jnp.where(m, g, 0))
    p = jnp.exp(x - lse)
    # d/dx [-(1 - q)^gamma log q] = -(1 - q)^gamma [gamma log q (R - P) + Y - P], with R the
    # softmax over the other classes: d log(1 - q_y) / dx = R - P.
    inner = onehot.astype(x.dtype) - p
    if cfg.gamma:
        r = jnp.where(others > -jnp.inf, jnp.exp(others - lse_other), 0)
        # r - p is exactly 0 when the target logit is -inf (then log q = -inf).
        inner = inner + cfg.gamma * times(r - p, log_q)
    dx = jnp.where(m, -g * w_y * factor * inner, 0).astype(logits.dtype)
    dw = None
    if weights is not None:
        per_class = jnp.where(onehot, -g * factor * log_q + h, 0)
        dw = _class_sum(jnp.where(m, per_class, 0), axis).astype(weights.dtype)
    return dx, None, dw, None, None


_softmax_focal.defvjp(_softmax_focal_fwd, _softmax_focal_bwd)


@functools.partial(jax.jit, static_argnames=("gamma", "ignore_index", "axis", "reduction"))
def softmax_focal_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    gamma: float = 2.0,
    weights: ArrayLike | None = None,
    ignore_index: int | None = None,
    axis: int = -1,
    where: ArrayLike | None = None,
    reduction: str = "mean",
) -> jax.Array:
    r"""Multiclass focal loss on softmax probabilities, computed in log space.

    With $q = \operatorname{softmax}(x_i)$, integer label $y_i$, mask $m_i$ and
    class weights $w$, the `"mean"` loss is

    $$
    L = \frac{1}{S}\sum_i -m_i\, w_{y_i} (1 - q_{iy_i})^{\gamma} \log q_{iy_i},
    \qquad S = \sum_i m_i w_{y_i},
    $$

    normalised like weighted cross-entropy, which it equals at $\gamma = 0$.
    $\log q_y = x_y - \operatorname{lse}(x)$ and
    $\log(1 - q_y) = \operatorname{lse}_{c \ne y}(x_c) - \operatorname{lse}(x)$,
    so a confident correct prediction ($q_y \to 1$) costs no precision. A class
    whose logit is `-inf` is masked: finite loss, zero gradient.

    The gradient is analytic (a `jax.custom_vjp`),
    $-m_i w_{y_i}(1-q_y)^\gamma\big[\gamma \log q_y\,(R - P) + Y - P\big]/S$ with
    $P = q$ and $R$ the softmax over the non-target classes; it is exact for
    the logits and `weights` and differentiable again. Forward mode (`jvp`)
    is not supported by `jax.custom_vjp`.

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

    Returns:
      A scalar, or per-example losses for `"none"`; float32 for half precision.

    Raises:
      TypeError: integer logits, non-integer labels, a non-boolean `where`.
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
    gamma = _checks.non_negative("gamma", gamma)
    _checks.reduction(reduction)
    logits, axis, parsed, weights, mask, bad = _labels.multiclass(
        logits,
        labels,
        axis=axis,
        ignore_index=ignore_index,
        where=where,
        weights=weights,
        allow_probs=False,
    )
    cfg = _SoftmaxConfig(axis, gamma)
    losses, norm = _softmax_focal(cfg, logits, parsed.classes, weights, mask, bad)
    return reduce_loss(losses, norm, reduction)


# Poly-1.


def _poly_targets(cfg, x, classes, probs, weights):
    """`q~` and `w * q~`: the (smoothed) target distribution, as in cross-entropy."""
    if classes is not None:
        probs = _labels.target_mask(classes, x.shape, cfg.axis).astype(x.dtype)
    q, wq, _ = _softmax._smoothed_targets(cfg, x, probs, weights)
    return q, wq


def _poly_dtype(logits, probs, weights):
    dtypes = [a.dtype for a in (logits, probs, weights) if a is not None]
    return _checks.compute_dtype(*dtypes)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _poly_term(cfg, logits, classes, probs, weights, mask):
    return _poly_term_fwd(cfg, logits, classes, probs, weights, mask)[0]


def _poly_term_fwd(cfg, logits, classes, probs, weights, mask):
    axis = cfg.axis
    x = logits.astype(_poly_dtype(logits, probs, weights))
    lse = _softmax.logsumexp(x, axis)
    _, wq = _poly_targets(cfg, x, classes, probs, weights)
    # sum_c w_c q~_c (1 - softmax_c) = sum_c w_c q~_c - A
    a = jnp.sum(wq * jnp.exp(x - lse), axis=axis, keepdims=True)
    term = jnp.sum(wq, axis=axis, keepdims=True) - a
    term = jnp.where(jnp.expand_dims(mask, axis), term, 0)
    return jnp.squeeze(term, axis), (logits, classes, probs, weights, mask, lse, a)


def _poly_term_bwd(cfg, res, g):
    logits, classes, probs, weights, mask, lse, a = res
    axis = cfg.axis
    x = logits.astype(lse.dtype)
    m = jnp.expand_dims(mask, axis)
    g = jnp.where(m, jnp.expand_dims(g, axis), 0)
    q, wq = _poly_targets(cfg, x, classes, probs, weights)
    p = jnp.exp(x - lse)
    dx = jnp.where(m, g * p * (a - wq), 0).astype(logits.dtype)
    dprobs = dw = None
    if probs is not None:
        w = 1 if weights is None else _labels.along_axis(weights.astype(x.dtype), x.ndim, axis)
        dprobs = jnp.where(m, (1 - cfg.smoothing) * g * w * (1 - p), 0).astype(probs.dtype)
    if weights is not None:
        dw = _class_sum(jnp.where(m, g * q * (1 - p), 0), axis).astype(weights.dtype)
    return dx, None, dprobs, dw, None


_poly_term.defvjp(_poly_term_fwd, _poly_term_bwd)


def _poly_epsilon(epsilon: float) -> float:
    result = _checks.static_float("epsilon", epsilon)
    if result < -1:
        raise ValueError(f"epsilon must be >= -1 (the loss must decrease in p_t); got {result}.")
    return result


_POLY_STATIC = ("epsilon", "axis", "ignore_index", "label_smoothing", "reduction")


@functools.partial(jax.jit, static_argnames=_POLY_STATIC)
def poly1_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    epsilon: float = 1.0,
    axis: int = -1,
    weights: ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    where: ArrayLike | None = None,
    reduction: str = "mean",
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
    label smoothing does. The `"mean"` normaliser, masking, `ignore_index`,
    invalid labels and the `-inf` class mask are those of cross-entropy
    ($S = \sum_i m_i w_{y_i}$ for integer labels, $\sum_i m_i$ for probability
    labels); `epsilon=0` gives exactly
    [`softmax_cross_entropy`][jaxce.softmax_cross_entropy].

    The gradient is analytic (cross-entropy's `custom_vjp` plus one for the
    poly term, $q_c(\sum_j w_j \tilde y_j q_j - w_c \tilde y_c)$); it is exact for
    the logits, probability labels and `weights`, and differentiable again.
    Forward mode (`jvp`) is not supported by `jax.custom_vjp`.

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

    Returns:
      A scalar, or per-example losses for `"none"`; float32 for half precision.

    Raises:
      TypeError: integer logits, labels neither integer nor floating, a
        non-boolean `where`.
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
    epsilon = _poly_epsilon(epsilon)
    smoothing = _checks.unit_interval("label_smoothing", label_smoothing)
    _checks.reduction(reduction)
    args = _labels.multiclass(
        logits, labels, axis=axis, ignore_index=ignore_index, where=where, weights=weights
    )
    logits, axis, parsed, weights, mask, _ = args
    cfg = _softmax._Config(axis, smoothing, 0.0)
    losses, norm = _softmax.per_example(cfg, args)
    if epsilon:
        poly = _poly_term(cfg, logits, parsed.classes, parsed.probs, weights, mask)
        losses = losses + epsilon * poly
    return reduce_loss(losses, norm, reduction)


@dataclasses.dataclass(frozen=True)
class FocalLoss(LossOptions):
    r"""Options of [`softmax_focal_loss`][jaxce.softmax_focal_loss] (multiclass), callable.

    Calling it computes, per example, $-w_y (1 - q_y)^\gamma \log q_y$ with
    $q = \operatorname{softmax}(x)$ and the stored $\gamma$ and class weights.

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

    def __post_init__(self) -> None:
        self._freeze_arrays()
        _checks.non_negative("gamma", self.gamma)
        _checks.integer("ignore_index", self.ignore_index, optional=True)
        _checks.integer("axis", self.axis)
        _checks.reduction(self.reduction)
