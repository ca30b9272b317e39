r"""Calibration: top-label calibration error, reliability curves, temperature scaling.

Binning rule (shared by `expected_calibration_error` and `calibration_curve`):
the top-label confidence $c_i = \max_k \operatorname{softmax}(x_i)_k$ of an
example goes to bin

$$b_i = \min(\lfloor c_i B \rfloor,\ B - 1),$$

so bin $b$ holds $[b/B, (b+1)/B)$ and the last bin is closed, $[1 - 1/B, 1]$.
torchmetrics' `CalibrationError` uses the same half-open bins (`torch.bucketize`
with `right=True` against `linspace(0, 1, B + 1)`) but keeps an extra bin for
confidence exactly 1.0, where jaxce puts it in the last bin; it also applies
softmax only when some input lies outside [0, 1] (guessing whether it got
probabilities), where jaxce always takes logits. The two agree whenever no
confidence is exactly 1.0, up to rounding of confidences that fall exactly on
a bin edge.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from . import _checks, _labels
from ._reduce import safe_divide
from ._softmax import logsumexp

NORMS = ("l1", "l2", "max")


class CalibrationCurve(NamedTuple):
    """Per-bin statistics of a reliability diagram, each of shape `(n_bins,)`.

    Bin `b` covers confidences $[b/B, (b+1)/B)$, the last one $[1 - 1/B, 1]$;
    the edges are `jnp.linspace(0, 1, n_bins + 1)`.

    Attributes:
      confidence: mean top-label confidence of the examples in the bin; NaN
        where the bin is empty.
      accuracy: fraction of those examples whose top prediction is right; NaN
        where the bin is empty.
      counts: number of examples in the bin (int32); 0 marks an empty bin.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxce
      >>> logits = jnp.array([[2.0, 0.0], [0.0, 2.0], [0.0, 0.5]])
      >>> curve = jaxce.calibration_curve(logits, jnp.array([0, 0, 1]), n_bins=4)
      >>> full = curve.counts > 0
      >>> with jnp.printoptions(precision=4):
      ...     print(jnp.linspace(0, 1, 5))
      ...     print(curve.confidence[full], curve.accuracy[full], curve.counts[full])
      [0.   0.25 0.5  0.75 1.  ]
      [0.6225 0.8808] [1.  0.5] [1 2]
    """

    confidence: jax.Array
    accuracy: jax.Array
    counts: jax.Array


def _norm(value: Any) -> str:
    if value not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}; got {value!r}.")
    return value


def _prepare(logits, labels, axis, where):
    """Validates; returns float logits (class axis last, examples flattened), labels, mask, bad."""
    logits = _checks.floating("logits", logits)
    axis = _checks.class_axis(axis, logits.ndim)
    classes = _labels.parse(logits, labels, axis, allow_probs=False).classes
    assert classes is not None
    num_classes = logits.shape[axis]
    example_shape = _checks.without_axis(logits.shape, axis)
    mask, bad = _labels.example_mask(
        classes, example_shape, num_classes, ignore_index=None, where=where
    )
    assert bad is not None
    x = jnp.moveaxis(logits, axis, -1).astype(_checks.compute_dtype(logits.dtype))
    x = x.reshape(-1, num_classes)
    return x, classes.reshape(-1), mask.reshape(-1), bad.reshape(-1)


def _top_label(x: jax.Array, classes: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Top-label confidence `max_k softmax(x)_k = 1 / sum_k exp(x_k - max x)`, and correctness.

    The reciprocal form is exact for ties (constant logits give exactly 1/K)
    and gives exactly 1.0 when the other classes underflow.
    """
    top = jnp.max(x, axis=-1, keepdims=True)
    confidence = 1 / jnp.sum(jnp.exp(x - lax.stop_gradient(top)), axis=-1)
    correct = jnp.argmax(x, axis=-1).astype(classes.dtype) == classes
    return confidence, correct


def _bin_sums(x, classes, mask, bad, n_bins):
    """Per-bin sums of confidence, correct predictions (int32) and counts (int32)."""
    confidence, correct = _top_label(x, classes)
    # A NaN confidence (NaN logits) lands in some bin and makes its statistics NaN.
    index = jnp.floor(confidence * n_bins)
    index = jnp.clip(jnp.nan_to_num(index), 0, n_bins - 1).astype(jnp.int32)
    # One-hot over bins rather than a scatter: deterministic, and fused into the sums.
    onehot = (index[:, None] == jnp.arange(n_bins, dtype=jnp.int32)[None, :]) & mask[:, None]
    conf_sum = jnp.sum(jnp.where(onehot, confidence[:, None], 0), axis=0)
    correct_sum = jnp.sum(onehot & correct[:, None], axis=0, dtype=jnp.int32)
    count = jnp.sum(onehot, axis=0, dtype=jnp.int32)
    # A counted label outside [0, K) is never read as "wrong": its bin becomes NaN.
    poisoned = jnp.any(onehot & bad[:, None], axis=0)
    conf_sum = jnp.where(poisoned, jnp.nan, conf_sum)
    return conf_sum, correct_sum, count


@functools.partial(jax.jit, static_argnames=("n_bins", "norm", "axis"))
def expected_calibration_error(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    n_bins: int = 15,
    norm: str = "l1",
    axis: int = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Top-label expected calibration error (ECE), its RMS (`"l2"`) and maximum (`"max"`) forms.

    With confidences $c_i = \max_k \operatorname{softmax}(x_i)_k$, predictions
    $\hat y_i = \arg\max_k x_{ik}$, bins $b_i = \min(\lfloor c_i B \rfloor, B-1)$
    and, per non-empty bin $b$ holding $n_b$ of the $n$ counted examples,
    accuracy $a_b$, mean confidence $\bar c_b$ and share $\pi_b = n_b / n$:

    $$
    \mathrm{ECE} = \sum_b \pi_b\,\lvert a_b - \bar c_b\rvert, \qquad
    \mathrm{RMSCE} = \sqrt{\sum_b \pi_b\,(a_b - \bar c_b)^2}, \qquad
    \mathrm{MCE} = \max_{b:\,n_b > 0} \lvert a_b - \bar c_b\rvert .
    $$

    Always $0 \le \mathrm{ECE} \le \mathrm{RMSCE} \le \mathrm{MCE} \le 1$. The
    binning rule and how it compares with torchmetrics are described in
    [`calibration_curve`][jaxce.calibration_curve]. This is a metric: it is
    piecewise constant in the predictions, so do not train on it.

    Args:
      logits: floating array with the classes on `axis`, e.g. `(N, K)`; the
        confidences are always `softmax(logits)`, never the values themselves.
      labels: integer class indices, shape = logits shape without `axis`.
      n_bins: $B \ge 1$, the number of equal-width bins on [0, 1].
      norm: `"l1"` (ECE), `"l2"` (RMS calibration error) or `"max"` (MCE).
      axis: the class axis; all other axes are examples.
      where: boolean mask broadcastable to the examples' shape; False excludes
        an example.

    Returns:
      A scalar: float32 for half-precision logits, otherwise the logits' dtype.
      0 if no example counts; NaN if a counted label lies outside `[0, K)`.

    Raises:
      TypeError: integer logits, non-integer labels, a non-integer `n_bins`, a
        non-boolean `where`.
      ValueError: `n_bins < 1`, an unknown `norm`, labels whose shape does not
        match the logits without `axis`.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxce
      >>> logits = jnp.array([[3.0, 0.0], [2.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
      >>> labels = jnp.array([0, 1, 1, 0])
      >>> for norm in ("l1", "l2", "max"):
      ...     print(f"{jaxce.expected_calibration_error(logits, labels, n_bins=5, norm=norm):.4f}")
      0.3428
      0.3507
      0.4167
    """
    n_bins = _checks.positive_integer("n_bins", n_bins)
    norm = _norm(norm)
    x, classes, mask, bad = _prepare(logits, labels, axis, where)
    conf_sum, correct_sum, count = _bin_sums(x, classes, mask, bad, n_bins)
    # n_b (a_b - c_b) = (#correct in b) - (sum of confidences in b).
    gap_sum = correct_sum.astype(x.dtype) - conf_sum
    n = jnp.sum(count).astype(x.dtype)
    if norm == "l1":
        return safe_divide(jnp.sum(jnp.abs(gap_sum)), n)
    gap = safe_divide(gap_sum, count.astype(x.dtype))
    if norm == "l2":
        return jnp.sqrt(safe_divide(jnp.sum(gap_sum * gap), n))
    return jnp.max(jnp.abs(gap))


@functools.partial(jax.jit, static_argnames=("n_bins", "axis"))
def calibration_curve(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    n_bins: int = 15,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> CalibrationCurve:
    r"""Per-bin mean confidence, accuracy and count: the data of a reliability diagram.

    The top-label confidence $c_i = \max_k \operatorname{softmax}(x_i)_k$ of
    each counted example goes to the equal-width bin

    $$b_i = \min(\lfloor c_i B \rfloor,\ B - 1),$$

    so bin $b$ holds $[b/B, (b+1)/B)$ and the last bin $[1 - 1/B, 1]$ also takes
    confidence 1.0. Per bin, `confidence` is $\bar c_b$, `accuracy` the share of
    correct top predictions $\hat y_i = \arg\max_k x_{ik}$ (ties go to the
    lowest class index), `counts` is $n_b$.

    torchmetrics' `CalibrationError` bins the same way (`torch.bucketize(c,
    linspace(0, 1, B + 1), right=True) - 1`) except that confidence exactly 1.0
    gets a bin of its own there; it also treats its input as probabilities
    unless some value lies outside [0, 1], whereas here the input is always
    logits.

    Args:
      logits: floating array with the classes on `axis`, e.g. `(N, K)`.
      labels: integer class indices, shape = logits shape without `axis`.
      n_bins: $B \ge 1$.
      axis: the class axis; all other axes are examples.
      where: boolean mask broadcastable to the examples' shape.

    Returns:
      A [`CalibrationCurve`][jaxce.CalibrationCurve] of `(n_bins,)` arrays.
      Empty bins read `counts == 0` and NaN confidence and accuracy (matplotlib
      leaves NaN points out). Float32 for half-precision logits. A counted
      label outside `[0, K)` makes its bin's confidence and accuracy NaN.

    Raises:
      TypeError: integer logits, non-integer labels, a non-integer `n_bins`.
      ValueError: `n_bins < 1`, labels whose shape does not match.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxce
      >>> logits = jnp.array([[3.0, 0.0], [2.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
      >>> curve = jaxce.calibration_curve(logits, jnp.array([0, 1, 1, 0]), n_bins=5)
      >>> with jnp.printoptions(precision=4):
      ...     print(curve.confidence)
      ...     print(curve.accuracy)
      ...     print(curve.counts)
      [   nan    nan    nan 0.7311 0.9167]
      [nan nan nan 1.  0.5]
      [0 0 0 2 2]
    """
    n_bins = _checks.positive_integer("n_bins", n_bins)
    x, classes, mask, bad = _prepare(logits, labels, axis, where)
    conf_sum, correct_sum, count = _bin_sums(x, classes, mask, bad, n_bins)
    empty = count == 0
    n = jnp.where(empty, 1, count).astype(x.dtype)
    confidence = jnp.where(empty, jnp.nan, conf_sum / n)
    # The poisoned-bin NaN of conf_sum carries over to the accuracy.
    accuracy = jnp.where(empty | jnp.isnan(conf_sum), jnp.nan, correct_sum.astype(x.dtype) / n)
    return CalibrationCurve(confidence, accuracy, count)


def _temperature_bound(name: str, value: Any) -> float:
    result = _checks.static_float(name, value)
    if result <= 0:
        raise ValueError(f"{name} must be > 0; got {result}.")
    return result


def _nll_derivatives(beta, x, target, mask, n):
    """First and second derivative in beta of the mean NLL of softmax(beta * x).

    With d = x - x_y: f'(beta) = mean_i E_p[d], f''(beta) = mean_i Var_p[d]. The
    centring on x_y makes both exactly 0 for constant logits.
    """
    d = x - target
    z = beta * x
    p = jnp.exp(z - logsumexp(z, -1))
    # 0 * (-inf) = 0 for masked (-inf) classes.
    pd = jnp.where(p > 0, p * d, 0)
    mean_d = jnp.sum(pd, axis=-1, keepdims=True)
    centred = jnp.where(p > 0, d - mean_d, 0)
    var_d = jnp.sum(p * centred * centred, axis=-1, keepdims=True)
    g = safe_divide(jnp.sum(jnp.where(mask, mean_d, 0)), n)
    h = safe_divide(jnp.sum(jnp.where(mask, var_d, 0)), n)
    return g, h


@functools.partial(
    jax.jit, static_argnames=("axis", "min_temperature", "max_temperature", "num_iterations")
)
def fit_temperature(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    axis: int = -1,
    where: ArrayLike | None = None,
    min_temperature: float = 1e-3,
    max_temperature: float = 1e3,
    num_iterations: int = 50,
) -> jax.Array:
    r"""Temperature scaling: the $T > 0$ minimising the mean NLL of `softmax(logits / T)`.

    $$
    T^\star = \arg\min_{T_{\min} \le T \le T_{\max}} \frac{1}{n}\sum_i m_i
        \Big[\operatorname{lse}(x_i / T) - x_{i y_i} / T\Big]
    $$

    The objective is convex in $\beta = 1/T$, with $f'(\beta) =
    \overline{\mathbb{E}_{p}[x] - x_y}$ and $f''(\beta) = \overline{\operatorname{Var}_p[x]}$
    ($p = \operatorname{softmax}(\beta x)$). The solver keeps a bracket in $\beta$
    and takes a Newton step when it stays inside the bracket and at least
    halves the previous step, otherwise a geometric bisection of the bracket,
    for a fixed `num_iterations` (a `lax.fori_loop`): it always converges and
    the result is always finite and within the bounds.

    Edge cases: when every counted prediction is right and confident the NLL
    keeps falling as $T \to 0$, and the result is `min_temperature`; when the
    labels are anti-correlated with the logits (e.g. every label is the
    least likely class) the optimum is $T \to \infty$ and the result is
    `max_temperature`. Logits that carry no information (constant rows, a
    single class) or no counted example give $T = 1$.

    Fit on held-out data (a validation split), then evaluate with
    `softmax(logits, temperature=T)` or `softmax_cross_entropy(logits / T,
    labels)`.

    Args:
      logits: floating array with the classes on `axis`, e.g. `(N, K)`; `-inf`
        marks a masked class.
      labels: integer class indices, shape = logits shape without `axis`.
      axis: the class axis; all other axes are examples.
      where: boolean mask broadcastable to the examples' shape.
      min_temperature: lower bound $T_{\min} > 0$.
      max_temperature: upper bound $T_{\max} > T_{\min}$.
      num_iterations: solver iterations (static). Newton usually converges in
        under ten; 50 reach float32 precision over the default bounds even by
        bisection alone.

    Returns:
      A scalar $T$: float32 for half-precision logits, otherwise the logits'
      dtype. NaN if a counted label lies outside `[0, K)`.

    Raises:
      TypeError: integer logits, non-integer labels, a non-boolean `where`.
      ValueError: mismatched shapes, bounds not with $0 < T_{\min} < T_{\max}$,
        `num_iterations < 1`.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxce
      >>> logits = jnp.array([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 4.0], [4.0, 0.0, 0.0]])
      >>> labels = jnp.array([0, 1, 2, 1])
      >>> t = jaxce.fit_temperature(logits, labels)
      >>> print(f"{t:.4f}")
      2.2324
      >>> nll = jaxce.softmax_cross_entropy(logits, labels)
      >>> print(f"{nll:.4f} -> {jaxce.softmax_cross_entropy(logits / t, labels):.4f}")
      1.0360 -> 0.7356

    References:
      Guo, Pleiss, Sun and Weinberger, "On Calibration of Modern Neural
      Networks", ICML 2017.
    """
    t_min = _temperature_bound("min_temperature", min_temperature)
    t_max = _temperature_bound("max_temperature", max_temperature)
    if not t_min < t_max:
        raise ValueError(f"max_temperature must be > min_temperature = {t_min}; got {t_max}.")
    iterations = _checks.positive_integer("num_iterations", num_iterations)
    x, classes, mask, bad = _prepare(logits, labels, axis, where)
    x = lax.stop_gradient(x)
    onehot = _labels.target_mask(classes, x.shape, 1)
    target = _labels.pick(x, onehot, 1)
    m = mask[:, None]
    n = jnp.sum(mask).astype(x.dtype)
    dtype = x.dtype
    lo0, hi0 = jnp.asarray(1 / t_max, dtype), jnp.asarray(1 / t_min, dtype)

    tiny = 16 * jnp.finfo(dtype).eps

    def body(_, state):
        beta, lo, hi, last_step = state
        g, h = _nll_derivatives(beta, x, target, m, n)
        # f is convex: f'(beta) > 0 puts the minimiser below beta, < 0 above it.
        lo = jnp.where(g <= 0, beta, lo)
        hi = jnp.where(g >= 0, beta, hi)
        newton = beta - g / h
        step = jnp.abs(newton - beta)
        # Newton must stay in the bracket and at least halve the step (or be at
        # rounding level, once converged); otherwise bisect the bracket in log space.
        use_newton = (
            jnp.isfinite(newton)
            & (newton >= lo)
            & (newton <= hi)
            & (step <= jnp.maximum(last_step / 2, tiny * beta))
        )
        new_beta = jnp.where(use_newton, newton, jnp.sqrt(lo * hi))
        return new_beta, lo, hi, jnp.abs(new_beta - beta)

    beta0 = jnp.clip(jnp.asarray(1, dtype), lo0, hi0)
    beta = lax.fori_loop(0, iterations, body, (beta0, lo0, hi0, hi0 - lo0))[0]
    t = 1 / jnp.clip(beta, lo0, hi0)
    # The minimiser sits on a bound when f' keeps one sign over the whole range
    # (f' == 0 throughout, as for constant logits, keeps T = 1).
    g_lo, _ = _nll_derivatives(lo0, x, target, m, n)
    g_hi, _ = _nll_derivatives(hi0, x, target, m, n)
    t = jnp.where((g_hi <= 0) & (g_lo < 0), jnp.asarray(t_min, dtype), t)
    t = jnp.where((g_lo >= 0) & (g_hi > 0), jnp.asarray(t_max, dtype), t)
    return jnp.where(jnp.any(bad), jnp.nan, t)
