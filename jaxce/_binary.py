"""Binary and multi-label cross-entropy, from logits and from probabilities.

Every element is its own example, so the analytic backward is elementwise: it
keeps no residuals beyond the inputs and recomputes the few transcendental
values it needs from the logits.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from . import _checks
from ._options import LossOptions
from ._reduce import reduce_loss

# PyTorch's floor on p (1 - p) in the backward of `binary_cross_entropy`.
_BCE_GRAD_EPS = 1e-12


class _Config(NamedTuple):
    smoothing: float


def times(a: jax.Array, b: jax.Array) -> jax.Array:
    """`a * b` with `0 * inf = 0`: a term with no weight contributes nothing."""
    return jnp.where(a == 0, 0, a * b)


def elementwise(name: str, x: ArrayLike | None, shape: tuple[int, ...]) -> jax.Array | None:
    """A floating array broadcast to `shape` (its cotangent sums back under autodiff)."""
    if x is None:
        return None
    x = _checks.floating(name, x)
    try:
        return jnp.broadcast_to(x, shape)
    except ValueError:
        raise ValueError(
            f"{name} must be broadcastable to logits shape {shape}; got {x.shape}."
        ) from None


def binary_labels(labels: ArrayLike, shape: tuple[int, ...], dtype: Any, name: str) -> jax.Array:
    """Targets of the inputs' shape; integer and boolean 0/1 labels become `dtype`."""
    labels = jnp.asarray(labels)
    if labels.dtype == jnp.bool_ or jnp.issubdtype(labels.dtype, jnp.integer):
        labels = labels.astype(dtype)
    elif not jnp.issubdtype(labels.dtype, jnp.floating):
        raise TypeError(f"labels must be floating (or 0/1 integer) targets; got {labels.dtype}.")
    _checks.same_shape("labels", labels, shape, f"same as {name}")
    return labels


def _dtype(*arrays: jax.Array | None) -> Any:
    return _checks.compute_dtype(*(a.dtype for a in arrays if a is not None))


def _cast(x: jax.Array | None, like: jax.Array | None) -> jax.Array | None:
    return None if x is None or like is None else x.astype(like.dtype)


def _masked(mask: jax.Array, d: jax.Array | None) -> jax.Array | None:
    """Exactly zero on masked elements, whatever their inputs hold."""
    return None if d is None else jnp.where(mask, d, 0)


# From logits.


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _bce_logits(cfg, logits, labels, weights, pos_weight, mask):
    return _bce_logits_fwd(cfg, logits, labels, weights, pos_weight, mask)[0]


def _bce_logits_terms(cfg, logits, labels, pos_weight):
    x = logits.astype(_dtype(logits, labels, pos_weight))
    y = labels.astype(x.dtype)
    if cfg.smoothing:
        y = (1 - cfg.smoothing) * y + cfg.smoothing / 2
    py = y if pos_weight is None else pos_weight.astype(x.dtype) * y
    return x, y, py


def _bce_logits_fwd(cfg, logits, labels, weights, pos_weight, mask):
    x, y, py = _bce_logits_terms(cfg, logits, labels, pos_weight)
    # -[p y log s(x) + (1 - y) log s(-x)]: finite at x = +-inf whenever its weight is 0.
    loss = times(1 - y, jax.nn.softplus(x)) + times(py, jax.nn.softplus(-x))
    if weights is not None:
        loss = times(weights.astype(x.dtype), loss)
    return jnp.where(mask, loss, 0), (logits, labels, weights, pos_weight, mask)


def _bce_logits_bwd(cfg, res, g):
    logits, labels, weights, pos_weight, mask = res
    x, y, py = _bce_logits_terms(cfg, logits, labels, pos_weight)
    g = jnp.where(mask, g, 0)
    gw = g if weights is None else g * weights.astype(x.dtype)
    sp_pos, sp_neg = jax.nn.softplus(x), jax.nn.softplus(-x)
    # (1 - y) s(x) - p y s(-x) = s(x) (1 + (p - 1) y) - p y
    dx = gw * ((1 - y) * jax.nn.sigmoid(x) - py * jax.nn.sigmoid(-x))
    p = 1 if pos_weight is None else pos_weight.astype(x.dtype)
    dy = (1 - cfg.smoothing) * times(gw, times(p, sp_neg) - sp_pos)
    dw = dpw = None
    if weights is not None:
        dw = times(g, times(1 - y, sp_pos) + times(py, sp_neg))
    if pos_weight is not None:
        dpw = times(gw, times(y, sp_neg))
    dx, dy, dw, dpw = (_masked(mask, d) for d in (dx, dy, dw, dpw))
    return (
        dx.astype(logits.dtype),
        _cast(dy, labels),
        _cast(dw, weights),
        _cast(dpw, pos_weight),
        None,
    )


_bce_logits.defvjp(_bce_logits_fwd, _bce_logits_bwd)


@functools.partial(jax.jit, static_argnames=("label_smoothing", "reduction"))
def sigmoid_binary_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    pos_weight: ArrayLike | None = None,
    label_smoothing: float = 0.0,
    where: ArrayLike | None = None,
    reduction: str = "mean",
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
    prediction costs 0; PyTorch returns NaN there). `"mean"` divides the sum by
    the number of elements where `where` is True; `weights` do not enter the
    normaliser (as in PyTorch).

    The gradient is analytic (a `jax.custom_vjp`),
    $\partial\ell/\partial x = w\big(\sigma(x)(1 + (p-1)\tilde y) - p\tilde y\big)$,
    and exact for soft `labels`, `weights` and `pos_weight` too; it is
    differentiable again (`jax.hessian`). Forward mode (`jvp`) is not
    supported by `jax.custom_vjp`.

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

    Returns:
      A scalar, or elementwise losses for `"none"`; float32 for half-precision
      inputs, otherwise the inputs' floating type.

    Raises:
      TypeError: integer logits, non-floating `weights` or `pos_weight`, a
        non-boolean `where`.
      ValueError: `labels` not of the logits' shape, `weights`, `pos_weight`
        or `where` not broadcastable to it, `label_smoothing` outside [0, 1],
        an unknown `reduction`.

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
    logits = _checks.floating("logits", logits)
    shape = logits.shape
    eps = _checks.unit_interval("label_smoothing", label_smoothing)
    _checks.reduction(reduction)
    weights = elementwise("weights", weights, shape)
    pos_weight = elementwise("pos_weight", pos_weight, shape)
    labels = binary_labels(labels, shape, _dtype(logits, weights, pos_weight), "logits")
    mask = _checks.example_mask(where, shape)
    losses = _bce_logits(_Config(eps), logits, labels, weights, pos_weight, mask)
    return reduce_loss(losses, mask.astype(losses.dtype), reduction)


# From probabilities.


@jax.custom_vjp
def _bce_probs(probs, labels, weights, mask):
    return _bce_probs_fwd(probs, labels, weights, mask)[0]


def _clamped_logs(probs, labels):
    p = probs.astype(_dtype(probs, labels))
    log_p = jnp.maximum(jnp.log(p), -100)
    log_q = jnp.maximum(jnp.log1p(-p), -100)
    return p, labels.astype(p.dtype), log_p, log_q


def _bce_probs_fwd(probs, labels, weights, mask):
    _, y, log_p, log_q = _clamped_logs(probs, labels)
    loss = -y * log_p - (1 - y) * log_q
    if weights is not None:
        loss = weights.astype(loss.dtype) * loss
    return jnp.where(mask, loss, 0), (probs, labels, weights, mask)


def _bce_probs_bwd(res, g):
    probs, labels, weights, mask = res
    p, y, log_p, log_q = _clamped_logs(probs, labels)
    g = jnp.where(mask, g, 0)
    gw = g if weights is None else g * weights.astype(p.dtype)
    # PyTorch's rule: (p - y) / max(p (1 - p), 1e-12), so p = 0 or 1 gives +-1e12, not 0.
    dp = gw * (p - y) / jnp.maximum(p * (1 - p), _BCE_GRAD_EPS)
    dy = gw * (log_q - log_p)
    dw = None if weights is None else g * (-y * log_p - (1 - y) * log_q)
    dp, dy, dw = (_masked(mask, d) for d in (dp, dy, dw))
    return dp.astype(probs.dtype), _cast(dy, labels), _cast(dw, weights), None


_bce_probs.defvjp(_bce_probs_fwd, _bce_probs_bwd)


@functools.partial(jax.jit, static_argnames=("reduction",))
def binary_cross_entropy(
    probs: ArrayLike,
    labels: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    reduction: str = "mean",
) -> jax.Array:
    r"""Binary cross-entropy from probabilities (PyTorch `binary_cross_entropy`).

    $$
    \ell = -w\big[y \max(\log p, -100) + (1-y)\max(\log(1-p), -100)\big]
    $$

    Each log is clamped at $-100$ as in PyTorch, so $p = 0$ or $1$ gives a
    finite loss. Prefer
    [`sigmoid_binary_cross_entropy`][jaxce.sigmoid_binary_cross_entropy] on
    logits: it is exact where $\sigma(x)$ rounds to 0 or 1. `"mean"` divides
    by the number of elements where `where` is True.

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
      weights: element weights broadcastable to the shape of `probs`.
      where: boolean mask broadcastable to the shape of `probs`.
      reduction: `"mean"`, `"sum"` or `"none"`.

    Returns:
      A scalar, or elementwise losses for `"none"`; float32 for half precision.

    Raises:
      TypeError: integer `probs` or `weights`, a non-boolean `where`.
      ValueError: `labels` not of the shape of `probs`, `weights` or `where`
        not broadcastable to it, an unknown `reduction`.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxce
      >>> probs = jnp.array([0.9, 0.2, 0.0, 1.0])
      >>> labels = jnp.array([1.0, 0.0, 1.0, 1.0])
      >>> with jnp.printoptions(precision=4):
      ...     print(jaxce.binary_cross_entropy(probs, labels, reduction="none"))
      [  0.1054   0.2231 100.       0.    ]
    """
    probs = _checks.floating("probs", probs)
    shape = probs.shape
    _checks.reduction(reduction)
    weights = elementwise("weights", weights, shape)
    labels = binary_labels(labels, shape, _dtype(probs, weights), "probs")
    mask = _checks.example_mask(where, shape)
    losses = _bce_probs(probs, labels, weights, mask)
    return reduce_loss(losses, mask.astype(losses.dtype), reduction)


@dataclasses.dataclass(frozen=True)
class BCEWithLogitsLoss(LossOptions):
    r"""Options of [`sigmoid_binary_cross_entropy`][jaxce.sigmoid_binary_cross_entropy], callable.

    Calling it computes, per element,
    $w\,[(1-y)\operatorname{softplus}(x) + p_w\, y \operatorname{softplus}(-x)]$
    with the stored `weights` $w$ and `pos_weight` $p_w$.

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

    def __post_init__(self) -> None:
        self._freeze_arrays()
        _checks.unit_interval("label_smoothing", self.label_smoothing)
        _checks.reduction(self.reduction)
