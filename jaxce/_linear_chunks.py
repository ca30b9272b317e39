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
dtype inside the loop, so no converted copy of the whole kernel is ever made;
logits given whole (a teacher's) are read the same way, a chunk at a time
(`columns`). The heads fold each chunk into the streamed softmax (`_stream`);
`Grads` accumulates d hidden, d kernel and d bias, and `backward_loop` runs the
backward's chunks.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, overload

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from jax.typing import ArrayLike

from . import _checks, _labels, _numerics, _sharding
from ._stream import Chunk

# Logits per block when `chunk_size` is None: 4 MiB of float32 on a CPU, 32 MiB
# on an accelerator, whose matrix units a narrow block leaves idle
# (`benchmarks/accelerator.py` times a sweep of chunk sizes).
AUTO_CHUNK_ELEMENTS_CPU = 1 << 20
AUTO_CHUNK_ELEMENTS_ACCELERATOR = 1 << 23
# A half-precision kernel gradient on a CPU is written in windows (`backward_loop`),
# each flush one pass over the gradient: at most one flush per this many examples
# and per this many kernel elements.
EXAMPLES_PER_FLUSH = 512
KERNEL_ELEMENTS_PER_FLUSH = 1 << 24
LAYOUTS = ("DV", "VD")


class Plan(NamedTuple):
    """The static plan of one call: chunking, dtypes, layout, the vocabulary's mesh axes, and
    the windows of the kernel gradient."""

    chunk: int
    dot_dtype: Any
    compute_dtype: Any
    layout: str = "DV"  # the kernel's: [D, V] or [V, D]
    axis_name: Any = None  # mesh axes sharding the vocabulary (inside shard_map)
    axis: int = 1  # the class axis of a [N, chunk] block (for the rule skeleton)
    stats: bool = False  # also output each example's logsumexp and argmax class
    flushes: int = 1  # windows the kernel gradient is staged in (`backward_loop`)

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
    accumulator at every chunk; an update of the bits is in place. Where the
    bit-cast back is a copy (on the CPU), `backward_loop` keeps the kernel's
    bits a window at a time.
    """
    if x is None:
        return None
    return lax.bitcast_convert_type(x, jnp.uint16) if x.dtype.itemsize == 2 else x


def from_bits(x: jax.Array, dtype: Any) -> jax.Array:
    return lax.bitcast_convert_type(x, dtype) if x.dtype != dtype else x


def _window_steps(plan: Plan, steps: int) -> int:
    """Chunks per window of the kernel gradient (`backward_loop`)."""
    return -(-steps // plan.flushes)


def _tiled(plan: Plan, total: int) -> bool:
    """Whether every step's columns are all fresh: the chunks tile the classes and no
    window of `backward_loop` runs past the last chunk."""
    steps = -(-total // plan.chunk)
    return total % plan.chunk == 0 and steps % _window_steps(plan, steps) == 0


def _start(plan: Plan, total: int, step: jax.Array) -> jax.Array:
    """The first column of chunk `step`; the last chunk ends at the last class."""
    return jnp.minimum(step * plan.chunk, total - plan.chunk)


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
    start = _start(plan, total, step)
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
    # A constant where every column is fresh, so that no pass masks a block for nothing.
    fresh = jnp.ones((c,), bool) if _tiled(plan, total) else local >= step * c
    return Chunk(raw, z, start, cols[None, :], fresh[None, :], kernel=k)


def columns(plan: Plan, logits: jax.Array, step: jax.Array) -> jax.Array:
    """Chunk `step`'s columns of given logits `[N, V]`, `[N, chunk]` in the compute dtype.

    Read through a barrier tied to the step, like the kernel in `chunk`, so a
    half-precision array is widened a chunk at a time inside the loop.
    """
    logits = lax.optimization_barrier((logits, step))[0]
    start = _start(plan, logits.shape[1], step)
    return lax.dynamic_slice_in_dim(logits, start, plan.chunk, axis=1).astype(plan.compute_dtype)


def per_class_update(acc: jax.Array, values: jax.Array, block: Chunk, dtype: Any) -> jax.Array:
    """Writes a chunk's per-class gradient `values [chunk]` into `acc` (`as_bits` form).

    Columns shared with the previous chunk are written again with the same values.
    """
    return lax.dynamic_update_slice_in_dim(acc, as_bits(values.astype(dtype)), block.start, 0)


class Grads(NamedTuple):
    """d hidden (compute dtype), d kernel and d bias (`as_bits`), summed over the chunks so far.

    `kernel` holds the classes from column `origin` on: all of them, or one
    window of them (`backward_loop`).
    """

    hidden: jax.Array
    kernel: jax.Array
    bias: jax.Array | None
    origin: jax.Array


class Rows(NamedTuple):
    """A fused head's per-example arrays, flattened to its `N` rows."""

    mask: jax.Array  # [N], the examples that are present
    bad: jax.Array | None  # [N], invalid labels
    weights: jax.Array | None  # [N], the example weights
    keep: jax.Array | None  # [N], the examples that count, when an option can exclude one
    present: jax.Array | None  # `mask`, with example weights (whose 0 `keep` excludes)
    classes: jax.Array | None  # [N], the labels


def flat_rows(
    mask: jax.Array,
    bad: jax.Array | None,
    weights: jax.Array | None,
    classes: jax.Array | None,
    *,
    where: Any,
    ignore_index: int | None,
) -> Rows:
    """`mask` (the present examples), `bad`, the example `weights` and the labels
    `classes` (each of the examples' shape, or None) as `Rows`.

    `keep` is for the heads to zero the excluded examples' hidden states
    (`counted_hidden`): their cotangent is 0, but an inf or NaN there (the
    hidden state of a padding token) would make `0 * NaN` in the kernel's
    gradient, which sums over the examples, and in the per-token statistics
    the backward reads. Without `where`, `ignore_index` or example weights no
    example can be excluded, and the program holds no masked copy of the
    hidden states. With example weights the forward reads the `present` rows
    instead, so an example weighted 0 still has its loss term, the derivative
    with respect to its weight; the backward reads the `keep` rows and drops
    the rest from every block's logit cotangent (`counted_blocks`).
    """
    flat = mask.reshape(-1)
    v = None if weights is None else jnp.broadcast_to(weights, mask.shape).reshape(-1)
    keep = None
    if where is not None or ignore_index is not None or weights is not None:
        keep = _labels.kept(flat, v)
    bad, classes = (None if x is None else x.reshape(-1) for x in (bad, classes))
    return Rows(flat, bad, v, keep, None if v is None else flat, classes)


def forward_hidden(plan: Plan, hidden: jax.Array, keep: Any, present: Any) -> jax.Array:
    """The hidden states the forward reads: those of every present example."""
    return counted_hidden(plan, hidden, keep if present is None else present)


def counted_blocks(dz: jax.Array, keep: Any, present: Any) -> jax.Array:
    """A block's logit cotangent `dz [N, chunk]`, exactly 0 on the rows `keep` excludes.

    Only with example weights (`present`): a row weighted 0 has its cotangent 0,
    but its statistics come from its own hidden state, which may be inf or NaN.
    """
    return dz if present is None else jnp.where(keep[:, None], dz, 0)


def counted_hidden(plan: Plan, hidden: jax.Array, keep: jax.Array | None) -> jax.Array:
    """`hidden [N, D]` in the dot's dtype, the rows that `keep` excludes set to 0."""
    h = hidden.astype(plan.dot_dtype)
    return h if keep is None else jnp.where(keep[:, None], h, 0)


def backprop(
    plan: Plan,
    h: jax.Array,
    dz: jax.Array,
    block: Chunk,
    grads: Grads,
    kernel: jax.Array,
    bias: jax.Array | None,
) -> Grads:
    """Adds the chunk's logit cotangent `dz [N, chunk]` to d hidden, d kernel and d bias."""
    db = grads.bias
    if bias is not None and db is not None:
        db = per_class_update(db, jnp.sum(dz, axis=0), block, bias.dtype)
    dz_dot = dz.astype(plan.dot_dtype)
    if plan.layout == "DV":
        dk_chunk = dot(h, dz_dot, (0, 0), plan.compute_dtype)  # [D, chunk]
    else:
        dk_chunk = dot(dz_dot, h, (0, 0), plan.compute_dtype)  # [chunk, D]
    dk_chunk = as_bits(dk_chunk.astype(kernel.dtype))
    at = block.start - grads.origin
    dk = lax.dynamic_update_slice_in_dim(grads.kernel, dk_chunk, at, axis=plan.class_dim)
    # Columns shared with the previous chunk were written again in dk, but count once in dh.
    fresh = jnp.where(block.fresh, dz_dot, 0)
    dh = grads.hidden + dot(fresh, block.kernel, (1, plan.class_dim), plan.compute_dtype)
    return Grads(dh, dk, db, grads.origin)


def backward_loop(
    plan: Plan,
    body: Any,
    rest: Any,
    hidden: jax.Array,
    kernel: jax.Array,
    bias: jax.Array | None,
    refs: tuple[Any, ...],
) -> tuple[tuple[jax.Array, jax.Array, jax.Array | None], Any]:
    """Runs `body(step, (grads, rest))` over every chunk; returns (d hidden, d kernel,
    d bias), each in its input's form, and the final `rest`.

    The carry starts at zero `Grads` and `rest`, varying like `refs`. With
    `plan.flushes > 1` the kernel gradient is written a window of columns at a
    time: each group of chunks fills a window held as bits, which is then
    written into the gradient, in its own dtype, with one dynamic update slice.
    This is for a backend whose bit-cast of the whole accumulator is a copy and
    whose half-precision update slice is a float32 pass over the whole array
    (XLA's CPU backend; `kernel_gradient_accumulators` in `make bench` times
    both): the temp holds one window instead of the whole kernel's bits, for one
    such pass per window. A window is read from the gradient before it is
    filled, so the columns the last window shares with the one before keep
    their values.
    """
    db = None if bias is None else jnp.zeros_like(as_bits(bias))
    steps = num_steps(plan, kernel)
    per = _window_steps(plan, steps)
    total, axis = num_classes(plan, kernel), plan.class_dim
    width = min(per * plan.chunk, total)
    shape = list(kernel.shape)
    shape[axis] = width
    dk_window = jnp.zeros(shape, kernel.dtype)
    origin = jnp.zeros((), jnp.int32)
    init = (
        Grads(jnp.zeros(hidden.shape, plan.compute_dtype), as_bits(dk_window), db, origin),
        rest,
    )
    grads, rest = varying(init, *refs)
    if width == total:
        grads, rest = lax.fori_loop(0, steps, body, (grads, rest))
        dk = grads.kernel
    else:

        def window(group: jax.Array, carry: Any) -> Any:
            dk, grads, rest = carry
            origin = jnp.minimum(group * width, total - width).astype(jnp.int32)
            # Read through a barrier, like the kernel in `chunk`, so a widened read stays
            # window-sized.
            seen = lax.optimization_barrier((dk, group))[0]
            stage = as_bits(lax.dynamic_slice_in_dim(seen, origin, width, axis))
            grads = grads._replace(kernel=stage, origin=origin)
            # The last group may run past the last chunk; its extra steps repeat that
            # chunk, whose columns are then all already counted (`Chunk.fresh`).
            grads, rest = lax.fori_loop(
                0, per, lambda j, c: body(group * per + j, c), (grads, rest)
            )
            stage = from_bits(grads.kernel, kernel.dtype)
            return lax.dynamic_update_slice_in_dim(dk, stage, origin, axis), grads, rest

        groups = -(-steps // per)
        full = varying(jnp.zeros(kernel.shape, kernel.dtype), *refs)
        dk, grads, rest = lax.fori_loop(0, groups, window, (full, grads, rest))
    db = None if grads.bias is None or bias is None else from_bits(grads.bias, bias.dtype)
    return (grads.hidden, from_bits(dk, kernel.dtype), db), rest


def varying(carry: Any, *refs: Any) -> Any:
    """A loop's initial carry (a pytree), varying over the manual axes its inputs vary over."""
    return jax.tree.map(lambda x: _sharding.varying_like(x, *refs), carry)


def auto_chunk_elements() -> int:
    """Logits per block of the automatic chunk, for the default backend's devices."""
    on_cpu = jax.default_backend() == "cpu"
    return AUTO_CHUNK_ELEMENTS_CPU if on_cpu else AUTO_CHUNK_ELEMENTS_ACCELERATOR


def make_plan(
    hidden: jax.Array,
    kernel: jax.Array,
    others: tuple[jax.Array | None, ...],
    *,
    num_examples: int,
    chunk_size: int | None,
    layout: str,
    axis_name: Any,
    class_inputs: tuple[tuple[jax.Array | None, int], ...] = (),
    stats: bool = False,
) -> tuple[Plan, Any]:
    """Chunk, dtypes and vocabulary axes; the mesh when an Explicit mesh shards the vocabulary.

    `others` are the floating inputs besides hidden and kernel (bias, weights)
    that join the compute dtype. The vocabulary's mesh axes are the kernel's
    class axis's, or else those of the first of `class_inputs` (arrays, each
    with its class dimension) whose class axis is sharded.
    """
    class_dim = 1 if layout == "DV" else 0
    mesh, vocab_axes = (None, None)
    if axis_name is None:
        for array, dim in ((kernel, class_dim), *class_inputs):
            if array is not None and vocab_axes is None:
                mesh, vocab_axes = _sharding.explicit_axes(array, dim)
    local_classes = kernel.shape[class_dim]
    if mesh is not None and vocab_axes is not None:
        local_classes //= int(np.prod([mesh.shape[a] for a in vocab_axes]))
    if chunk_size is None:
        elements = auto_chunk_elements()
        chunk_ = min(max(128, elements // max(num_examples, 1)), local_classes)
    else:
        chunk_ = min(chunk_size, local_classes)
    dtype = _checks.compute_dtype(*(a.dtype for a in (hidden, kernel, *others) if a is not None))
    flushes = 1
    if jnp.dtype(kernel.dtype).itemsize == 2 and jax.default_backend() == "cpu":
        steps = -(-local_classes // chunk_)
        kernel_elements = kernel.size // kernel.shape[class_dim] * local_classes
        flushes = min(
            steps,
            num_examples // EXAMPLES_PER_FLUSH,
            kernel_elements // KERNEL_ELEMENTS_PER_FLUSH,
        )
        flushes = max(flushes, 1)
    plan = Plan(
        chunk=chunk_,
        dot_dtype=hidden.dtype if hidden.dtype == kernel.dtype else dtype,
        compute_dtype=dtype,
        layout=layout,
        axis_name=axis_name if vocab_axes is None else vocab_axes,
        stats=stats,
        flushes=flushes,
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
    config: Any = None,
) -> Any:
    """Runs `rule(config, *per_example, inputs, example_weights)` on each vocabulary
    shard of an Explicit mesh.

    `per_example` (mask, bad) and `example_weights` are arrays (or None) of
    the examples' shape; `kinds` names, for each field of `inputs`, how it is
    split: `"rows"` (examples first), `"kernel"`, `"classes"` (a per-class
    vector), `"logits"` (examples by classes) or `"whole"` (replicated).
    `config` is the rule's static configuration, `plan` by default.
    """
    vocab = plan.axis_name
    rows = jax.typeof(inputs.hidden).sharding.spec[0]
    if rows is not None and set(rows if isinstance(rows, tuple) else (rows,)) & set(vocab):
        rows = None
    kernel_spec = P(None, vocab) if plan.layout == "DV" else P(vocab, None)
    spec_of = {
        "rows": P(rows),
        "kernel": kernel_spec,
        "classes": P(vocab),
        "logits": P(rows, vocab),
        "whole": P(),
    }
    specs = type(inputs)(
        *(None if x is None else spec_of[k] for x, k in zip(inputs, kinds, strict=True))
    )
    per_example = (*per_example, inputs, example_weights)
    example_specs = tuple(None if x is None else P(rows) for x in per_example)
    example_specs = (*example_specs[:-2], specs, example_specs[-1])
    # A NamedSharding, not a bare spec: arrays placed on a mesh need no `jax.set_mesh`.
    args = jax.tree.map(
        lambda x, s: jax.reshard(x, NamedSharding(mesh, s)), per_example, example_specs
    )
    run = jax.shard_map(
        functools.partial(rule, plan if config is None else config),
        mesh=mesh,
        in_specs=example_specs,
        out_specs=(P(rows),) * 3 if plan.stats else P(rows),
    )
    return run(*args)


def validate(
    hidden: ArrayLike,
    kernel: ArrayLike,
    bias: ArrayLike | None,
    layout: str,
    names: tuple[str, str, str] = ("hidden", "kernel", "bias"),
) -> tuple[jax.Array, jax.Array, jax.Array | None]:
    """Floating `hidden (..., D)`, a kernel of the layout's shape, and a bias `(V,)`.

    `names` are the three arguments' names in the error messages.
    """
    h_name, k_name, b_name = names
    hidden, kernel = _checks.floating(h_name, hidden), _checks.floating(k_name, kernel)
    if hidden.ndim < 1:
        raise ValueError(f"{h_name} must have at least one dimension (the features); got a scalar.")
    d = hidden.shape[-1]
    feature_dim = layout.index("D")
    if kernel.ndim != 2 or kernel.shape[feature_dim] != d:
        want = f"({d}, V) ({h_name} features by classes)" if layout == "DV" else f"(V, {d})"
        raise ValueError(
            f"{k_name} must have shape {want} for kernel_layout={layout!r}; got {kernel.shape}."
        )
    v = kernel.shape[1 - feature_dim]
    if v < 1:
        raise ValueError(f"{k_name} must have at least one class; got V = 0.")
    return hidden, kernel, _checks.class_vector(b_name, bias, v)


class Head(NamedTuple):
    """A fused head's validated inputs, labels and examples (`head`), and how to plan it."""

    hidden: jax.Array  # (..., D), as given
    kernel: jax.Array  # in its layout: this device's classes inside `shard_map`
    bias: jax.Array | None  # (V,)
    example_weights: jax.Array | None  # v, of the examples' rank
    classes: jax.Array | None  # integer labels of the examples' shape, or None without labels
    mask: jax.Array  # the examples' shape: the examples present
    rows: Rows  # the per-example arrays flattened to the N rows
    layout: str
    chunk_size: int | None
    axis_name: Any

    @property
    def example_shape(self) -> tuple[int, ...]:
        return self.hidden.shape[:-1]

    @property
    def num_classes(self) -> int:
        """The classes this device's kernel holds."""
        return self.kernel.shape[self.layout.index("V")]

    def flat(self, x: jax.Array) -> jax.Array:
        """`x (..., F)` of the examples' shape as `[N, F]` rows."""
        return x.reshape(self.rows.mask.shape[0], x.shape[-1])

    def plan(
        self,
        others: tuple[jax.Array | None, ...] = (),
        *,
        class_inputs: tuple[tuple[jax.Array | None, int], ...] = (),
        stats: bool = False,
    ) -> tuple[Plan, Any]:
        """`make_plan` of the head, `others` its floating inputs besides hidden, kernel and bias."""
        return make_plan(
            self.hidden,
            self.kernel,
            (self.bias, *others),
            num_examples=self.rows.mask.shape[0],
            chunk_size=self.chunk_size,
            layout=self.layout,
            axis_name=self.axis_name,
            class_inputs=class_inputs,
            stats=stats,
        )


def head(
    hidden: ArrayLike,
    kernel: ArrayLike,
    labels: ArrayLike | None,
    *,
    bias: ArrayLike | None,
    layout: str,
    chunk_size: int | None,
    axis_name: Any,
    ignore_index: int | None,
    where: ArrayLike | None,
    example_weights: ArrayLike | None,
    autodiff: str,
) -> Head:
    """A fused head's set-up: its inputs validated, its labels and examples as rows.

    One integer label per row of `hidden` (None: no labels; then `ignore_index`
    is an error). Inside `shard_map` the kernel holds one shard's classes and
    the labels are global.
    """
    reverse_only(autodiff)
    hidden, kernel, bias = validate(hidden, kernel, bias, layout)
    example_shape = hidden.shape[:-1]
    v = _labels.per_example_weights(example_weights, example_shape)
    classes = bad = None
    if labels is None:
        if ignore_index is not None:
            raise ValueError("ignore_index applies to labels; got labels=None.")
        mask = _checks.example_mask(where, example_shape)
    else:
        classes = _labels.parse(
            hidden, labels, hidden.ndim - 1, allow_probs=False, logits_name="hidden"
        ).classes
        assert classes is not None
        local_classes = kernel.shape[layout.index("V")]
        label_range = local_classes * (1 if axis_name is None else lax.axis_size(axis_name))
        mask, bad = _labels.example_mask(
            classes,
            example_shape,
            label_range,
            ignore_index=ignore_index,
            where=where,
            weights=v,
        )
    rows = flat_rows(mask, bad, v, classes, where=where, ignore_index=ignore_index)
    return Head(hidden, kernel, bias, v, classes, mask, rows, layout, chunk_size, axis_name)


def check_layout(name: str, value: Any) -> str:
    return _checks.one_of(name, value, LAYOUTS)


def check_chunk_size(name: str, value: Any) -> int | None:
    return None if value is None else _checks.positive_integer(name, value)


def reverse_only(autodiff: str) -> None:
    """The fused heads' `autodiff` option: their backward recomputes each chunk's logits."""
    if autodiff != "reverse":
        raise ValueError(
            "autodiff must be 'reverse' for a fused head: it never holds the logits, and its "
            f"rule is a backward that computes each chunk again; got {autodiff!r}. For forward "
            "mode, give softmax_cross_entropy the logits hidden @ kernel."
        )
