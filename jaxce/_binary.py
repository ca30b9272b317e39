"""Binary and multi-label cross-entropy, from logits and from probabilities.

Every element is its own example, so the analytic backward is elementwise: it
keeps no residuals beyond the inputs and recomputes the few transcendental
values it needs from the logits.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from . import _checks, _labels, _numerics
from ._options import LossOptions, entry_point
from ._reduce import reduce_loss
from ._rule import cotangents, per_example_rule

# PyTorch's floor on p (1 - p) in the backward of `binary_cross_entropy`.
_BCE_GRAD_EPS = 1e-12


class _Config(NamedTuple):
    axis: None = None  # every element is an example


def _dtype(*arrays: jax.Array | None) -> Any:
    return _checks.compute_dtype(*(a.dtype for a in arrays if a is not None))


# From logits.


class _LogitInputs(NamedTuple):
    logits: jax.Array
    labels: jax.Array
    weights: jax.Array | None
    pos_weight: jax.Array | None
    smoothing: Any


def _logit_terms(inp):
    """`x`, the smoothed target `y~`, and `p y~` (the positive term's weight)."""
    x = inp.logits.astype(_dtype(inp.logits, inp.labels, inp.pos_weight))
    y = inp.labels.astype(x.dtype)
    if inp.smoothing is not None:
        y = (1 - inp.smoothing) * y + inp.smoothing / 2
    p = 1 if inp.pos_weight is None else inp.pos_weight.astype(x.dtype)
    return x, y, p


def _bce_logits_fwd(cfg: _Config, inp: _LogitInputs) -> tuple[jax.Array, None]:
    x, y, p = _logit_terms(inp)
    # -[p y log s(x) + (1 - y) log s(-x)]: finite at x = +-inf whenever its weight is 0.
    loss = _numerics.times(1 - y, jax.nn.softplus(x)) + _numerics.times(p * y, jax.nn.softplus(-x))
    if inp.weights is not None:
        loss = _numerics.times(inp.weights.astype(x.dtype), loss)
    return loss, None


def _bce_logits_bwd(cfg: _Config, inp: _LogitInputs, res: None, g: jax.Array) -> _LogitInputs:
    x, y, p = _logit_terms(inp)
    times = _numerics.times
    gw = g if inp.weights is None else g * inp.weights.astype(x.dtype)
    sp_pos, sp_neg = jax.nn.softplus(x), jax.nn.softplus(-x)
    # d/dx = (1 - y) s(x) - p y s(-x)
    dx = gw * ((1 - y) * jax.nn.sigmoid(x) - p * y * jax.nn.sigmoid(-x))
    # d/dy~ = p sp(-x) - sp(x), and dy~/dy = 1 - eps, dy~/deps = 1/2 - y.
    dy_smoothed = times(gw, times(p, sp_neg) - sp_pos)
    dy = dy_smoothed if inp.smoothing is None else (1 - inp.smoothing) * dy_smoothed
    d_eps = None
    if inp.smoothing is not None:
        d_eps = times(0.5 - inp.labels.astype(x.dtype), dy_smoothed)
    dw = dpw = None
    if inp.weights is not None:
        dw = times(g, times(1 - y, sp_pos) + times(p * y, sp_neg))
    if inp.pos_weight is not None:
        dpw = times(gw, times(y, sp_neg))
    return cotangents(inp, logits=dx, labels=dy, weights=dw, pos_weight=dpw, smoothing=d_eps)


_bce_logits = per_example_rule(_bce_logits_fwd, _bce_logits_bwd)


@entry_point(
    static=("reduction",),
    hyperparameters={"label_smoothing": _checks.UNIT},
    off={"label_smoothing": 0.0},
)
def sigmoid_binary_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    pos_weight: ArrayLike | None = None,
    label_smoothing: ArrayLike = 0.0,
    where: ArrayLike | None = None,
    reduction: str = "mean",
    example_weights: ArrayLike | None = None,
    autodiff: str = "reverse",
) -> jax.Array:
    r"""Binary or multi-label cross-entropy from logits (PyTorch `BCEWithLogitsLoss`).

    For logit $x$, target $y \in [0, 1]$, element weight $w$ and positive-class
    weight $p$ (broadcast over the last axis), each element's loss is

    $$
    \ell = w\big[(1 - \tilde y)\operatorname{sp}(x) + p\,\tilde y\operatorname{sp}(-x)\big]
         = w\big[(1-\tilde y)\,x + (1 + (p-1)\tilde y)\operatorname{sp}(-x)\big],
    \qquad \tilde y = (1-\varepsilon)\,y + \varepsilon/2,
    $$

    with $\operatorname{sp}(x) = \log(1 + e^x)$ (softplus), the first form
    being the one computed: it is exact for $|x|$ large and
    finite at $x = \pm\infty$ wherever the loss is (a correct, saturated
    prediction costs 0; PyTorch returns NaN there). With example weights
    $v_j$ and mask $m_j$ over the elements $j$, `"mean"` is
    $\sum_j m_j v_j \ell_j / \sum_j m_j v_j$, the number of elements where
    `where` is True when there are no example weights; `weights` do not enter
    the normaliser (as in PyTorch), `example_weights` do.

    The gradient is analytic (a `jax.custom_vjp`),
    $\partial\ell/\partial x = w\big(\sigma(x)(1 + (p-1)\tilde y) - p\tilde y\big)$,
    and exact for soft `labels`, `weights`, `pos_weight` and
    `example_weights` too; it is differentiable again (`jax.hessian`).
    Forward mode (`jax.jvp`, `jax.jacfwd`) takes `autodiff="forward"`.

    Args:
      logits: floating array of any shape, e.g. `(N,)` or multi-label `(N, K)`.
      labels: targets of the logits' shape: floating (soft targets allowed)
        or 0/1 integer/boolean.
      weights: element weights broadcastable to the logits' shape (PyTorch's
        `weight`).
      pos_weight: weight of the positive term, broadcastable to the logits'
        shape, usually one per class `(K,)` along the last axis.
      label_smoothing: $\varepsilon \in [0, 1]$, pulling targets toward 1/2.
      where: boolean mask broadcastable to the logits' shape; every element is
        an example, False excludes it.
      reduction: `"mean"`, `"sum"` or `"none"` (elementwise, 0 where excluded).
      example_weights: $v$, floating, broadcastable to the logits' shape (a
        weight per row of `(N, K)` logits has shape `(N, 1)`): multiplies each
        element's loss and its share of the `"mean"` normaliser. A weight of 0
        is `where=False` (exactly 0 and a zero gradient, whatever the logits
        or label hold). Weights should be finite and non-negative; they are not
        checked (they may be traced) nor clipped.
      autodiff: `"reverse"` (the default: a `jax.custom_vjp`) or `"forward"`:
        a `jax.custom_jvp` built from the same derivatives, so that `jax.jvp`,
        `jax.jacfwd` and `jax.linearize` work too (reverse mode still does; its
        cost is in the gradient guide).

    Returns:
      A scalar, or elementwise losses for `"none"`; float32 for half-precision
      inputs, otherwise the inputs' floating type.

    Raises:
      TypeError: integer logits, non-floating `weights`, `pos_weight` or
        `example_weights`, a non-boolean `where`.
      ValueError: `labels` not of the logits' shape, `weights`, `pos_weight`,
        `example_weights` or `where` not broadcastable to it,
        `label_smoothing` outside [0, 1], an unknown `reduction`.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxce
      >>> logits = jnp.array([[2.0, -1.0], [0.5, 3.0]])
      >>> labels = jnp.array([[1.0, 0.0], [0.0, 1.0]])
      >>> print(f"{jaxce.sigmoid_binary_cross_entropy(logits, labels):.4f}")
      0.3657
      >>> with jnp.printoptions(precision=4):
      ...     print(jaxce.sigmoid_binary_cross_entropy(
      ...         logits, labels, pos_weight=jnp.array([1.0, 3.0]), reduction="none"))
      [[0.1269 0.3133]
       [0.9741 0.1458]]
    """
    shape = _checks.floating("logits", logits).shape
    weights = _checks.broadcast_option("weights", weights, shape)
    pos_weight = _checks.broadcast_option("pos_weight", pos_weight, shape)
    args = _labels.binary(
        logits,
        labels,
        where,
        name="logits",
        options=(weights, pos_weight),
        example_weights=example_weights,
    )
    inputs = _LogitInputs(args.x, args.labels, weights, pos_weight, label_smoothing)
    losses = _bce_logits(_Config(), args.mask, args.bad, inputs, args.example_weights)
    norm = _labels.weighted_count(args.mask, args.example_weights, losses.dtype)
    return reduce_loss(losses, norm, reduction)


# From probabilities.


class _ProbInputs(NamedTuple):
    probs: jax.Array
    labels: jax.Array
    weights: jax.Array | None


def _clamped_logs(inp):
    p = inp.probs.astype(_dtype(inp.probs, inp.labels))
    log_p = jnp.maximum(jnp.log(p), -100)
    log_q = jnp.maximum(jnp.log1p(-p), -100)
    return p, inp.labels.astype(p.dtype), log_p, log_q


def _bce_probs_fwd(cfg: _Config, inp: _ProbInputs) -> tuple[jax.Array, None]:
    _, y, log_p, log_q = _clamped_logs(inp)
    loss = -y * log_p - (1 - y) * log_q
    if inp.weights is not None:
        loss = inp.weights.astype(loss.dtype) * loss
    return loss, None


def _bce_probs_bwd(cfg: _Config, inp: _ProbInputs, res: None, g: jax.Array) -> _ProbInputs:
    p, y, log_p, log_q = _clamped_logs(inp)
    gw = g if inp.weights is None else g * inp.weights.astype(p.dtype)
    # PyTorch's rule: (p - y) / max(p (1 - p), 1e-12), so p = 0 or 1 gives +-1e12, not 0.
    dp = gw * (p - y) / jnp.maximum(p * (1 - p), _BCE_GRAD_EPS)
    dy = gw * (log_q - log_p)
    dw = None if inp.weights is None else g * (-y * log_p - (1 - y) * log_q)
    return cotangents(inp, probs=dp, labels=dy, weights=dw)


_bce_probs = per_example_rule(_bce_probs_fwd, _bce_probs_bwd)


@entry_point(static=("reduction",))
def binary_cross_entropy(
    probs: ArrayLike,
    labels: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    reduction: str = "mean",
    example_weights: ArrayLike | None = None,
    autodiff: str = "reverse",
) -> jax.Array:
    r"""Binary cross-entropy from probabilities (PyTorch `binary_cross_entropy`).

    $$
    \ell = -w\big[y \max(\log p, -100) + (1-y)\max(\log(1-p), -100)\big]
    $$

    Each log is clamped at $-100$ as in PyTorch, so $p = 0$ or $1$ gives a
    finite loss. Prefer
    [`sigmoid_binary_cross_entropy`][jaxce.sigmoid_binary_cross_entropy] on
    logits: it is exact where $\sigma(x)$ rounds to 0 or 1. `"mean"` is
    $\sum_j m_j v_j \ell_j / \sum_j m_j v_j$ over the elements $j$, with the
    mask $m$ from `where` and the example weights $v$ (1 if not given): the
    number of elements where `where` is True, without example weights.

    The gradient is analytic and follows PyTorch:
    $\partial\ell/\partial p = w(p - y)/\max(p(1-p), 10^{-12})$, which is the
    exact derivative for $p \in (0, 1)$ and $\pm 10^{12}\,w$ at a wrong
    saturated prediction (where the clamped loss is flat, so the exact
    derivative would be 0 and give no signal). With respect to `labels` it is
    the exact $w(\max(\log(1-p), -100) - \max(\log p, -100))$, finite at
    $p \in \{0, 1\}$ where PyTorch returns $\pm\infty$. Probabilities outside
    $[0, 1]$ give NaN (PyTorch raises, which is impossible under `jit`).

    Args:
      probs: probabilities in $[0, 1]$, any shape.
      labels: targets of the same shape: floating or 0/1 integer/boolean.
      weights: element weights broadcastable to the shape of `probs` (not in
        the normaliser).
      where: boolean mask broadcastable to the shape of `probs`.
      reduction: `"mean"`, `"sum"` or `"none"`.
      example_weights: $v$, floating, broadcastable to the shape of `probs`:
        multiplies each element's loss and its share of the normaliser; 0 is
        `where=False`. Should be non-negative (not checked, not clipped).
      autodiff: `"reverse"` (the default: a `jax.custom_vjp`) or `"forward"`:
        a `jax.custom_jvp` built from the same derivatives, so that `jax.jvp`,
        `jax.jacfwd` and `jax.linearize` work too (reverse mode still does; its
        cost is in the gradient guide).

    Returns:
      A scalar, or elementwise losses for `"none"`; float32 for half precision.

    Raises:
      TypeError: integer `probs`, `weights` or `example_weights`, a
        non-boolean `where`.
      ValueError: `labels` not of the shape of `probs`, `weights`,
        `example_weights` or `where` not broadcastable to it, an unknown
        `reduction`.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxce
      >>> probs = jnp.array([0.9, 0.2, 0.0, 1.0])
      >>> labels = jnp.array([1.0, 0.0, 1.0, 1.0])
      >>> with jnp.printoptions(precision=4):
      ...     print(jaxce.binary_cross_entropy(probs, labels, reduction="none"))
      [  0.1054   0.2231 100.       0.    ]
    """
    shape = _checks.floating("probs", probs).shape
    weights = _checks.broadcast_option("weights", weights, shape)
    args = _labels.binary(
        probs, labels, where, name="probs", options=(weights,), example_weights=example_weights
    )
    inputs = _ProbInputs(args.x, args.labels, weights)
    losses = _bce_probs(_Config(), args.mask, args.bad, inputs, args.example_weights)
    norm = _labels.weighted_count(args.mask, args.example_weights, losses.dtype)
    return reduce_loss(losses, norm, reduction)


@dataclasses.dataclass(frozen=True)
class BCEWithLogitsLoss(LossOptions):
    r"""Options of [`sigmoid_binary_cross_entropy`][jaxce.sigmoid_binary_cross_entropy], callable.

    Calling it computes, per element,
    $w\,[(1-y)\operatorname{softplus}(x) + p_w\, y \operatorname{softplus}(-x)]$
    with the stored `weights` $w$ and `pos_weight` $p_w$. Arrays that change
    with every batch are arguments of the call, not options:
    `criterion(logits, labels, where=mask, example_weights=v)`.

    Frozen and hashable (`weights` and `pos_weight` are stored as nested
    tuples), so an instance can be a static argument of `jax.jit`. Options are
    validated on construction.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxce
      >>> criterion = jaxce.BCEWithLogitsLoss(pos_weight=[1.0, 3.0])
      >>> logits = jnp.array([[2.0, -1.0], [0.5, 3.0]])
      >>> loss = criterion(logits, jnp.array([[1.0, 0.0], [0.0, 1.0]]))
      >>> print(f"{loss:.4f}")
      0.3900
    """

    weights: Any = None
    pos_weight: Any = None
    label_smoothing: float = 0.0
    reduction: str = "mean"

    loss = staticmethod(sigmoid_binary_cross_entropy)
    array_options = ("weights", "pos_weight")
    array_ndim = None
