r"""Streaming calibration error: per-bin sums that add up over batches, hosts and devices."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from . import _calibration_bins as _bins
from . import _checks


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class CalibrationState:
    r"""Running per-bin sums for the calibration error over many batches.

    For equal-width bins $b = \min(\lfloor c B \rfloor, B - 1)$ of the
    top-label confidence $c_i = \max_k \operatorname{softmax}(x_i)_k$, the
    state holds, per bin, $S_b = \sum_{i \in b} c_i$, $A_b = \sum_{i \in b}
    [\hat y_i = y_i]$ and $n_b$; with `num_classes` it also holds the same sums
    per class for the one-vs-rest confidences $\operatorname{softmax}(x_i)_k$
    (for `classwise=True`). Every error is a function of these sums, e.g.

    $$
    \mathrm{ECE} = \frac{1}{n} \sum_b \lvert A_b - S_b \rvert,
    $$

    and sums add: `update` over any split of the data into batches, `merge`
    of two states, or `jax.tree.map(lambda x: lax.psum(x, axis_name), state)`
    across devices inside `shard_map` all give the state of the concatenated
    data, so `compute` equals
    [`expected_calibration_error`][jaxce.expected_calibration_error] on it (up
    to the order of floating-point sums). The state is a pytree of arrays (its
    fields below; `None` without `num_classes`): pass it through `jit`,
    `lax.scan` or a training loop's carry. Equal-width bins only: equal-mass
    bins depend on every confidence at once and do not stream.

    Attributes:
      confidence: `(B,)` sum of top-label confidences per bin.
      correct: `(B,)` number of correct top predictions per bin (floating).
      counts: `(B,)` number of examples per bin (int32).
      class_confidence: `(K, B)` sum of `softmax(x)[k]` per class and bin, or None.
      class_hits: `(K, B)` number of examples labelled `k` per class and bin, or None.
      class_counts: `(K, B)` number of examples per class and bin (int32), or None.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxce
      >>> logits = jnp.array([[3.0, 0.0], [2.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
      >>> labels = jnp.array([0, 1, 1, 0])
      >>> state = jaxce.CalibrationState.create(n_bins=5)
      >>> state = state.update(logits[:3], labels[:3]).update(logits[3:], labels[3:])
      >>> print(f"{state.compute():.4f}")
      0.3428
      >>> print(f"{jaxce.expected_calibration_error(logits, labels, n_bins=5):.4f}")
      0.3428
    """

    confidence: jax.Array
    correct: jax.Array
    counts: jax.Array
    class_confidence: jax.Array | None = None
    class_hits: jax.Array | None = None
    class_counts: jax.Array | None = None

    @staticmethod
    def create(
        n_bins: int = 15, num_classes: int | None = None, dtype: Any = jnp.float32
    ) -> CalibrationState:
        """An empty state: zero sums over `n_bins` equal-width bins.

        Args:
          n_bins: the number of bins, at least 1.
          num_classes: $K$; when given, per-class sums are kept too, for
            `compute(classwise=True)`.
          dtype: floating dtype of the confidence sums (float32; float64 under
            `jax.enable_x64` for very long streams).

        Returns:
          A `CalibrationState` whose `compute` gives 0.
        """
        n_bins = _checks.positive_integer("n_bins", n_bins)
        num_classes = _checks.integer("num_classes", num_classes, optional=True)
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"num_classes must be >= 1; got {num_classes}.")
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"dtype must be a floating dtype; got {dtype!r}.")
        zeros = functools.partial(jnp.zeros, dtype=dtype)
        counts = functools.partial(jnp.zeros, dtype=jnp.int32)
        if num_classes is None:
            return CalibrationState(zeros(n_bins), zeros(n_bins), counts(n_bins))
        shape = (num_classes, n_bins)
        return CalibrationState(
            zeros(n_bins), zeros(n_bins), counts(n_bins), zeros(shape), zeros(shape), counts(shape)
        )

    @property
    def n_bins(self) -> int:
        return int(np.shape(self.counts)[-1])

    @property
    def num_classes(self) -> int | None:
        return None if self.class_counts is None else int(np.shape(self.class_counts)[0])

    def update(
        self,
        logits: ArrayLike,
        labels: ArrayLike,
        *,
        axis: int = -1,
        where: ArrayLike | None = None,
    ) -> CalibrationState:
        """The state with one more batch added (the state itself is unchanged).

        Args:
          logits: floating array with the classes on `axis`, e.g. `(N, K)`.
          labels: integer class indices, shape = logits shape without `axis`.
          axis: the class axis; all other axes are examples.
          where: boolean mask broadcastable to the examples' shape.

        Returns:
          The new `CalibrationState`. A counted label outside `[0, K)` makes its
          bin's confidence sum NaN (and so the error).

        Raises:
          ValueError: with per-class sums, logits with another number of classes.
        """
        checked = _checks.integer("axis", axis)
        assert checked is not None
        axis = checked
        if self.num_classes is not None:
            shape = np.shape(logits)
            classes = shape[axis] if -len(shape) <= axis < len(shape) else None
            if classes != self.num_classes:
                raise ValueError(
                    f"logits must have {self.num_classes} classes on axis {axis} (the state's "
                    f"num_classes); got shape {shape}."
                )
        batch = _batch_sums(logits, labels, where, axis, self.n_bins, self.num_classes is not None)
        return self.merge(jax.tree.map(lambda s, b: b.astype(s.dtype), self, batch))

    def merge(self, other: CalibrationState) -> CalibrationState:
        """The state of both streams together: the sums added.

        Raises:
          ValueError: states with different bins or classes.
        """
        # Leaves are listed in field order and None fields have none, so equal shape
        # lists mean equal bins and classes.
        if [np.shape(x) for x in jax.tree.leaves(self)] != [
            np.shape(x) for x in jax.tree.leaves(other)
        ]:
            raise ValueError(
                f"other must have the same n_bins and num_classes ({self.n_bins}, "
                f"{self.num_classes}); got ({other.n_bins}, {other.num_classes})."
            )
        return jax.tree.map(jnp.add, self, other)

    def compute(
        self, norm: str = "l1", classwise: bool = False, debiased: bool = False
    ) -> jax.Array:
        """The calibration error of everything seen so far.

        Args:
          norm: `"l1"` (ECE), `"l2"` (RMS) or `"max"` (MCE).
          classwise: the classwise (marginal) error; needs `num_classes`.
          debiased: Kumar et al.'s debiased estimate (only with `norm="l2"`).

        Returns:
          A scalar of the state's dtype; 0 if nothing was counted.

        Raises:
          ValueError: an unknown `norm`, `debiased` without `"l2"`,
            `classwise=True` on a state created without `num_classes`.
        """
        options = _bins.options(self.n_bins, norm, classwise=classwise, debiased=debiased)
        if options.classwise and self.num_classes is None:
            raise ValueError(
                "classwise=True needs per-class sums; create the state with num_classes=K."
            )
        return _compute(self, options)


@functools.partial(jax.jit, static_argnames=("axis", "n_bins", "per_class"))
def _batch_sums(logits, labels, where, axis: int, n_bins: int, per_class: bool):
    examples = _bins.multiclass(logits, labels, axis, where)

    def sums(classwise: bool) -> _bins.BinSums:
        confidence, outcome = _bins.outcomes(examples, classwise)
        return _bins.bin_sums(confidence, outcome, examples.mask, examples.bad, n_bins)

    top = sums(False)
    if not per_class:
        return CalibrationState(*top)
    return CalibrationState(*top, *sums(True))


@functools.partial(jax.jit, static_argnames=("options",))
def _compute(state: CalibrationState, options: _bins.Options) -> jax.Array:
    if options.classwise:
        assert state.class_confidence is not None and state.class_hits is not None
        assert state.class_counts is not None
        sums = _bins.BinSums(state.class_confidence, state.class_hits, state.class_counts)
    else:
        sums = _bins.BinSums(state.confidence, state.correct, state.counts)
    return _bins.calibration_error(sums, options.norm, options.debiased)
