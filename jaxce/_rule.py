"""The masked per-example `custom_vjp` skeleton that every loss's analytic gradient is built on.

A loss supplies only its math: `fwd(cfg, inputs) -> (loss, residuals)` and
`bwd(cfg, inputs, residuals, g) -> cotangents`. The skeleton does the rest,
once: it multiplies each example's loss by its example weight (and the
cotangent before the rule's backward), zeroes masked examples and turns
invalid labels into NaN in the loss and in the cotangent, keeps the class axis
for broadcasting, and brings each cotangent back to its input (masked, summed
over the axes it was broadcast along, summed over the devices it is replicated
on, cast to its dtype). The family modules import it; it imports `_checks`,
`_numerics` and `_sharding`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from . import _checks, _numerics, _sharding


class Summed(NamedTuple):
    """A cotangent the rule has already summed over the examples (a kernel's, in a chunk loop)."""

    value: jax.Array | None


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
      bwd: `bwd(cfg, inputs, residuals, g) -> cotangents`, one per field of
        `inputs` (None for none), each broadcastable to the logits (or wrapped in
        `Summed` when the rule reduced it over the examples itself); `g` is the
        loss cotangent, already multiplied by the example weights, zero on
        masked examples, NaN on invalid labels, with the class axis kept; with
        extras, the tuple `(g, *g_extras)` (not weighted: statistics are not
        losses), zero on masked examples, None for an integer extra.

    Returns:
      `rule(cfg, mask, bad, inputs, example_weights=None)`, with an analytic
      backward: `mask` (True where an example counts; False where its weight
      is 0) and `bad` (True where its label is invalid, or None) have the
      examples' shape; the `example_weights` v, when given, have their rank
      and broadcast to it (their cotangent is summed back to their shape). It
      gives per-example losses `v_i loss_i`, 0 where masked and NaN where
      `bad` (and the extras, 0 or -1 where masked); the weights' cotangent is
      `g_i loss_i`, from the unweighted losses saved by the forward (O(N)).
      Without weights the program is the unweighted rule's.
    """

    @functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
    def rule(cfg, mask, bad, inputs, example_weights=None):
        return rule_fwd(cfg, mask, bad, inputs, example_weights)[0]

    def rule_fwd(cfg, mask, bad, inputs, example_weights):
        out, residuals = fwd(cfg, inputs)
        loss, extras = (out[0], out[1:]) if isinstance(out, tuple) else (out, ())
        unweighted = None
        if example_weights is not None:
            unweighted = loss
            loss = _weighted(loss, _keep_axis(cfg, example_weights))
        kept = _keep_axis(cfg, mask)
        loss = _drop_axis(cfg, _numerics.nan_where(_keep_axis(cfg, bad), jnp.where(kept, loss, 0)))
        extras = tuple(_drop_axis(cfg, jnp.where(kept, e, _fill(e))) for e in extras)
        saved = (mask, bad, inputs, residuals, example_weights, unweighted)
        return ((loss, *extras) if extras else loss), saved

    def rule_bwd(cfg, saved, g):
        example_mask, bad, inputs, residuals, example_weights, unweighted = saved
        mask = _keep_axis(cfg, example_mask)
        g, g_extras = (g[0], g[1:]) if isinstance(g, tuple) else (g, ())
        g = _numerics.nan_where(_keep_axis(cfg, bad), jnp.where(mask, _keep_axis(cfg, g), 0))
        d_weights = None
        if example_weights is not None:
            d_weights = _to_input(
                _drop_axis(cfg, g * unweighted.astype(g.dtype)), example_weights, example_mask
            )
            # Masked again: a masked example's weight may hold anything (inf, NaN), and a
            # rule that sums over the examples itself (`Summed`) would carry it.
            v = _keep_axis(cfg, example_weights).astype(g.dtype)
            g = jnp.where(mask, g * v, 0).astype(unweighted.dtype)
        if g_extras:
            # An integer output (a predicted class) has no cotangent.
            g_extras = tuple(
                None if ge.dtype == jax.dtypes.float0 else jnp.where(mask, _keep_axis(cfg, ge), 0)
                for ge in g_extras
            )
            g = (g, *g_extras)
        cts = bwd(cfg, inputs, residuals, g)
        cts = type(inputs)(*(_to_input(c, x, mask) for c, x in zip(cts, inputs, strict=True)))
        return None, None, cts, d_weights

    rule.defvjp(rule_fwd, rule_bwd)
    return rule
