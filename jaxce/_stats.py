"""Per-example statistics a cross-entropy can return beside its loss.

`CrossEntropyStats` holds each example's logsumexp (differentiable), its
predicted class (the argmax, ties to the lowest index) and whether that is its
label. The streamed and sharded losses find the argmax piece by piece:
`running_argmax` folds in one chunk, `shard_argmax` combines shards with one
`pmin` after the `pmax` they already do. Imports only jax; the families use it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax


class CrossEntropyStats(NamedTuple):
    r"""Per-example statistics of a softmax cross-entropy, returned with `return_stats=True`.

    For the logits $z_i$ of example $i$ (after soft-capping, where the loss
    caps them):

    - `logsumexp`: $\operatorname{lse}(z_i) = \log \sum_c e^{z_{ic}}$, float,
      differentiable: its gradient flows to the logits (or to the hidden states
      and kernel of a fused head), so a z-loss or any other function of it can
      be added to the loss.
    - `predicted`: $\arg\max_c z_{ic}$ (the lowest index among ties), int32.
    - `correct`: whether `predicted` is the example's label, bool.

    Each has the examples' shape. A masked example (`where` False,
    `ignore_index`, a weight of 0) has 0, -1 and False.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxce
      >>> logits = jnp.array([[2.0, 1.0, 0.1], [0.0, 5.0, 0.2]])
      >>> loss, stats = jaxce.softmax_cross_entropy(logits, jnp.array([0, 2]), return_stats=True)
      >>> print(stats.predicted, stats.correct)
      [0 1] [ True False]
      >>> with jnp.printoptions(precision=4):
      ...     print(stats.logsumexp)
      [2.417  5.0149]
    """

    logsumexp: jax.Array
    predicted: jax.Array
    correct: jax.Array


def finish(
    logsumexp: jax.Array, predicted: jax.Array, labels: jax.Array, mask: jax.Array
) -> CrossEntropyStats:
    """The statistics of the counted examples: 0, -1 and False where `mask` is False.

    `labels` are the integer labels; for probability labels the caller passes
    each example's most probable class, which `correct` then compares with.
    """
    predicted = jnp.where(mask, predicted.astype(jnp.int32), -1)
    correct = mask & (predicted.astype(labels.dtype) == labels)
    return CrossEntropyStats(jnp.where(mask, logsumexp, 0), predicted, correct)


def running_argmax(
    best: tuple[jax.Array, jax.Array], values: jax.Array, first: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Folds a chunk `values [N, chunk]` of consecutive classes from `first` into `best`.

    `best` is `(max, index)` per row over the chunks so far, which cover lower
    class indices: a chunk's maximum replaces it only when strictly larger, so
    ties keep the lowest index.
    """
    top, index = best
    chunk_top = jnp.max(values, axis=1)
    chunk_index = first.astype(index.dtype) + jnp.argmax(values, axis=1).astype(index.dtype)
    better = chunk_top > top
    return jnp.where(better, chunk_top, top), jnp.where(better, chunk_index, index)


def shard_argmax(top: jax.Array, index: jax.Array, global_top: jax.Array, axis_name: Any):
    """The global argmax from each shard's `(top, index)` and the `pmax` of the tops.

    The shards holding the global maximum offer their index, the others a
    larger one than any; one `pmin` picks the lowest.
    """
    offer = jnp.where(top == global_top, index, jnp.iinfo(index.dtype).max)
    return lax.pmin(offer, axis_name)
