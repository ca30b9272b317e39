"""The one label path: integer, probability and binary labels, masks, bad labels, normalisers.

Which examples count (`where`, `ignore_index`), which labels are invalid (NaN
in the loss and a `checkify` error naming the label), and each example's share
of the mean's denominator. Imports `_checks` and `_numerics`; the family
modules import it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import checkify
from jax.typing import ArrayLike

from . import _checks, _numerics


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
    expected = f"in [0, {num_classes})" + ("" if ignore_index is None else " or equal ignore_index")
    _report_first(bad, classes, f"labels must be {expected}")
    return mask, bad


def _report_first(bad: jax.Array, labels: jax.Array, message: str) -> None:
    """A `checkify` error naming the first bad label (a no-op unless checkified)."""
    # Picked with an iota compare, not a gather, so labels sharded over a mesh stay local.
    first = _first_where(jnp.ravel(bad), jnp.ravel(labels)) if labels.size else labels.sum()
    checkify.debug_check(~jnp.any(bad), message + "; got {label}.", label=first)


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


def normaliser(args: Multiclass, dtype: Any) -> jax.Array:
    """Each example's share of the `"mean"` denominator `S`.

    `m_i w_{y_i}` for integer labels (1 for `w`, when there are no class
    weights), `m_i` for probability labels; plain JAX, so autodiff gives the
    weights their share of the normaliser's gradient.
    """
    classes, weights = args.labels.classes, args.weights
    if classes is None or weights is None:
        return args.mask.astype(dtype)
    return jnp.where(args.mask, _numerics.class_value(weights.astype(dtype), classes), 0)


def binary(
    x: ArrayLike, labels: ArrayLike, where: ArrayLike | None, *, name: str, options: tuple = ()
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """An elementwise binary loss's input, targets, mask, and which targets lie outside [0, 1].

    Targets have the input's shape; integer and boolean 0/1 labels become the
    compute dtype of `x` and the floating `options` (weights). A target outside
    [0, 1] (2, -1) is never clipped: the loss turns it into NaN, and under
    `checkify` it raises an error naming the label.
    """
    x = _checks.floating(name, x)
    mask = _checks.example_mask(where, x.shape)
    labels = jnp.asarray(labels)
    if labels.dtype == jnp.bool_ or jnp.issubdtype(labels.dtype, jnp.integer):
        dtypes = (a.dtype for a in (x, *options) if a is not None)
        labels = labels.astype(_checks.compute_dtype(*dtypes))
    elif not jnp.issubdtype(labels.dtype, jnp.floating):
        raise TypeError(f"labels must be floating (or 0/1 integer) targets; got {labels.dtype}.")
    _checks.same_shape("labels", labels, x.shape, f"same as {name}")
    bad = mask & ~((labels >= 0) & (labels <= 1))
    _report_first(bad, labels, "labels must be in [0, 1]")
    return x, labels, mask, bad
