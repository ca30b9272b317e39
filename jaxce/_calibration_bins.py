r"""What every calibration measure shares: argument checks, confidences, bins, errors.

A measure is built in three steps, each written once here:

1. **Examples.** `multiclass` (softmax logits, integer labels) and `binary`
   (sigmoid logits, 0/1 labels) validate the arguments and flatten the
   examples; a counted label outside its range is flagged (`bad`), never
   wrapped, and reported under `checkify`.
2. **Bins.** `bin_sums` assigns each counted example's confidence to a bin,
   equal-width (`"width"`) or equal-mass (`"mass"`), and returns per-bin sums
   of confidence, outcome and count. Sums, not means: they add up over batches
   and devices.
3. **Error.** `calibration_error` turns bin sums into the ECE, the RMS
   calibration error (plain or debiased) or the MCE, and averages per-class
   rows for the classwise error.

Equal-width rule: confidence $c$ goes to bin $\min(\lfloor cB \rfloor, B - 1)$,
so bin $b$ holds $[b/B, (b+1)/B)$ and the last bin is closed at 1.

Equal-mass rule: the $n$ counted confidences, sorted in ascending order
(equal confidences keep their order in the batch), are cut into $B$
consecutive runs of $\lceil n/B \rceil$ (the first $n \bmod B$ runs) and
$\lfloor n/B \rfloor$ examples (the rest), as `numpy.array_split` cuts them.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from . import _checks, _labels
from ._reduce import safe_divide

NORMS = ("l1", "l2", "max")
BINNINGS = ("width", "mass")


# Options (static: they change the program).


def norm_option(value: Any) -> str:
    return _checks.one_of("norm", value, NORMS)


def binning_option(value: Any) -> str:
    return _checks.one_of("binning", value, BINNINGS)


flag = _checks.flag


def debiased_option(debiased: Any, norm: str) -> bool:
    debiased = flag("debiased", debiased)
    if debiased and norm != "l2":
        raise ValueError(
            f"debiased=True estimates the squared L2 error and needs norm='l2'; got norm={norm!r}."
        )
    return debiased


class Options(NamedTuple):
    """The static options of a calibration error, validated and hashable (a `jit` static)."""

    n_bins: int = 15
    norm: str = "l1"
    binning: str = "width"
    classwise: bool = False
    debiased: bool = False
    axis: int = -1


def options(
    n_bins: Any = 15,
    norm: Any = "l1",
    binning: Any = "width",
    classwise: Any = False,
    debiased: Any = False,
    axis: Any = -1,
) -> Options:
    norm = norm_option(norm)
    axis = _checks.integer("axis", axis)
    assert axis is not None
    return Options(
        _checks.positive_integer("n_bins", n_bins),
        norm,
        binning_option(binning),
        flag("classwise", classwise),
        debiased_option(debiased, norm),
        axis,
    )


# Examples.


class Examples(NamedTuple):
    """Validated inputs with the examples flattened.

    `logits` is `(M, K)` (class axis last) for softmax measures and `(M,)` for
    sigmoid ones, in the compute dtype; `labels` is `(M,)`; `mask` says which
    examples count and `bad` which counted ones have an invalid label; `shape`
    is the examples' shape before flattening.
    """

    logits: jax.Array
    labels: jax.Array
    mask: jax.Array
    bad: jax.Array
    shape: tuple[int, ...]


def multiclass(
    logits: ArrayLike, labels: ArrayLike, axis: Any, where: ArrayLike | None
) -> Examples:
    """Softmax logits with the classes on `axis`, integer labels, an example mask."""
    args = _labels.multiclass(
        logits, labels, axis=axis, ignore_index=None, where=where, weights=None, allow_probs=False
    )
    assert args.labels.classes is not None and args.bad is not None
    num_classes = args.logits.shape[args.axis]
    example_shape = args.mask.shape
    x = jnp.moveaxis(args.logits, args.axis, -1).reshape(math.prod(example_shape), num_classes)
    x = x.astype(_checks.compute_dtype(args.logits.dtype))
    classes, mask, bad = (a.reshape(-1) for a in (args.labels.classes, args.mask, args.bad))
    return Examples(x, classes, mask, bad, example_shape)


def binary(logits: ArrayLike, labels: ArrayLike, where: ArrayLike | None) -> Examples:
    """Sigmoid logits of any shape, 0/1 labels of the same shape, an element mask."""
    x, y, mask, bad, _ = _labels.binary(logits, labels, where, name="logits")
    x = x.astype(_checks.compute_dtype(x.dtype))
    return Examples(
        x.reshape(-1), y.astype(x.dtype).reshape(-1), mask.reshape(-1), bad.reshape(-1), x.shape
    )


# Per-example confidences and outcomes.


def top_label(x: jax.Array, classes: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Top-label confidence `max_k softmax(x)_k = 1 / sum_k exp(x_k - max x)`, and correctness.

    The reciprocal form is exact for ties (constant logits give exactly 1/K)
    and gives exactly 1.0 when the other classes underflow. Ties in the argmax
    go to the lowest class index.
    """
    top = jnp.max(x, axis=-1, keepdims=True)
    confidence = 1 / jnp.sum(jnp.exp(x - lax.stop_gradient(top)), axis=-1)
    correct = jnp.argmax(x, axis=-1).astype(classes.dtype) == classes
    return confidence, correct.astype(x.dtype)


def one_hot(classes: jax.Array, num_classes: int) -> jax.Array:
    """Boolean `(M, K)` one-hot by an iota compare (no gather); all False for a bad label."""
    iota = lax.broadcasted_iota(classes.dtype, (classes.shape[0], num_classes), 1)
    return iota == classes[:, None]


def class_probabilities(x: jax.Array, classes: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`softmax(x)` and the one-hot labels, both `(M, K)`: one-vs-rest confidences and outcomes."""
    return jax.nn.softmax(x, axis=-1), one_hot(classes, x.shape[-1]).astype(x.dtype)


def outcomes(examples: Examples, classwise: bool) -> tuple[jax.Array, jax.Array]:
    """Confidences and observed outcomes: top-label `(M,)` or per class `(M, K)`."""
    if classwise:
        return class_probabilities(examples.logits, examples.labels)
    return top_label(examples.logits, examples.labels)


# Bins.


class BinSums(NamedTuple):
    """Per-bin sums, each `(..., B)`: confidence, outcome (correct predictions
    or positive labels), and the number of examples (int32)."""

    confidence: jax.Array
    outcome: jax.Array
    counts: jax.Array


def _rank_bins(mask: jax.Array, confidence: jax.Array, n_bins: int) -> jax.Array:
    """Equal-mass bin of each example, from its rank among the counted confidences."""
    size = confidence.shape[0]
    position = lax.iota(jnp.int32, size)
    # Counted examples first, ascending confidence; the sort is stable, so ties keep
    # their order in the batch.
    _, _, order = lax.sort(
        ((~mask).astype(jnp.int32), confidence, position), num_keys=2, is_stable=True
    )
    n = jnp.sum(mask, dtype=jnp.int32)
    small, extra = n // n_bins, n % n_bins  # `extra` runs of small + 1, then runs of small
    big_end = extra * (small + 1)
    rank_bin = jnp.where(
        position < big_end,
        position // (small + 1),
        extra + (position - big_end) // jnp.maximum(small, 1),
    )
    rank_bin = jnp.clip(rank_bin, 0, n_bins - 1)
    return jnp.zeros(size, jnp.int32).at[order].set(rank_bin, unique_indices=True)


def bin_index(confidence: jax.Array, mask: jax.Array, n_bins: int, binning: str) -> jax.Array:
    """The bin (int32 in `[0, B)`) of each `(M,)` or `(M, K)` confidence; masked examples get
    some bin. Equal-mass bins are formed per column."""
    if binning == "mass":
        if confidence.ndim == 2:
            return jax.vmap(_rank_bins, in_axes=(None, 1, None), out_axes=1)(
                mask, confidence, n_bins
            )
        return _rank_bins(mask, confidence, n_bins)
    # A NaN confidence (NaN logits) lands in some bin and makes its statistics NaN.
    index = jnp.nan_to_num(jnp.floor(confidence * n_bins))
    return jnp.clip(index, 0, n_bins - 1).astype(jnp.int32)


def bin_sums(
    confidence: jax.Array,
    outcome: jax.Array,
    mask: jax.Array,
    bad: jax.Array,
    n_bins: int,
    binning: str = "width",
) -> BinSums:
    """Sums over the counted examples in each bin; `(B,)`, or `(K, B)` for `(M, K)` inputs.

    A bin holding a counted example with an invalid label gets a NaN
    confidence sum, so everything computed from it is NaN.
    """
    if confidence.ndim == 1:
        sums = bin_sums(confidence[:, None], outcome[:, None], mask, bad, n_bins, binning)
        return BinSums(*(x[0] for x in sums))
    size, columns = confidence.shape
    index = bin_index(confidence, mask, n_bins, binning)
    # One scatter-add over the K * B (column, bin) segments: O(M K) memory and time.
    # (A one-hot over bins materialises M x K x B values once K is large.) On GPUs the
    # order of the float additions, and so their last bits, may vary between runs.
    segment = (lax.broadcasted_iota(jnp.int32, (size, columns), 1) * n_bins + index).reshape(-1)
    counted = jnp.broadcast_to(mask[:, None], (size, columns))

    def total(values: jax.Array) -> jax.Array:
        zeros = jnp.zeros(columns * n_bins, values.dtype)
        return zeros.at[segment].add(values.reshape(-1)).reshape(columns, n_bins)

    conf_sum = total(jnp.where(counted, confidence, 0))
    outcome_sum = total(jnp.where(counted, outcome, 0))
    count = total(counted.astype(jnp.int32))
    poisoned = total((counted & bad[:, None]).astype(jnp.int32)) > 0
    return BinSums(jnp.where(poisoned, jnp.nan, conf_sum), outcome_sum, count)


def bin_means(sums: BinSums) -> tuple[jax.Array, jax.Array]:
    """Mean confidence and mean outcome per bin; NaN where a bin is empty or poisoned."""
    empty = sums.counts == 0
    n = jnp.where(empty, 1, sums.counts).astype(sums.confidence.dtype)
    confidence = jnp.where(empty, jnp.nan, sums.confidence / n)
    outcome = jnp.where(empty | jnp.isnan(sums.confidence), jnp.nan, sums.outcome / n)
    return confidence, outcome


# Errors from bin sums.


def _row_error(sums: BinSums, norm: str, debiased: bool) -> jax.Array:
    """One row's error; for `"l2"` its square (so that rows average as squares)."""
    dtype = sums.confidence.dtype
    count = sums.counts.astype(dtype)
    n = jnp.sum(count, axis=-1)
    # n_b (a_b - c_b) = (sum of outcomes in b) - (sum of confidences in b).
    gap_sum = sums.outcome - sums.confidence
    if norm == "l1":
        return safe_divide(jnp.sum(jnp.abs(gap_sum), axis=-1), n)
    gap = safe_divide(gap_sum, count)
    if norm == "max":
        return jnp.max(jnp.abs(gap), axis=-1, initial=0.0)
    square = gap_sum * gap
    if debiased:
        # Kumar et al.: subtract each bin's sampling variance of the mean outcome,
        # a(1 - a) / (n_b - 1), from bins with at least two examples; drop the others.
        accuracy = safe_divide(sums.outcome, count)
        variance = safe_divide(accuracy * (1 - accuracy), count - 1)
        square = jnp.where(sums.counts >= 2, square - count * variance, 0)
    square = safe_divide(jnp.sum(square, axis=-1), n)
    return jnp.maximum(square, 0) if debiased else square


def calibration_error(sums: BinSums, norm: str, debiased: bool = False) -> jax.Array:
    """The error of `(B,)` sums, or the class average of `(K, B)` sums.

    Rows average as the norm does: `"l1"` the mean, `"l2"` the root mean
    square, `"max"` the maximum.
    """
    rows = _row_error(sums, norm, debiased)
    if norm == "max":
        return jnp.max(rows, initial=0.0)
    mean = jnp.mean(rows) if rows.ndim else rows
    return jnp.sqrt(mean) if norm == "l2" else mean
