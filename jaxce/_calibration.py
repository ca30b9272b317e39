r"""Calibration measures: binned calibration errors, reliability curves, Brier scores, bootstrap.

Equal-width binning rule (the default, shared by every measure and by
`CalibrationState`): a confidence $c$ goes to bin

$$b = \min(\lfloor c B \rfloor,\ B - 1),$$

so bin $b$ holds $[b/B, (b+1)/B)$ and the last bin is closed, $[1 - 1/B, 1]$.
torchmetrics' `CalibrationError` uses the same half-open bins (`torch.bucketize`
with `right=True` against `linspace(0, 1, B + 1)`) but keeps an extra bin for
confidence exactly 1.0, where jaxce puts it in the last bin; it also applies
softmax only when some input lies outside [0, 1] (guessing whether it got
probabilities), where jaxce always takes logits. The two agree whenever no
confidence is exactly 1.0, up to rounding of confidences that fall exactly on
a bin edge.

Equal-mass binning (`binning="mass"`) sorts the $n$ counted confidences and
cuts them into $B$ runs of $\lceil n/B \rceil$ or $\lfloor n/B \rfloor$
examples, as `numpy.array_split` does (the longer runs first); equal
confidences keep their order in the batch.

The temperature and vector-scaling fits live in `_calibration_fit`, the
streaming state in `_calibration_state`.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from . import _calibration_bins as _bins
from . import _checks
from ._calibration_fit import fit_temperature as fit_temperature  # re-exported for jaxce
from ._reduce import reduce_loss


class CalibrationCurve(NamedTuple):
    """Per-bin statistics of a reliability diagram, each of shape `(n_bins,)`.

    With equal-width bins, bin `b` covers confidences $[b/B, (b+1)/B)$, the
    last one $[1 - 1/B, 1]$; the edges are `jnp.linspace(0, 1, n_bins + 1)`.

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


# Expected calibration error.


@functools.partial(jax.jit, static_argnames=("options",))
def _expected_calibration_error(logits, labels, where, options: _bins.Options) -> jax.Array:
    examples = _bins.multiclass(logits, labels, options.axis, where)
    confidence, outcome = _bins.outcomes(examples, options.classwise)
    sums = _bins.bin_sums(
        confidence, outcome, examples.mask, examples.bad, options.n_bins, options.binning
    )
    return _bins.calibration_error(sums, options.norm, options.debiased)


def expected_calibration_error(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    n_bins: int = 15,
    norm: str = "l1",
    binning: str = "width",
    classwise: bool = False,
    debiased: bool = False,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Binned calibration error: top-label or classwise; ECE, RMS or MCE; width or mass bins.

    **Top-label** (the default). With confidences
    $c_i = \max_k \operatorname{softmax}(x_i)_k$, predictions
    $\hat y_i = \arg\max_k x_{ik}$ (ties to the lowest index) and outcomes
    $o_i = [\hat y_i = y_i]$, each counted example goes to a bin; per non-empty
    bin $b$ holding $n_b$ of the $n$ counted examples, with accuracy
    $a_b = \frac{1}{n_b}\sum_{i \in b} o_i$, mean confidence $\bar c_b$ and share
    $\pi_b = n_b / n$:

    $$
    \mathrm{ECE} = \sum_b \pi_b\,\lvert a_b - \bar c_b\rvert, \qquad
    \mathrm{RMSCE} = \sqrt{\sum_b \pi_b\,(a_b - \bar c_b)^2}, \qquad
    \mathrm{MCE} = \max_{b:\,n_b > 0} \lvert a_b - \bar c_b\rvert .
    $$

    **Bins.** `binning="width"`: $b_i = \min(\lfloor c_i B \rfloor, B-1)$, so bin
    $b$ holds $[b/B, (b+1)/B)$ and the last one also takes 1.0 (torchmetrics'
    rule, except that it gives 1.0 a bin of its own). `binning="mass"`
    (adaptive bins, Nixon et al. 2019): the counted confidences in ascending
    order (equal ones in batch order) are cut into $B$ runs of
    $\lceil n/B \rceil$ (the first $n \bmod B$ runs) and $\lfloor n/B \rfloor$
    examples, like `numpy.array_split`; with $n < B$ the last bins are empty.

    **Classwise** (`classwise=True`, the marginal calibration error of
    torchmetrics and netcal users): for each class $k$ the same binned error
    $E_k$ of the one-vs-rest confidences $p_{ik} = \operatorname{softmax}(x_i)_k$
    against the outcomes $[y_i = k]$, over all $n$ counted examples, averaged
    over the $K$ classes as the norm averages: the mean of $E_k$ (`"l1"`), the
    root mean square of $E_k$ (`"l2"`, Kumar et al.'s marginal L2 error) or the
    maximum (`"max"`). A class absent from the labels still counts.

    **Debiased** (`debiased=True`, needs `norm="l2"`; Kumar et al. 2019): the
    plug-in $(a_b - \bar c_b)^2$ overestimates the squared gap by the sampling
    variance of $a_b$; the estimate

    $$
    \widehat{E^2} = \sum_{b:\,n_b \ge 2} \pi_b \Big[(a_b - \bar c_b)^2
        - \frac{a_b (1 - a_b)}{n_b - 1}\Big]
    $$

    can be negative and is returned as $\sqrt{\max(\widehat{E^2}, 0)}$ (per
    class before the class average, with `classwise=True`).

    Always $0 \le \mathrm{ECE} \le \mathrm{RMSCE} \le \mathrm{MCE} \le 1$. This is
    a metric: piecewise constant in the predictions, so do not train on it.

    Args:
      logits: floating array with the classes on `axis`, e.g. `(N, K)`; the
        confidences are always `softmax(logits)`, never the values themselves.
      labels: integer class indices, shape = logits shape without `axis`.
      n_bins: $B \ge 1$, the number of bins.
      norm: `"l1"` (ECE), `"l2"` (RMS calibration error) or `"max"` (MCE).
      binning: `"width"` (equal-width bins on [0, 1]) or `"mass"` (equal-mass).
      classwise: the classwise (marginal) error instead of the top-label one.
      debiased: Kumar et al.'s debiased estimate (only with `norm="l2"`).
      axis: the class axis; all other axes are examples.
      where: boolean mask broadcastable to the examples' shape; False excludes
        an example.

    Returns:
      A scalar: float32 for half-precision logits, otherwise the logits' dtype.
      0 if no example counts (also for an empty batch); NaN if a counted label
      lies outside `[0, K)` (under `jax.experimental.checkify`, an error naming
      it).

    Raises:
      TypeError: integer logits, non-integer labels, a non-integer `n_bins`, a
        non-bool `classwise` or `debiased`, a non-boolean `where`.
      ValueError: `n_bins < 1`, an unknown `norm` or `binning`, `debiased=True`
        without `norm="l2"`, labels whose shape does not match the logits
        without `axis`.

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
      >>> logits = jnp.array([[3.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 1.0, 1.5],
      ...                     [1.0, 0.0, 0.0], [0.5, 0.0, 2.0], [0.0, 0.0, 0.0]])
      >>> labels = jnp.array([0, 1, 1, 0, 2, 1])
      >>> for options in ({}, {"binning": "mass", "n_bins": 3}, {"classwise": True}):
      ...     options = {"n_bins": 5, **options}
      ...     print(f"{jaxce.expected_calibration_error(logits, labels, **options):.4f}")
      0.1706
      0.3119
      0.2350

    References:
      Guo, Pleiss, Sun and Weinberger, "On Calibration of Modern Neural
      Networks", ICML 2017. Nixon, Dusenberry, Zhang, Jerfel and Tran,
      "Measuring Calibration in Deep Learning", CVPR Workshops 2019. Kumar,
      Liang and Ma, "Verified Uncertainty Calibration", NeurIPS 2019.
    """
    return _expected_calibration_error(
        logits, labels, where, _bins.options(n_bins, norm, binning, classwise, debiased, axis)
    )


@functools.partial(jax.jit, static_argnames=("options",))
def _sigmoid_calibration_error(logits, labels, where, options: _bins.Options) -> jax.Array:
    examples = _bins.binary(logits, labels, where)
    sums = _bins.bin_sums(
        jax.nn.sigmoid(examples.logits),
        examples.labels,
        examples.mask,
        examples.bad,
        options.n_bins,
        options.binning,
    )
    return _bins.calibration_error(sums, options.norm)


def sigmoid_calibration_error(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    n_bins: int = 15,
    norm: str = "l1",
    binning: str = "width",
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Binned calibration error of sigmoid outputs (binary or multi-label).

    Every element is one prediction: confidence $p_i = \sigma(x_i)$ of the
    positive class against its label $y_i \in \{0, 1\}$. Per non-empty bin,
    with mean predicted probability $\bar p_b$, observed frequency of positives
    $\bar y_b$ and share $\pi_b = n_b / n$:

    $$
    \mathrm{ECE} = \sum_b \pi_b\,\lvert \bar y_b - \bar p_b\rvert, \qquad
    \mathrm{RMSCE} = \sqrt{\sum_b \pi_b\,(\bar y_b - \bar p_b)^2}, \qquad
    \mathrm{MCE} = \max_{b:\,n_b > 0} \lvert \bar y_b - \bar p_b\rvert .
    $$

    This is torchmetrics' `BinaryCalibrationError` (its confidence is the
    positive-class probability, its accuracy the label), from logits. Bins as in
    [`expected_calibration_error`][jaxce.expected_calibration_error]:
    `"width"` puts $p$ in bin $\min(\lfloor p B \rfloor, B - 1)$ (so
    $\sigma(x) = 1.0$, reached in float32 for $x \gtrsim 17$, is in the last
    bin), `"mass"` cuts the sorted probabilities into runs of
    $\lceil n/B \rceil$ or $\lfloor n/B \rfloor$.

    Args:
      logits: floating array of any shape; one prediction per element.
      labels: 0/1 targets of the same shape (bool, integer or float; a float
        in between counts as a soft target).
      n_bins: $B \ge 1$.
      norm: `"l1"`, `"l2"` or `"max"`.
      binning: `"width"` or `"mass"`.
      where: boolean mask broadcastable to the logits' shape.

    Returns:
      A scalar: float32 for half-precision logits, otherwise the logits' dtype.
      0 if no element counts; NaN if a counted label lies outside [0, 1].

    Raises:
      TypeError: integer logits, non-numeric labels, a non-boolean `where`.
      ValueError: `n_bins < 1`, an unknown `norm` or `binning`, labels of
        another shape.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxce
      >>> logits = jnp.array([2.0, 1.0, -1.0, 0.5, -2.0, 3.0])
      >>> labels = jnp.array([1, 0, 0, 1, 0, 1])
      >>> print(f"{jaxce.sigmoid_calibration_error(logits, labels, n_bins=5):.4f}")
      0.1514
    """
    return _sigmoid_calibration_error(logits, labels, where, _bins.options(n_bins, norm, binning))


# The reliability curve.


@functools.partial(jax.jit, static_argnames=("options",))
def _calibration_curve(logits, labels, where, options: _bins.Options) -> CalibrationCurve:
    examples = _bins.multiclass(logits, labels, options.axis, where)
    confidence, correct = _bins.top_label(examples.logits, examples.labels)
    sums = _bins.bin_sums(
        confidence, correct, examples.mask, examples.bad, options.n_bins, options.binning
    )
    mean_confidence, accuracy = _bins.bin_means(sums)
    return CalibrationCurve(mean_confidence, accuracy, sums.counts)


def calibration_curve(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    n_bins: int = 15,
    binning: str = "width",
    axis: int = -1,
    where: ArrayLike | None = None,
) -> CalibrationCurve:
    r"""Per-bin mean confidence, accuracy and count: the data of a reliability diagram.

    The top-label confidence $c_i = \max_k \operatorname{softmax}(x_i)_k$ of
    each counted example goes to the equal-width bin

    $$b_i = \min(\lfloor c_i B \rfloor,\ B - 1),$$

    so bin $b$ holds $[b/B, (b+1)/B)$ and the last bin $[1 - 1/B, 1]$ also takes
    confidence 1.0; with `binning="mass"` the bins are runs of the sorted
    confidences of equal size instead (see
    [`expected_calibration_error`][jaxce.expected_calibration_error]). Per bin,
    `confidence` is $\bar c_b$, `accuracy` the share of correct top predictions
    $\hat y_i = \arg\max_k x_{ik}$ (ties go to the lowest class index), `counts`
    is $n_b$.

    torchmetrics' `CalibrationError` bins the same way (`torch.bucketize(c,
    linspace(0, 1, B + 1), right=True) - 1`) except that confidence exactly 1.0
    gets a bin of its own there; it also treats its input as probabilities
    unless some value lies outside [0, 1], whereas here the input is always
    logits.

    Args:
      logits: floating array with the classes on `axis`, e.g. `(N, K)`.
      labels: integer class indices, shape = logits shape without `axis`.
      n_bins: $B \ge 1$.
      binning: `"width"` or `"mass"`.
      axis: the class axis; all other axes are examples.
      where: boolean mask broadcastable to the examples' shape.

    Returns:
      A [`CalibrationCurve`][jaxce.CalibrationCurve] of `(n_bins,)` arrays.
      Empty bins read `counts == 0` and NaN confidence and accuracy (matplotlib
      leaves NaN points out); with no counted example (an empty or all-masked
      batch) every count is 0. Float32 for half-precision logits. A counted
      label outside `[0, K)` makes its bin's confidence and accuracy NaN.

    Raises:
      TypeError: integer logits, non-integer labels, a non-integer `n_bins`.
      ValueError: `n_bins < 1`, an unknown `binning`, labels whose shape does
        not match.

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
    return _calibration_curve(
        logits, labels, where, _bins.options(n_bins, binning=binning, axis=axis)
    )


# Brier scores.


def _reduce(scores: jax.Array, examples: _bins.Examples, reduction: str) -> jax.Array:
    """Per-example scores (0 where masked) through the one reducer, in the examples' shape."""
    scores = jnp.where(examples.mask, scores, 0).reshape(examples.shape)
    return reduce_loss(scores, examples.mask.astype(scores.dtype), reduction)


@functools.partial(jax.jit, static_argnames=("axis", "reduction"))
def _brier_score(logits, labels, where, axis: int, reduction: str) -> jax.Array:
    examples = _bins.multiclass(logits, labels, axis, where)
    probs, target = _bins.class_probabilities(examples.logits, examples.labels)
    # With q the probabilities off the label, 1 - p_y = sum(q) exactly, not 1 minus
    # a rounded p_y: a confident right prediction keeps its small score.
    q = jnp.where(target > 0, 0, probs)
    scores = jnp.square(jnp.sum(q, axis=-1)) + jnp.sum(jnp.square(q), axis=-1)
    scores = jnp.where(examples.bad, jnp.nan, scores)
    return _reduce(scores, examples, reduction)


def brier_score(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    axis: int = -1,
    where: ArrayLike | None = None,
    reduction: str = "mean",
) -> jax.Array:
    r"""Multiclass Brier score of `softmax(logits)`: the mean squared error against one-hot labels.

    $$
    \mathrm{BS} = \frac{1}{n} \sum_i m_i \sum_{k=1}^{K} \big(p_{ik} - [k = y_i]\big)^2,
    \qquad p_i = \operatorname{softmax}(x_i),
    $$

    over the $n$ counted examples; between 0 and 2. It is a proper scoring
    rule: calibration and sharpness together, with no bins. Per example it is
    computed as $(\sum_{k \ne y} p_k)^2 + \sum_{k \ne y} p_k^2$, so a confident
    right prediction is not lost to rounding of $1 - p_y$. torchmetrics and
    scikit-learn's multiclass `brier_score_loss` use this sum over classes.

    Args:
      logits: floating array with the classes on `axis`, e.g. `(N, K)`.
      labels: integer class indices, shape = logits shape without `axis`.
      axis: the class axis; all other axes are examples.
      where: boolean mask broadcastable to the examples' shape.
      reduction: `"mean"` over the counted examples, `"sum"`, or `"none"`
        (per example, 0 where masked).

    Returns:
      A scalar (or the examples' shape for `"none"`): float32 for
      half-precision logits, otherwise the logits' dtype. 0 if no example
      counts; NaN for a counted label outside `[0, K)`.

    Raises:
      TypeError: integer logits, non-integer labels, a non-boolean `where`.
      ValueError: mismatched shapes, an unknown `reduction`.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxce
      >>> logits = jnp.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
      >>> print(f"{jaxce.brier_score(logits, jnp.array([0, 2])):.4f}")
      0.5330

    References:
      Brier, "Verification of Forecasts Expressed in Terms of Probability",
      Monthly Weather Review 1950.
    """
    return _brier_score(
        logits, labels, where, _checks.integer("axis", axis), _checks.reduction(reduction)
    )


@functools.partial(jax.jit, static_argnames=("reduction",))
def _sigmoid_brier_score(logits, labels, where, reduction: str) -> jax.Array:
    examples = _bins.binary(logits, labels, where)
    x, y = examples.logits, examples.labels
    # p - y = (1 - y) sigmoid(x) - y sigmoid(-x): exact for 0/1 labels at any logit.
    error = (1 - y) * jax.nn.sigmoid(x) - y * jax.nn.sigmoid(-x)
    scores = jnp.where(examples.bad, jnp.nan, jnp.square(error))
    return _reduce(scores, examples, reduction)


def sigmoid_brier_score(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    reduction: str = "mean",
) -> jax.Array:
    r"""Brier score of sigmoid outputs: the mean of $(\sigma(x) - y)^2$ over the counted elements.

    $$
    \mathrm{BS} = \frac{1}{n} \sum_i m_i\,\big(\sigma(x_i) - y_i\big)^2,
    $$

    scikit-learn's `brier_score_loss(y, sigmoid(x))` for binary labels, between
    0 and 1. Computed as $(1 - y)\,\sigma(x) - y\,\sigma(-x)$, so that
    $\sigma(x) - 1$ keeps its precision at large logits.

    Args:
      logits: floating array of any shape; one prediction per element.
      labels: 0/1 targets of the same shape (bool, integer or float).
      where: boolean mask broadcastable to the logits' shape.
      reduction: `"mean"`, `"sum"` or `"none"` (per element, 0 where masked).

    Returns:
      A scalar (or the logits' shape for `"none"`): float32 for half-precision
      logits, otherwise the logits' dtype. 0 if no element counts; NaN for a
      counted label outside [0, 1].

    Raises:
      TypeError: integer logits, non-numeric labels, a non-boolean `where`.
      ValueError: labels of another shape, an unknown `reduction`.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxce
      >>> logits = jnp.array([2.0, -1.0, 0.0, 3.0])
      >>> print(f"{jaxce.sigmoid_brier_score(logits, jnp.array([1, 0, 1, 0])):.4f}")
      0.3110
    """
    return _sigmoid_brier_score(logits, labels, where, _checks.reduction(reduction))


# The bootstrap interval.


@functools.partial(jax.jit, static_argnames=("options", "num_resamples", "confidence"))
def _bootstrap(key, logits, labels, where, options, num_resamples, confidence):
    examples = _bins.multiclass(logits, labels, options.axis, where)
    conf, outcome = _bins.outcomes(examples, options.classwise)

    def error(conf, outcome, mask, bad):
        sums = _bins.bin_sums(conf, outcome, mask, bad, options.n_bins, options.binning)
        return _bins.calibration_error(sums, options.norm, options.debiased)

    estimate = error(conf, outcome, examples.mask, examples.bad)
    size = conf.shape[0]
    if size == 0:
        return estimate, estimate, estimate
    n = jnp.sum(examples.mask, dtype=jnp.int32)
    position = lax.iota(jnp.int32, size)
    # The counted examples first, in batch order; a resample draws n of them.
    _, counted = lax.sort(((~examples.mask).astype(jnp.int32), position), num_keys=1)
    resampled_mask = position < n

    def resample(k):
        index = counted[jax.random.randint(k, (size,), 0, jnp.maximum(n, 1))]
        return error(conf[index], outcome[index], resampled_mask, examples.bad[index])

    estimates = jax.vmap(resample)(jax.random.split(key, num_resamples))
    tail = (1 - confidence) / 2
    low, high = jnp.quantile(estimates, jnp.array([tail, 1 - tail], estimates.dtype))
    return estimate, low, high


def bootstrap_calibration_error(
    key: ArrayLike,
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    num_resamples: int = 200,
    confidence: float = 0.95,
    **options: Any,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    r"""Calibration error with a percentile bootstrap confidence interval.

    With $\hat E$ = `expected_calibration_error(logits, labels, **options)` on
    the $n$ counted examples, and $\hat E^{*}_1, \dots, \hat E^{*}_R$ the same
    error on $R$ resamples of $n$ counted examples drawn with replacement, the
    interval at level $1 - \alpha$ is

    $$
    \big[\,q_{\alpha/2}(\hat E^{*}),\ q_{1 - \alpha/2}(\hat E^{*})\,\big],
    $$

    with $q$ the empirical quantiles (linear interpolation, as
    `numpy.quantile`). The resamples are evaluated together under `jax.vmap`
    (memory: $R$ copies of the per-example confidences, $R \times N$, or
    $R \times N \times K$ with `classwise=True`) and are reproducible: the same
    `key` gives the same interval. Bins follow the options as in
    [`expected_calibration_error`][jaxce.expected_calibration_error]
    (equal-width by default: bin $\min(\lfloor cB \rfloor, B - 1)$).

    The plug-in ECE is biased upwards, and more so on a resample, which repeats
    examples: for a well-calibrated model the interval can lie above the
    estimate. `debiased=True` (with `norm="l2"`) corrects that bias.

    Args:
      key: a `jax.random` key.
      logits: floating array with the classes on `axis`, e.g. `(N, K)`.
      labels: integer class indices, shape = logits shape without `axis`.
      num_resamples: $R \ge 1$ (static).
      confidence: the level $1 - \alpha$, in (0, 1) (static).
      **options: `n_bins`, `norm`, `binning`, `classwise`, `debiased`, `axis`
        and `where`, as in `expected_calibration_error`.

    Returns:
      `(estimate, low, high)`, scalars: float32 for half-precision logits,
      otherwise the logits' dtype. All 0 when no example counts.

    Raises:
      TypeError: an unknown option, and whatever `expected_calibration_error`
        raises.
      ValueError: `num_resamples < 1`, `confidence` outside (0, 1).

    Examples:
      >>> import jax
      >>> import jaxce
      >>> key_logits, key_labels, key = jax.random.split(jax.random.key(0), 3)
      >>> logits = 3.0 * jax.random.normal(key_logits, (2000, 5))
      >>> labels = jax.random.categorical(key_labels, logits / 3.0)
      >>> estimate, low, high = jaxce.bootstrap_calibration_error(key, logits, labels)
      >>> print(f"ECE {estimate:.3f}, 95% interval [{low:.3f}, {high:.3f}]")
      ECE 0.287, 95% interval [0.266, 0.306]

    References:
      Efron and Tibshirani, "An Introduction to the Bootstrap", 1993. Kumar,
      Liang and Ma, "Verified Uncertainty Calibration", NeurIPS 2019.
    """
    unknown = sorted(set(options) - set(_bins.Options._fields) - {"where"})
    if unknown:
        expected = (*_bins.Options._fields, "where")
        raise TypeError(f"unknown option {unknown[0]!r}; expected one of {expected}.")
    where = options.pop("where", None)
    return _bootstrap(
        key,
        logits,
        labels,
        where,
        _bins.options(**options),
        _checks.positive_integer("num_resamples", num_resamples),
        _checks.Interval(0.0, 1.0, low_open=True, high_open=True).static("confidence", confidence),
    )
