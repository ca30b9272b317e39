"""The one label path: integer or probability labels, masks, and class picks.

Target values are picked with a comparison against an iota along the class
axis, never with `take_along_axis`: XLA fuses the comparison into the reduction
that consumes it, and it stays local when the class axis is sharded (a gather
along a sharded axis forces an all-gather, or fails under an Explicit mesh).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import checkify
from jax.typing import ArrayLike

from . import _checks


class Labels(NamedTuple):
    """Validated labels: `classes` (integer) or `probs` (floating), never both."""

    classes: jax.Array | None
    probs: jax.Array | None


def parse(
    logits: jax.Array,
    labels: ArrayLike,
    axis: int,
    *,
    ignore_index: int | None = None,
    allow_probs: bool = True,
    logits_name: str = "logits",
) -> Labels:
    """Splits integer class labels from probability labels, by dtype."""
    labels = jnp.asarray(labels)
    example_shape = _checks.without_axis(logits.shape, axis)
    if jnp.issubdtype(labels.dtype, jnp.integer):
        _checks.same_shape(
            "labels",
            labels,
            example_shape,
            f"{logits_name} shape {logits.shape} without axis {axis}",
        )
        return Labels(labels, None)
    if jnp.issubdtype(labels.dtype, jnp.floating) and allow_probs:
        _checks.same_shape(
            "labels", labels, logits.shape, f"probability labels match {logits_name}"
        )
        if ignore_index is not None:
            raise ValueError(
                "ignore_index applies to integer class labels; got probability labels "
                f"(dtype {labels.dtype}). Mask examples with where= instead."
            )
        return Labels(None, labels)
    expected = "integer class labels or floating probabilities" if allow_probs else "integer"
    raise TypeError(f"labels must be {expected}; got dtype {labels.dtype}.")


def class_iota(shape: tuple[int, ...], axis: int, dtype: jnp.dtype) -> jax.Array:
    return lax.broadcasted_iota(dtype, shape, axis)


def target_mask(classes: jax.Array, shape: tuple[int, ...], axis: int) -> jax.Array:
    """Boolean one-hot of `classes` along `axis`, fused by XLA into its consumer."""
    return class_iota(shape, axis, classes.dtype) == jnp.expand_dims(classes, axis)


def pick(values: jax.Array, onehot: jax.Array, axis: int) -> jax.Array:
    """The value at the target class (keepdims); 0 where no class matches."""
    return jnp.sum(jnp.where(onehot, values, 0), axis=axis, keepdims=True)


def along_axis(vector: jax.Array, ndim: int, axis: int) -> jax.Array:
    """Reshapes a per-class vector to broadcast against logits of rank `ndim`."""
    shape = [1] * ndim
    shape[axis] = vector.shape[0]
    return vector.reshape(shape)


def _representable(value: int, dtype: jnp.dtype) -> bool:
    info = np.iinfo(dtype)
    return bool(info.min <= value <= info.max)


def _first_where(condition: jax.Array, values: jax.Array) -> jax.Array:
    """`values[argmax(condition)]` with an iota compare instead of a gather."""
    index = jnp.argmax(condition)
    return jnp.sum(jnp.where(lax.iota(index.dtype, values.size) == index, values, 0))


def example_mask(
    classes: jax.Array | None,
    example_shape: tuple[int, ...],
    num_classes: int,
    *,
    ignore_index: int | None,
    where: ArrayLike | None,
) -> tuple[jax.Array, jax.Array | None]:
    """Which examples count (`mask`) and which of those have an invalid label (`bad`).

    An example counts unless its label is `ignore_index` or `where` is False.
    A counted label outside `[0, num_classes)` is never wrapped: the caller turns
    it into NaN, and under `checkify` it raises an error naming the label.
    """
    mask = _checks.example_mask(where, example_shape)
    if classes is None:
        return mask, None
    if ignore_index is not None and _representable(ignore_index, classes.dtype):
        mask = mask & (classes != ignore_index)
    bad = mask & ((classes < 0) | (classes >= num_classes))
    # The first bad label, picked with an iota compare (no gather) so that
    # labels sharded over a mesh stay local.
    first_bad = _first_where(jnp.ravel(bad), jnp.ravel(classes)) if classes.size else 0
    checkify.debug_check(
        ~jnp.any(bad),
        f"labels must be in [0, {num_classes}) or equal ignore_index; got {{label}}.",
        label=first_bad,
    )
    return mask, bad


class Multiclass(NamedTuple):
    """Validated arguments of a multiclass loss."""

    logits: jax.Array
    axis: int
    labels: Labels
    weights: jax.Array | None
    mask: jax.Array
    bad: jax.Array | None


def multiclass(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    axis: int,
    ignore_index: int | None,
    where: ArrayLike | None,
    weights: ArrayLike | None,
    allow_probs: bool = True,
    logits_name: str = "logits",
) -> Multiclass:
    """The argument checks every multiclass loss shares: logits, axis, labels,
    `ignore_index`, class weights, `where`, and which examples count."""
    logits = _checks.floating(logits_name, logits)
    axis = _checks.class_axis(axis, logits.ndim, name=logits_name)
    ignore_index = _checks.integer("ignore_index", ignore_index, optional=True)
    parsed = parse(
        logits,
        labels,
        axis,
        ignore_index=ignore_index,
        allow_probs=allow_probs,
        logits_name=logits_name,
    )
    num_classes = logits.shape[axis]
    weights = _checks.class_vector("weights", weights, num_classes)
    mask, bad = example_mask(
        parsed.classes,
        _checks.without_axis(logits.shape, axis),
        num_classes,
        ignore_index=ignore_index,
        where=where,
    )
    return Multiclass(logits, axis, parsed, weights, mask, bad)
