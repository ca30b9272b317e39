"""Streaming a linear head over vocabulary chunks: what the fused heads share.

A fused head never holds its `[N, V]` logits. Each loop step computes one
`[N, chunk]` block `h W + b` from a slice of the kernel, folds it into per-token
statistics (forward) or turns it into its share of d hidden, d kernel and
d bias (backward), and drops it. The kernel is `[D, V]` (`"DV"`, Flax `Dense`)
or `[V, D]` (`"VD"`, a tied embedding table), sliced along its class axis as it
is: no transposed copy.

A ragged last chunk (V not a multiple of the chunk) is not padded: it starts at
`V - chunk`, overlapping the previous one, and its already-counted columns are
masked (`Chunk.fresh`). The kernel chunk is sliced and converted to the dot's
dtype inside the loop, so no converted copy of the whole kernel is ever made.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, overload

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import PartitionSpec as P
from jax.typing import ArrayLike

from . import _checks, _numerics, _sharding

# Logits per chunk when `chunk_size` is None: 4 MiB of float32 per block.
AUTO_CHUNK_ELEMENTS = 1 << 20
LAYOUTS = ("DV", "VD")


class Plan(NamedTuple):
    """The static plan of one call: chunking, dtypes, layout, and the vocabulary's mesh axes."""

    chunk: int
    dot_dtype: Any
    compute_dtype: Any
    layout: str = "DV"  # the kernel's: [D, V] or [V, D]
    axis_name: Any = None  # mesh axes sharding the vocabulary (inside shard_map)
    axis: int = 1  # the class axis of a [N, chunk] block (for the rule skeleton)
    stats: bool = False  # also output each example's logsumexp and argmax class

    @property
    def class_dim(self) -> int:
        """The kernel's class axis."""
        return 1 if self.layout == "DV" else 0


def num_classes(plan: Plan, kernel: jax.Array) -> int:
    """The classes this device's kernel holds."""
    return kernel.shape[plan.class_dim]


def num_steps(plan: Plan, kernel: jax.Array) -> int:
    return -(-num_classes(plan, kernel) // plan.chunk)


def dot(a: jax.Array, b: jax.Array, contract: tuple[int, int], dtype: Any) -> jax.Array:
    dims = (((contract[0],), (contract[1],)), ((), ()))
    return lax.dot_general(a, b, dims, preferred_element_type=dtype)


@overload
def as_bits(x: jax.Array) -> jax.Array: ...
@overload
def as_bits(x: None) -> None: ...
def as_bits(x: jax.Array | None) -> jax.Array | None:
    """A half-precision gradient accumulator viewed as uint16; others unchanged.

    The kernel's and the per-class vectors' gradients are written a chunk at a
    time with a dynamic update slice. A backend may perform a half-precision one
    in float32 (XLA's CPU backend does), widening and narrowing the whole
    accumulator at every chunk; an update of the bits is in place. The bit-cast
    back at the end is one copy of the gradient
    (`test_linear.py::test_memory_large_vocabulary`).
    """
    if x is None:
        return None
    return lax.bitcast_convert_type(x, jnp.uint16) if x.dtype.itemsize == 2 else x


def from_bits(x: jax.Array, dtype: Any) -> jax.Array:
    return lax.bitcast_convert_type(x, dtype) if x.dtype != dtype else x


class Chunk(NamedTuple):
    raw: jax.Array  # h W + b of the chunk's columns, before capping
    z: jax.Array  # the logits, after capping
    kernel: jax.Array  # the chunk's kernel slice, in the dot's dtype, in the kernel's layout
    start: jax.Array  # first column
    cols: jax.Array  # [1, chunk] global class index of each column
    fresh: jax.Array  # [1, chunk] columns not already counted by the previous chunk

    def classes(self, vector: jax.Array | None) -> jax.Array | None:
        """This chunk's slice of a per-class vector `[V]`, shaped `[1, chunk]`."""
        if vector is None:
            return None
        return lax.dynamic_slice_in_dim(vector, self.start, self.cols.shape[1])[None, :]


def chunk(
    plan: Plan,
    h: jax.Array,
    kernel: jax.Array,
    bias: jax.Array | None,
    cap: Any,
    step: jax.Array,
) -> Chunk:
    """The logits of chunk `step`: `cap(h W + b)` for its columns; `h` in the dot's dtype."""
    c, total = plan.chunk, num_classes(plan, kernel)
    start = jnp.minimum(step * c, total - c)
    # The kernel and bias are read through a barrier tied to the step, so whatever
    # a backend does to slice them (XLA's CPU backend widens a half-precision
    # operand of a dynamic slice) stays in the loop, chunk-sized, rather than being
    # hoisted out of it as a converted copy of the whole kernel
    # (`test_linear.py::test_memory_large_vocabulary`).
    kernel, bias = lax.optimization_barrier((kernel, bias, step))[:2]
    k = lax.dynamic_slice_in_dim(kernel, start, c, axis=plan.class_dim).astype(plan.dot_dtype)
    raw = dot(h, k, (1, 1 - plan.class_dim), plan.compute_dtype)
    if bias is not None:
        b = lax.dynamic_slice_in_dim(bias, start, c)
        raw = raw + b.astype(plan.compute_dtype)[None, :]
    local = start + lax.iota(start.dtype, c)
    cols = local
    if plan.axis_name is not None:
        cols = local + lax.axis_index(plan.axis_name).astype(start.dtype) * total
    z = _numerics.softcap(raw, cap)
    return Chunk(raw, z, k, start, cols[None, :], (local >= step * c)[None, :])


def is_target(classes: jax.Array, block: Chunk) -> jax.Array:
    """`[N, chunk]`: whether each column is its row's label."""
    return block.cols == classes[:, None].astype(block.cols.dtype)


def per_class_update(acc: jax.Array, values: jax.Array, block: Chunk, dtype: Any) -> jax.Array:
    """Writes a chunk's per-class gradient `values [chunk]` into `acc` (`as_bits` form).

    Columns shared with the previous chunk are written again with the same values.
    """
    return lax.dynamic_update_slice_in_dim(acc, as_bits(values.astype(dtype)), block.start, 0)


def backprop(
    plan: Plan,
    h: jax.Array,
    dz: jax.Array,
    block: Chunk,
    dh: jax.Array,
    dk: jax.Array,
    kernel_dtype: Any,
) -> tuple[jax.Array, jax.Array]:
    """Adds the chunk's logit cotangent `dz [N, chunk]` to d hidden and d kernel (`as_bits`)."""
    dz_dot = dz.astype(plan.dot_dtype)
    if plan.layout == "DV":
        dk_chunk = dot(h, dz_dot, (0, 0), plan.compute_dtype)  # [D, chunk]
    else:
        dk_chunk = dot(dz_dot, h, (0, 0), plan.compute_dtype)  # [chunk, D]
    dk_chunk = as_bits(dk_chunk.astype(kernel_dtype))
    dk = lax.dynamic_update_slice_in_dim(dk, dk_chunk, block.start, axis=plan.class_dim)
    # Columns shared with the previous chunk were written again in dk, but count once in dh.
    fresh = jnp.where(block.fresh, dz_dot, 0)
    dh = dh + dot(fresh, block.kernel, (1, plan.class_dim), plan.compute_dtype)
    return dh, dk


def varying(carry: tuple, *refs: Any) -> tuple:
    """A loop's initial carry, varying over the manual axes its inputs vary over."""
    return tuple(None if x is None else _sharding.varying_like(x, *refs) for x in carry)


def make_plan(
    hidden: jax.Array,
    kernel: jax.Array,
    others: tuple[jax.Array | None, ...],
    *,
    num_examples: int,
    chunk_size: int | None,
    layout: str,
    axis_name: Any,
    stats: bool = False,
) -> tuple[Plan, Any]:
    """Chunk, dtypes and vocabulary axes; the mesh when an Explicit mesh shards the vocabulary.

    `others` are the floating per-class inputs (bias, weights) that join the
    compute dtype.
    """
    class_dim = 1 if layout == "DV" else 0
    mesh, vocab_axes = (None, None)
    if axis_name is None:
        mesh, vocab_axes = _sharding.explicit_axes(kernel, class_dim)
    local_classes = kernel.shape[class_dim]
    if mesh is not None and vocab_axes is not None:
        local_classes //= int(np.prod([mesh.shape[a] for a in vocab_axes]))
    if chunk_size is None:
        chunk_ = min(max(128, AUTO_CHUNK_ELEMENTS // max(num_examples, 1)), local_classes)
    else:
        chunk_ = min(chunk_size, local_classes)
    dtype = _checks.compute_dtype(*(a.dtype for a in (hidden, kernel, *others) if a is not None))
    plan = Plan(
        chunk=chunk_,
        dot_dtype=hidden.dtype if hidden.dtype == kernel.dtype else dtype,
        compute_dtype=dtype,
        layout=layout,
        axis_name=axis_name if vocab_axes is None else vocab_axes,
        stats=stats,
    )
    return plan, mesh


def per_shard(
    rule: Any,
    plan: Plan,
    mesh: Any,
    per_example: tuple,
    inputs: Any,
    kinds: tuple[str, ...],
    example_weights: jax.Array | None = None,
) -> Any:
    """Runs `rule(plan, *per_example, inputs, example_weights)` on each vocabulary shard
    of an Explicit mesh.

    `per_example` (mask, bad) and `example_weights` are arrays (or None) of
    the examples' shape; `kinds` names, for each field of `inputs`, how it is
    split: `"rows"` (examples first), `"kernel"`, `"classes"` (a per-class
    vector) or `"whole"` (replicated).
    """
    vocab = plan.axis_name
    rows = jax.typeof(inputs.hidden).sharding.spec[0]
    if rows is not None and set(rows if isinstance(rows, tuple) else (rows,)) & set(vocab):
        rows = None
    kernel_spec = P(None, vocab) if plan.layout == "DV" else P(vocab, None)
    spec_of = {"rows": P(rows), "kernel": kernel_spec, "classes": P(vocab), "whole": P()}
    specs = type(inputs)(
        *(None if x is None else spec_of[k] for x, k in zip(inputs, kinds, strict=True))
    )
    per_example = (*per_example, inputs, example_weights)
    example_specs = tuple(None if x is None else P(rows) for x in per_example)
    example_specs = (*example_specs[:-2], specs, example_specs[-1])
    args = jax.tree.map(jax.reshard, per_example, example_specs)
    run = jax.shard_map(
        functools.partial(rule, plan),
        mesh=mesh,
        in_specs=example_specs,
        out_specs=(P(rows),) * 3 if plan.stats else P(rows),
    )
    return run(*args)


def validate(
    hidden: ArrayLike, kernel: ArrayLike, bias: ArrayLike | None, layout: str
) -> tuple[jax.Array, jax.Array, jax.Array | None]:
    """Floating `hidden (..., D)`, a kernel of the layout's shape, and a bias `(V,)`."""
    hidden, kernel = _checks.floating("hidden", hidden), _checks.floating("kernel", kernel)
    if hidden.ndim < 1:
        raise ValueError("hidden must have at least one dimension (the features); got a scalar.")
    d = hidden.shape[-1]
    feature_dim = layout.index("D")
    if kernel.ndim != 2 or kernel.shape[feature_dim] != d:
        want = f"({d}, V) (hidden features by classes)" if layout == "DV" else f"(V, {d})"
        raise ValueError(
            f"kernel must have shape {want} for kernel_layout={layout!r}; got {kernel.shape}."
        )
    v = kernel.shape[1 - feature_dim]
    if v < 1:
        raise ValueError("kernel must have at least one class; got V = 0.")
    return hidden, kernel, _checks.class_vector("bias", bias, v)


def check_chunk_size(name: str, value: Any) -> int | None:
    return None if value is None else _checks.positive_integer(name, value)
