"""The one label path: integer, probability and binary labels, masks, bad labels, normalisers.

Which examples are present (`where`, `ignore_index`) and which of those count
(`kept`: also a nonzero example weight), which labels are invalid (NaN in the
loss and a `checkify` error naming the label), the example weights, and each
example's share of the mean's denominator. The masks the losses receive are
the present examples: a weight of 0 excludes an example from every value, but
the derivative with respect to that weight is still its loss term, so the
weight's own mask is the one without it. Imports `_checks` and `_numerics`;
the family modules import it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero
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


def per_example_weights(
    value: ArrayLike | None, example_shape: tuple[int, ...]
) -> jax.Array | None:
    """The `example_weights` argument: floating, broadcastable to the examples' shape (or None).

    Given the examples' rank (leading axes of size 1 added) but not broadcast:
    the rule skeleton sums the weights' cotangent over the axes they broadcast
    along before it reshards it like them, so a weight per row of
    vocabulary-sharded elements costs O(N) communication, not a gather. Their
    values cannot be checked under `jit`: a negative weight is used as given,
    a NaN or infinite one gives a NaN or infinite loss.
    """
    return _checks.broadcast_option(
        "example_weights", value, tuple(example_shape), of="the examples' shape"
    )


def kept(mask: jax.Array, weights: jax.Array | None) -> jax.Array:
    """Which present examples count: those whose example weight (if any) is not 0.

    A weight of 0 is `where=False` for every value and every other input's
    gradient: the example contributes exactly 0, whatever its logits or label
    hold. Only the derivative with respect to the weight itself reads it.
    """
    return mask if weights is None else mask & (weights != 0)


@jax.custom_jvp
def _weighted_terms(losses: jax.Array, weights: jax.Array, mask: jax.Array) -> jax.Array:
    return jnp.where(kept(mask, weights), losses * weights, 0)


def _weighted_terms_jvp(primals: tuple, tangents: tuple) -> tuple[jax.Array, jax.Array]:
    (losses, weights, mask), (d_losses, d_weights, _) = primals, tangents
    # Products with masked primals: linear, so reverse mode too, and exactly 0 where masked
    # whatever the primals hold there. A zero tangent is skipped: 0 * inf is NaN.
    counts = kept(mask, weights)
    tangent = jnp.zeros_like(losses)
    if not isinstance(d_losses, SymbolicZero):
        tangent = jnp.where(counts, d_losses, 0) * jnp.where(counts, weights, 0)
    if not isinstance(d_weights, SymbolicZero):
        tangent = tangent + d_weights * jnp.where(mask, losses, 0)
    return _weighted_terms(*primals), tangent


_weighted_terms.defjvp(_weighted_terms_jvp, symbolic_zeros=True)


def weigh(losses: jax.Array, weights: jax.Array | None, mask: jax.Array) -> jax.Array:
    """`v_i l_i` where example i counts, else 0, for a loss written without a rule.

    Exactly 0 where the weight is 0 whatever `l_i` holds, and yet
    `d/dv_i = l_i` wherever the example is present (`mask`), also at 0.
    """
    if weights is None:
        return jnp.where(mask, losses, 0)
    return _weighted_terms(losses, weights.astype(losses.dtype), mask)


def example_mask(
    classes: jax.Array | None,
    example_shape: tuple[int, ...],
    num_classes: int,
    *,
    ignore_index: int | None,
    where: ArrayLike | None,
    weights: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array | None]:
    """Which examples are present (`mask`) and which counted ones have an invalid label (`bad`).

    An example is present unless its label is `ignore_index` or `where` is
    False; it counts unless its example weight (`weights`, from
    `per_example_weights`) is also 0 (`kept`). A counted label outside
    `[0, num_classes)` is never wrapped: the caller turns it into NaN, and
    under `checkify` it raises an error naming the label.
    """
    mask = _checks.example_mask(where, example_shape)
    if classes is None:
        return mask, None
    if ignore_index is not None and _representable(ignore_index, classes.dtype):
        mask = mask & (classes != ignore_index)
    bad = kept(mask, weights) & ((classes < 0) | (classes >= num_classes))
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
    mask: jax.Array  # the present examples; `kept` drops those weighted 0
    bad: jax.Array | None
    example_weights: jax.Array | None = None  # v, of the examples' rank, broadcastable


def multiclass(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    axis: int,
    ignore_index: int | None,
    where: ArrayLike | None,
    weights: ArrayLike | None,
    example_weights: ArrayLike | None = None,
    allow_probs: bool = True,
    logits_name: str = "logits",
) -> Multiclass:
    """The argument checks every multiclass loss shares: logits, axis, labels,
    `ignore_index`, class weights, `where`, example weights, and which examples are present."""
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
    example_shape = _checks.without_axis(logits.shape, axis)
    v = per_example_weights(example_weights, example_shape)
    mask, bad = example_mask(
        parsed.classes,
        example_shape,
        num_classes,
        ignore_index=ignore_index,
        where=where,
        weights=v,
    )
    return Multiclass(logits, axis, parsed, weights, mask, bad, v)


def weighted_count(mask: jax.Array, weights: jax.Array | None, dtype: Any) -> jax.Array:
    """`m_i v_i`: each example's share of `S` when no class weight enters it (`v` = 1 if None).

    `mask` holds the present examples, so `d S / d v_i = m_i` also at `v_i = 0`.
    """
    if weights is None:
        return mask.astype(dtype)
    return jnp.where(mask, weights.astype(dtype), 0)


def normaliser(args: Multiclass, dtype: Any) -> jax.Array:
    """Each example's share of the `"mean"` denominator `S`.

    `m_i v_i w_{y_i}` for integer labels (1 for `w` when there are no class
    weights, and for `v` when there are no example weights), `m_i v_i` for
    probability labels; plain JAX, so autodiff gives both kinds of weights
    their share of the normaliser's gradient.
    """
    classes, weights, v = args.labels.classes, args.weights, args.example_weights
    if classes is None or weights is None:
        return weighted_count(args.mask, v, dtype)
    share = _numerics.class_value(weights.astype(dtype), classes)
    return jnp.where(args.mask, share if v is None else share * v.astype(dtype), 0)


class Binary(NamedTuple):
    """Validated arguments of an elementwise binary loss."""

    x: jax.Array
    labels: jax.Array
    mask: jax.Array
    bad: jax.Array
    example_weights: jax.Array | None  # v, of the input's rank, broadcastable


def binary(
    x: ArrayLike,
    labels: ArrayLike,
    where: ArrayLike | None,
    *,
    name: str,
    options: tuple = (),
    example_weights: ArrayLike | None = None,
) -> Binary:
    """An elementwise binary loss's input, targets, mask, which targets lie outside [0, 1],
    and the example weights (every element is an example).

    Targets have the input's shape; integer and boolean 0/1 labels become the
    compute dtype of `x` and the floating `options` (weights). A target outside
    [0, 1] (2, -1) is never clipped: the loss turns it into NaN, and under
    `checkify` it raises an error naming the label.
    """
    x = _checks.floating(name, x)
    v = per_example_weights(example_weights, x.shape)
    mask = _checks.example_mask(where, x.shape)
    labels = jnp.asarray(labels)
    if labels.dtype == jnp.bool_ or jnp.issubdtype(labels.dtype, jnp.integer):
        dtypes = (a.dtype for a in (x, *options) if a is not None)
        labels = labels.astype(_checks.compute_dtype(*dtypes))
    elif not jnp.issubdtype(labels.dtype, jnp.floating):
        raise TypeError(f"labels must be floating (or 0/1 integer) targets; got {labels.dtype}.")
    _checks.same_shape("labels", labels, x.shape, f"same as {name}")
    bad = kept(mask, v) & ~((labels >= 0) & (labels <= 1))
    _report_first(bad, labels, "labels must be in [0, 1]")
    return Binary(x, labels, mask, bad, v)
