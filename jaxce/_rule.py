"""The masked per-example rule skeleton that every loss's analytic gradient is built on.

A loss supplies only its math: `fwd(cfg, inputs) -> (loss, residuals)` and
`bwd(cfg, inputs, residuals, g) -> cotangents`. The skeleton does the rest,
once: it multiplies each example's loss by its example weight (and the
cotangent before the rule's backward), zeroes masked examples and turns
invalid labels into NaN in the loss and in the cotangent, keeps the class axis
for broadcasting, and brings each cotangent back to its input (masked, summed
over the axes it was broadcast along, summed over the devices it is replicated
on, cast to its dtype).

The same math gives both autodiff rules. In reverse mode (the default) the
rule is a `jax.custom_vjp`. In forward mode (`autodiff("forward")`) it is a
`jax.custom_jvp`: each example's loss depends only on its own row, so one
backward with a unit cotangent gives every example's partial derivatives at
once, and a tangent is their product with the input tangents, summed over the
classes. `jvp`, `jacfwd` and `linearize` then work, and reverse mode still
does (JAX transposes the tangent), at the cost of the partials held from the
forward to the backward where XLA does not fuse them into the backward.

The family modules import it; it imports `_checks`, `_numerics`, `_sharding`
and `_labels`.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero

from . import _checks, _labels, _numerics, _sharding

AUTODIFF = ("reverse", "forward")
_autodiff: contextvars.ContextVar[str] = contextvars.ContextVar("autodiff", default="reverse")


@contextlib.contextmanager
def autodiff(mode: str) -> Any:
    """The autodiff rule (`"reverse"` or `"forward"`) of every rule traced inside the block.

    A static option of each public loss; the entry point traces the loss's
    body inside this block, so the families do not thread it to their rules.
    """
    token = _autodiff.set(mode)
    try:
        yield
    finally:
        _autodiff.reset(token)


class Summed(NamedTuple):
    """A cotangent the rule has already summed over the examples (a kernel's, in a chunk loop)."""

    value: jax.Array | None


def cotangents(inputs: Any, **named: Any) -> Any:
    """A rule's cotangents, by the name of their input: its `Inputs` with None for the rest."""
    unknown = set(named) - set(inputs._fields)
    if unknown:
        raise TypeError(f"no input named {sorted(unknown)} in {type(inputs).__name__}")
    return type(inputs)(**{name: named.get(name) for name in inputs._fields})


def _keep_axis(cfg: Any, x: Any) -> Any:
    if x is None or cfg.axis is None:
        return x
    return jnp.expand_dims(x, cfg.axis)


def _drop_axis(cfg: Any, x: jax.Array) -> jax.Array:
    return x if cfg.axis is None else jnp.squeeze(x, cfg.axis)


def _to_input(ct: Any, x: Any, mask: jax.Array) -> Any:
    if ct is None or x is None:
        return None
    if isinstance(ct, Summed):
        ct = ct.value
        if ct is None:
            return None
    else:
        # Exactly zero for a masked example, whatever its inputs hold (inf, NaN).
        ct = _numerics.sum_to_shape(jnp.where(mask, ct, 0), jnp.shape(x))
    ct = _sharding.like_primal(_sharding.sum_over_replicas(ct, x), x)
    return ct.astype(jnp.result_type(x))


def _weighted(loss: jax.Array, weights: jax.Array) -> jax.Array:
    """`loss * weights` in the wider of their dtypes (a float64 weight is not rounded)."""
    dtype = _checks.compute_dtype(loss.dtype, weights.dtype)
    return loss.astype(dtype) * weights.astype(dtype)


def _fill(x: jax.Array) -> Any:
    """What a masked example gets in an extra output: -1 for a class index, 0 otherwise."""
    return -1 if jnp.issubdtype(x.dtype, jnp.integer) else 0


def _split(out: Any) -> tuple[Any, tuple]:
    """`(loss, extras)` of a rule's output: the loss alone, or `(loss, *extras)`."""
    return (out[0], tuple(out[1:])) if isinstance(out, tuple) else (out, ())


def _differentiable(x: jax.Array) -> bool:
    return bool(jnp.issubdtype(x.dtype, jnp.inexact))


def per_example_rule(fwd: Callable, bwd: Callable) -> Callable:
    """Builds `rule(cfg, mask, bad, inputs, example_weights=None) -> per-example losses`.

    Args:
      fwd: `fwd(cfg, inputs) -> (loss, residuals)`. `cfg` is a hashable
        NamedTuple of static options with an `axis` field: the class axis,
        kept with size 1 in `loss` (None when every element is an example).
        `inputs` is a NamedTuple of arrays (or None) that broadcast against the
        logits; `residuals` hold only what the forward computed, the inputs
        come back to `bwd` anyway. `loss` may be a tuple `(loss, *extras)` of
        more per-example outputs (statistics): floating ones are
        differentiable, integer ones (class indices) are not.
      bwd: `bwd(cfg, inputs, residuals, g) -> cotangents(inputs, name=...)`:
        the cotangent of each input by its field name (None for the inputs
        not named), each broadcastable to the logits and not summed over the
        examples (or wrapped in `Summed` when the rule reduced it over the
        examples itself: such a rule has no forward mode); `g` is
        the loss cotangent, already multiplied by the example weights, zero on
        excluded examples, NaN on invalid labels, with the class axis kept;
        with extras, the tuple `(g, *g_extras)` (not weighted: statistics are
        not losses), zero on excluded examples, None for an integer extra.

    Returns:
      `rule(cfg, mask, bad, inputs, example_weights=None)`, with an analytic
      derivative: `mask` (True where an example is present) and `bad` (True
      where a counted example's label is invalid, or None) have the examples'
      shape; the `example_weights` v, when given, have their rank and
      broadcast to it (their cotangent is summed back to their shape). An
      example counts where it is present and its weight is not 0. The rule
      gives per-example losses `v_i loss_i`, 0 where an example does not count
      and NaN where `bad` (and the extras, 0 or -1 where it does not count);
      the weights' derivative is `loss_i` wherever the example is present,
      weight 0 included, from the unweighted losses saved by the forward
      (O(N)). Without weights the program is the unweighted rule's. The rule is
      a `custom_vjp`, or a `custom_jvp` inside `autodiff("forward")`.
    """

    def outputs(cfg, mask, bad, inputs, example_weights):
        """The rule's outputs, its residuals and the unweighted losses."""
        out, residuals = fwd(cfg, inputs)
        loss, extras = _split(out)
        unweighted = loss
        if example_weights is not None:
            loss = _weighted(loss, _keep_axis(cfg, example_weights))
        kept = _keep_axis(cfg, _labels.kept(mask, example_weights))
        loss = _drop_axis(cfg, _numerics.nan_where(_keep_axis(cfg, bad), jnp.where(kept, loss, 0)))
        extras = tuple(_drop_axis(cfg, jnp.where(kept, e, _fill(e))) for e in extras)
        return ((loss, *extras) if extras else loss), residuals, unweighted

    @functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
    def reverse(cfg, mask, bad, inputs, example_weights=None):
        return outputs(cfg, mask, bad, inputs, example_weights)[0]

    def reverse_fwd(cfg, mask, bad, inputs, example_weights):
        out, residuals, unweighted = outputs(cfg, mask, bad, inputs, example_weights)
        unweighted = None if example_weights is None else unweighted
        return out, (mask, bad, inputs, residuals, example_weights, unweighted)

    def reverse_bwd(cfg, saved, g):
        present, bad, inputs, residuals, example_weights, unweighted = saved
        kept = _keep_axis(cfg, _labels.kept(present, example_weights))
        g, g_extras = _split(g)
        g = _numerics.nan_where(_keep_axis(cfg, bad), _keep_axis(cfg, g))
        d_weights = None
        if example_weights is not None:
            # d (v_i loss_i) / d v_i = loss_i wherever the example is present, also at v_i = 0.
            d_weights = _to_input(
                _drop_axis(cfg, g * unweighted.astype(g.dtype)), example_weights, present
            )
            # Masked again: an excluded example's weight may hold anything (inf, NaN), and
            # a rule that sums over the examples itself (`Summed`) would carry it.
            g = g * _keep_axis(cfg, example_weights).astype(g.dtype)
        g = jnp.where(kept, g, 0)
        if example_weights is not None:
            g = g.astype(unweighted.dtype)
        if g_extras:
            # An integer output (a predicted class) has no cotangent.
            g_extras = tuple(
                None if ge.dtype == jax.dtypes.float0 else jnp.where(kept, _keep_axis(cfg, ge), 0)
                for ge in g_extras
            )
            g = (g, *g_extras)
        cts = bwd(cfg, inputs, residuals, g)
        cts = type(inputs)(*(_to_input(c, x, kept) for c, x in zip(cts, inputs, strict=True)))
        return None, None, cts, d_weights

    reverse.defvjp(reverse_fwd, reverse_bwd)

    @functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
    def forward(cfg, mask, bad, inputs, example_weights=None):
        return outputs(cfg, mask, bad, inputs, example_weights)[0]

    def forward_jvp(cfg, primals, tangents):
        present, bad, inputs, example_weights = primals
        d_inputs, d_weights = tangents[2], tangents[3]
        out, residuals, unweighted = outputs(cfg, *primals)
        loss, extras = _split(out)
        kept = _keep_axis(cfg, _labels.kept(present, example_weights))
        # Unit cotangents, one differentiable output at a time: the backward then returns
        # each example's partial derivatives, which its tangent sums against.
        units = [jnp.ones_like(unweighted)] + [_keep_axis(cfg, jnp.ones_like(e)) for e in extras]

        def tangent(i):
            g = tuple(
                None if not _differentiable(e) else (u if j == i else jnp.zeros_like(u))
                for j, (e, u) in enumerate(zip((loss, *extras), units, strict=True))
            )
            cts = bwd(cfg, inputs, residuals, g if extras else g[0])
            total = jnp.zeros(units[i].shape, units[i].dtype)
            for ct, dx in zip(cts, d_inputs, strict=True):
                if ct is None or dx is None or isinstance(dx, SymbolicZero):
                    continue
                if isinstance(ct, Summed):
                    raise NotImplementedError("this rule sums over the examples: no forward mode")
                # Masked before the product, so that the transposed tangent (reverse mode
                # through this rule) is exactly 0 on excluded examples too.
                term = jnp.where(kept, ct, 0) * jnp.asarray(dx).astype(ct.dtype)
                if cfg.axis is not None:
                    term = jnp.sum(term, cfg.axis, keepdims=True)
                term = _sharding.sum_over_replicas(term, unweighted)
                total = total + jnp.broadcast_to(term, total.shape).astype(total.dtype)
            return total

        invalid = 1 if bad is None else jnp.where(_keep_axis(cfg, bad), jnp.nan, 1)
        # Products with masked primals keep the tangent linear and exactly 0 where masked.
        d_loss = tangent(0)
        if example_weights is not None:
            d_loss = _weighted(d_loss, jnp.where(kept, _keep_axis(cfg, example_weights), 0))
        d_loss = jnp.where(kept, d_loss, 0)
        if example_weights is not None and not isinstance(d_weights, SymbolicZero):
            # d (v_i loss_i) = loss_i dv_i wherever the example is present, also at v_i = 0.
            terms = jnp.where(_keep_axis(cfg, present), unweighted, 0)
            d_loss = d_loss + _weighted(terms, _keep_axis(cfg, d_weights))
        # A product, not a select, keeps the tangent linear: NaN on invalid labels both ways.
        d_loss = _drop_axis(cfg, (d_loss * invalid).astype(loss.dtype))
        d_extras = tuple(
            _drop_axis(cfg, jnp.where(kept, tangent(i + 1), 0).astype(e.dtype))
            if _differentiable(e)
            else np.zeros(e.shape, jax.dtypes.float0)
            for i, e in enumerate(extras)
        )
        return out, ((d_loss, *d_extras) if extras else d_loss)

    forward.defjvp(forward_jvp, symbolic_zeros=True)

    def rule(cfg, mask, bad, inputs, example_weights=None):
        chosen = forward if _autodiff.get() == "forward" else reverse
        return chosen(cfg, mask, bad, inputs, example_weights)

    return rule
