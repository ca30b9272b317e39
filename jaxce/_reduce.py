"""The one reducer: turns per-example losses into `"none"`, `"sum"` or `"mean"`.

Losses hand over per-example values that are already zero where an example is
masked, plus a per-example normaliser (`_labels.normaliser`: the target-class
weight for weighted cross-entropy, 1 for a counted example elsewhere). The
reduction is plain JAX, so autodiff gives the exact cotangent (`m_i / S`, and
`-L m_i / S` for the normaliser). Imports only `_checks`; the families use it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from . import _checks


def safe_divide(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
    """`numerator / denominator`, and 0 (with zero gradient) where the denominator is 0.

    An all-masked batch has nothing to average: it contributes 0, not NaN.
    """
    zero = denominator == 0
    return jnp.where(zero, 0, numerator / jnp.where(zero, 1, denominator))


def reduce_loss(
    losses: jax.Array,
    normaliser: jax.Array | float,
    reduction: str,
    denominator: ArrayLike | None = None,
) -> jax.Array:
    """Reduces per-example `losses`.

    Args:
      losses: per-example losses, zero where masked.
      normaliser: per-example contribution to the mean's denominator `S`, or
        its total.
      reduction: `"none"`, `"sum"` or `"mean"`.
      denominator: replaces `S` for `"mean"` (exact token means across
        micro-batches or hosts).
    """
    if reduction == "none":
        return losses
    total = jnp.sum(losses)
    if reduction == "sum":
        return total
    if denominator is None:
        denominator = jnp.sum(normaliser)
    else:
        denominator = _checks.scalar("denominator", denominator)
    return safe_divide(total, denominator.astype(total.dtype))
