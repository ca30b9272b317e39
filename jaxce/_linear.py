"""Fused linear head and softmax cross-entropy that never materialises the N x V logits.

The forward streams the vocabulary in chunks of the kernel: each step computes
one `[N, chunk]` block of logits, folds it into a running logsumexp
(`logaddexp` of the chunk's logsumexp), the target logit and the smoothing
sums, and drops it. Only per-token numbers (the logsumexp, the count of finite
logits) are kept for the backward, which recomputes each block of logits once
more and turns it straight into its share of d hidden, d kernel and d bias.

A ragged last chunk (V not a multiple of the chunk) is not padded: it starts at
`V - chunk`, overlapping the previous one, and its already-counted columns are
masked. The kernel chunk is sliced and converted to the dot's dtype inside the
loop, so no converted copy of the whole kernel is ever made.

The public function validates, plans (chunk, dtypes, the mesh axes of the
vocabulary) and dispatches (one loop, or one loop per vocabulary shard).
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

from . import _checks, _labels, _numerics, _sharding
from ._options import entry_point
from ._reduce import reduce_loss
from ._rule import Summed, per_example_rule

# Logits per chunk when `chunk_size` is None: 4 MiB of float32 per block.
_AUTO_CHUNK_ELEMENTS = 1 << 20


class _Plan(NamedTuple):
    """The static plan of one call: chunking, dtypes, and the vocabulary's mesh axes."""

    chunk: int
    dot_dtype: Any
    compute_dtype: Any
    kernel_dtype: Any
    bias_dtype: Any
    axis_name: Any = None  # mesh axes sharding the vocabulary (inside shard_map)
    axis: int = 1  # the class axis of a [N, chunk] block (for the rule skeleton)


class _Inputs(NamedTuple):
    hidden: jax.Array  # [N, D]
    kernel: jax.Array  # [D, V]
    bias: jax.Array | None  # [V]
    classes: jax.Array  # [N]
    smoothing: Any
    z_loss: Any
    softcap: Any


class _Residuals(NamedTuple):
    lse: jax.Array  # [N, 1] after capping, over the whole vocabulary
    num_finite: Any  # classes with a finite logit (smoothing only)
    target: jax.Array  # the target's logit
    mean_logit: Any  # mean of the finite logits (smoothing only)


def _num_steps(num_classes: int, chunk: int) -> int:
    return -(-num_classes // chunk)


def _dot(a: jax.Array, b: jax.Array, contract: tuple[int, int], dtype: Any) -> jax.Array:
    dims = (((contract[0],), (contract[1],)), ((), ()))
    return lax.dot_general(a, b, dims, preferred_element_type=dtype)


@overload
def _as_bits(x: jax.Array) -> jax.Array: ...
@overload
def _as_bits(x: None) -> None: ...
def _as_bits(x: jax.Array | None) -> jax.Array | None:
    """Half-precision floats viewed as uint16 (a bitcast, no copy); others unchanged.

    XLA's CPU backend converts a half-precision operand of a dynamic slice or
    dynamic update slice to float32 and hoists that conversion out of the loop,
    a float32 copy of the whole kernel (`test_linear.py::test_memory_large_vocabulary`).
    Slicing the bits instead keeps every copy chunk-sized.
    """
    if x is None:
        return None
    return lax.bitcast_convert_type(x, jnp.uint16) if x.dtype.itemsize == 2 else x


def _from_bits(x: jax.Array, dtype: Any) -> jax.Array:
    return lax.bitcast_convert_type(x, dtype) if x.dtype != dtype else x


class _Chunk(NamedTuple):
    raw: jax.Array  # h W + b of the chunk's columns, before capping
    z: jax.Array  # the logits, after capping
    kernel: jax.Array  # the chunk's kernel columns, in the dot's dtype
    start: jax.Array  # first column
    cols: jax.Array  # [1, chunk] global class index of each column
    fresh: jax.Array  # [1, chunk] columns not already counted by the previous chunk


def _chunk(plan, inp, h, kernel_bits, bias_bits, step):
    """Logits of chunk `step`; `kernel_bits` and `bias_bits` are in their `_as_bits` form."""
    c, num_classes = plan.chunk, kernel_bits.shape[1]
    start = jnp.minimum(step * c, num_classes - c)
    # Sliced, then converted, inside the loop body: the conversion depends on the
    # step, so XLA cannot hoist a converted copy of the whole kernel out of the loop.
    k = _from_bits(lax.dynamic_slice_in_dim(kernel_bits, start, c, axis=1), plan.kernel_dtype)
    k = k.astype(plan.dot_dtype)
    raw = _dot(h, k, (1, 0), plan.compute_dtype)
    if bias_bits is not None:
        b = _from_bits(lax.dynamic_slice_in_dim(bias_bits, start, c), plan.bias_dtype)
        raw = raw + b.astype(plan.compute_dtype)[None, :]
    local = start + lax.iota(start.dtype, c)
    cols = local
    if plan.axis_name is not None:
        cols = local + lax.axis_index(plan.axis_name).astype(start.dtype) * num_classes
    z = _numerics.softcap(raw, inp.softcap)
    return _Chunk(raw, z, k, start, cols[None, :], (local >= step * c)[None, :])


def _is_target(inp, cols):
    return cols == inp.classes[:, None].astype(cols.dtype)


def _varying(carry, *refs):
    """A loop's initial carry, varying over the manual axes its inputs vary over."""
    return tuple(None if x is None else _sharding.varying_like(x, *refs) for x in carry)


def _linear_ce_fwd(plan: _Plan, inp: _Inputs) -> tuple[jax.Array, _Residuals]:
    dtype, eps = plan.compute_dtype, inp.smoothing
    n = inp.hidden.shape[0]
    h = inp.hidden.astype(plan.dot_dtype)
    kernel_bits, bias_bits = _as_bits(inp.kernel), _as_bits(inp.bias)

    def body(step, carry):
        lse, target, z_sum, count = carry
        chunk = _chunk(plan, inp, h, kernel_bits, bias_bits, step)
        z, fresh = chunk.z, chunk.fresh
        z_new = jnp.where(fresh, z, -jnp.inf)
        lse = jnp.logaddexp(lse, jax.nn.logsumexp(z_new, axis=1))
        target = target + jnp.sum(jnp.where(_is_target(inp, chunk.cols) & fresh, z, 0), axis=1)
        if eps is not None:
            finite = z_new > -jnp.inf
            z_sum = z_sum + jnp.sum(jnp.where(finite, z, 0), axis=1)
            count = count + jnp.sum(finite, axis=1, dtype=dtype)
        return lse, target, z_sum, count

    init = (jnp.full((n,), -jnp.inf, dtype),) + tuple(jnp.zeros((n,), dtype) for _ in range(3))
    steps = _num_steps(inp.kernel.shape[1], plan.chunk)
    stats = lax.fori_loop(0, steps, body, _varying(init, *inp))
    if plan.axis_name is not None:
        stats = _sharding.combine_shards(stats[0], stats[1:], plan.axis_name)
    lse, target, z_sum, count = (x[:, None] for x in stats)
    mean = None if eps is None else z_sum / count
    loss = _numerics.token_cross_entropy(lse, target, eps, mean, inp.z_loss)
    return loss, _Residuals(lse, None if eps is None else count, target, mean)


def _linear_ce_bwd(plan: _Plan, inp: _Inputs, res: _Residuals, g: jax.Array) -> tuple[Any, ...]:
    dtype, eps, cap = plan.compute_dtype, inp.smoothing, inp.softcap
    h = inp.hidden.astype(plan.dot_dtype)
    # d loss / d z_c = a P_c - (1 - eps) Y_c - eps / K' [z_c finite]
    a = 1 if inp.z_loss is None else 1 + 2 * inp.z_loss * res.lse
    kernel_bits, bias_bits = _as_bits(inp.kernel), _as_bits(inp.bias)

    def body(step, carry):
        dh, dk, db, d_cap = carry
        chunk = _chunk(plan, inp, h, kernel_bits, bias_bits, step)
        z = chunk.z
        target = _is_target(inp, chunk.cols)
        if eps is None:
            target = target.astype(dtype)
        else:
            target = jnp.where(target, 1 - eps, 0) + jnp.where(
                z > -jnp.inf, eps / res.num_finite, 0
            )
        dz = g * (a * jnp.exp(z - res.lse) - target)
        if cap is not None:
            # z = c tanh(u / c): dz/du = 1 - tanh^2, dz/dc = tanh - (u / c)(1 - tanh^2).
            tanh = z / cap
            d_cap = d_cap + jnp.sum(
                jnp.where(chunk.fresh, dz * (tanh - chunk.raw / cap * (1 - tanh**2)), 0), axis=1
            )
            dz = dz * (1 - tanh**2)
        # Columns shared with the previous chunk get the same values again in dk
        # and db, but must count once in dh.
        dz_dot = dz.astype(plan.dot_dtype)
        dk_chunk = _as_bits(_dot(h, dz_dot, (0, 0), dtype).astype(inp.kernel.dtype))
        dk = lax.dynamic_update_slice_in_dim(dk, dk_chunk, chunk.start, axis=1)
        if db is not None:
            assert inp.bias is not None
            db_chunk = _as_bits(jnp.sum(dz, axis=0).astype(inp.bias.dtype))
            db = lax.dynamic_update_slice_in_dim(db, db_chunk, chunk.start, axis=0)
        dh = dh + _dot(jnp.where(chunk.fresh, dz_dot, 0), chunk.kernel, (1, 1), dtype)
        return dh, dk, db, d_cap

    init = (
        jnp.zeros(inp.hidden.shape, dtype),
        jnp.zeros_like(kernel_bits),
        None if bias_bits is None else jnp.zeros_like(bias_bits),
        jnp.zeros(inp.hidden.shape[:1], dtype),
    )
    steps = _num_steps(inp.kernel.shape[1], plan.chunk)
    dh, dk, db, d_cap = lax.fori_loop(0, steps, body, _varying(init, *inp, g, res.lse))
    db = None if db is None or inp.bias is None else _from_bits(db, inp.bias.dtype)
    d_eps = None if eps is None else g * (res.target - res.mean_logit)
    d_zeta = None if inp.z_loss is None else g * res.lse**2
    d_cap = None if cap is None else d_cap[:, None]
    return dh, Summed(_from_bits(dk, inp.kernel.dtype)), Summed(db), None, d_eps, d_zeta, d_cap


_linear_ce = per_example_rule(_linear_ce_fwd, _linear_ce_bwd)


def _plan(hidden, kernel, bias, num_examples, chunk_size, axis_name) -> tuple[_Plan, Any]:
    """Chunk, dtypes and vocabulary axes; the mesh when an Explicit mesh shards the vocabulary."""
    mesh, vocab_axes = (None, None)
    if axis_name is None:
        mesh, vocab_axes = _sharding.explicit_axes(kernel, 1)
    local_classes = kernel.shape[1]
    if mesh is not None and vocab_axes is not None:
        local_classes //= int(np.prod([mesh.shape[a] for a in vocab_axes]))
    if chunk_size is None:
        chunk = min(max(128, _AUTO_CHUNK_ELEMENTS // max(num_examples, 1)), local_classes)
    else:
        chunk = min(chunk_size, local_classes)
    dtype = _checks.compute_dtype(*(a.dtype for a in (hidden, kernel, bias) if a is not None))
    plan = _Plan(
        chunk=chunk,
        dot_dtype=hidden.dtype if hidden.dtype == kernel.dtype else dtype,
        compute_dtype=dtype,
        kernel_dtype=kernel.dtype,
        bias_dtype=None if bias is None else bias.dtype,
        axis_name=axis_name if vocab_axes is None else vocab_axes,
    )
    return plan, mesh


def _per_shard(plan, mesh, mask, bad, inp, example_weights=None):
    """Runs the chunk loop on each vocabulary shard of an Explicit mesh, with `shard_map`."""
    vocab = plan.axis_name
    rows = jax.typeof(inp.hidden).sharding.spec[0]
    if rows is not None and set(rows if isinstance(rows, tuple) else (rows,)) & set(vocab):
        rows = None
    every = (P(rows, None), P(None, vocab), P(vocab), P(rows), P(), P(), P())
    specs = tuple(None if x is None else s for s, x in zip(every, inp, strict=True))
    args = (mask, bad, inp, example_weights)
    weight_spec = None if example_weights is None else P(rows)
    arg_specs = (P(rows), P(rows), _Inputs(*specs), weight_spec)  # type: ignore[arg-type]
    args = jax.tree.map(jax.reshard, args, arg_specs)
    run = jax.shard_map(
        functools.partial(_linear_ce, plan), mesh=mesh, in_specs=arg_specs, out_specs=P(rows)
    )
    return run(*args)


def _validate(
    hidden: ArrayLike, kernel: ArrayLike, bias: ArrayLike | None
) -> tuple[jax.Array, jax.Array, jax.Array | None]:
    hidden, kernel = _checks.floating("hidden", hidden), _checks.floating("kernel", kernel)
    if hidden.ndim < 1:
        raise ValueError("hidden must have at least one dimension (the features); got a scalar.")
    if kernel.ndim != 2 or kernel.shape[0] != hidden.shape[-1]:
        raise ValueError(
            f"kernel must have shape ({hidden.shape[-1]}, V) (hidden features by classes); "
            f"got {kernel.shape}."
        )
    if kernel.shape[1] < 1:
        raise ValueError("kernel must have at least one class column; got V = 0.")
    return hidden, kernel, _checks.class_vector("bias", bias, kernel.shape[1])


def _chunk_size(name: str, value: Any) -> int | None:
    return None if value is None else _checks.positive_integer(name, value)


@entry_point(
    static=("chunk_size", "ignore_index", "reduction", "axis_name"),
    hyperparameters={
        "label_smoothing": _checks.UNIT,
        "z_loss": _checks.NON_NEGATIVE,
        "logit_softcap": _checks.POSITIVE._replace(optional=True),
    },
    checks={"chunk_size": _chunk_size},
)
def linear_softmax_cross_entropy(
    hidden: ArrayLike,
    kernel: ArrayLike,
    labels: ArrayLike,
    *,
    bias: ArrayLike | None = None,
    chunk_size: int | None = None,
    ignore_index: int | None = None,
    label_smoothing: ArrayLike = 0.0,
    z_loss: ArrayLike = 0.0,
    logit_softcap: ArrayLike | None = None,
    where: ArrayLike | None = None,
    reduction: str = "mean",
    denominator: ArrayLike | None = None,
    axis_name: str | tuple[str, ...] | None = None,
    example_weights: ArrayLike | None = None,
) -> jax.Array:
    r"""Softmax cross-entropy of a linear head, without materialising the logits.

    Equals `softmax_cross_entropy(hidden @ kernel + bias, labels, ...)`, with
    the logits optionally soft-capped first,
    $z \mapsto c \tanh(z / c)$ (Gemma 2), but streams the vocabulary in chunks:
    with $z_i = \operatorname{cap}(h_i W + b)$ the `"mean"` loss is

    $$
    L = \frac{1}{S}\sum_i m_i v_i \Big[(1-\varepsilon)\big(\operatorname{lse}(z_i) - z_{i y_i}\big)
        + \frac{\varepsilon}{K_i}\sum_{c} \big(\operatorname{lse}(z_i) - z_{ic}\big)
        + \zeta \operatorname{lse}(z_i)^2\Big],
    \qquad S = \sum_i m_i v_i,
    $$

    the smoothing sum running over the $K_i$ classes with a finite logit. The
    forward keeps a running `logaddexp` over the chunks and saves only
    per-token numbers; the backward (a `jax.custom_vjp`) recomputes each
    chunk's logits and accumulates $\partial L/\partial h$,
    $\partial L/\partial W$ and $\partial L/\partial b$ from
    $\partial L/\partial z = m_i v_i (P_i - Y_i)/S$ (smoothing and z-loss
    included). Peak memory is $O(N \cdot \text{chunk} + N D)$ instead of
    $O(N V)$, for about 4/3 of the matmul work of the materialised head.
    Half-precision inputs are multiplied with float32 accumulation. Reverse
    mode only: forward mode (`jvp`) is not supported by `jax.custom_vjp`.

    Args:
      hidden: floating array `(..., D)`; the leading dimensions are examples.
      kernel: floating array `(D, V)` (the layout of Flax `Dense`/`nnx.Linear`).
      labels: integer class indices in `[0, V)`, shape `hidden.shape[:-1]`.
      bias: optional floating array `(V,)`; a `-inf` entry masks a class.
      chunk_size: vocabulary columns per step. None picks about $2^{20}/N$
        (4 MiB of float32 logits per step), at least 128.
      ignore_index: integer label whose examples are excluded.
      label_smoothing: $\varepsilon \in [0, 1]$.
      z_loss: $\zeta \ge 0$, coefficient of the $\operatorname{lse}^2$ penalty.
      logit_softcap: $c > 0$ or None; caps the logits at $\pm c$ with $\tanh$.
        The three float options may be traced (a schedule compiles once) and
        get exact gradients.
      where: boolean mask broadcastable to `hidden.shape[:-1]`; False excludes
        an example like `ignore_index`.
      reduction: `"mean"`, `"sum"` or `"none"` (per example, shape
        `hidden.shape[:-1]`, 0 where excluded).
      denominator: replaces $S$ in `"mean"`.
      axis_name: inside `jax.shard_map` with the kernel (and bias) sharded over
        the vocabulary along this mesh axis: each device streams its own
        columns, the per-token statistics are combined with one `pmax` and one
        `psum`, and d hidden with one `psum` in the backward. Outside
        `shard_map`, a kernel sharded over the vocabulary on an `Explicit`
        mesh takes this path automatically; on an `Auto` mesh the
        partitioner gathers the kernel (the logits never exist either way).
      example_weights: $v$, floating, broadcastable to `hidden.shape[:-1]`:
        multiplies each example's loss and its share of $S$ (and its rows of
        $\partial L/\partial z$, so every gradient, the kernel's included, is
        weighted); 0 is `where=False` (exactly 0 and a zero gradient). Should
        be non-negative (not checked, not clipped). Their gradient is exact.

    Returns:
      A scalar, or per-example losses for `"none"`; float32 for half-precision
      inputs.

    Raises:
      TypeError: non-floating `hidden`, `kernel`, `bias` or `example_weights`,
        non-integer `labels`, a non-boolean `where`.
      ValueError: mismatched shapes, `chunk_size < 1`, an unknown `reduction`,
        a concrete `label_smoothing` outside [0, 1], negative `z_loss` or
        non-positive `logit_softcap`.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import jaxce
      >>> hidden = jnp.array([[1.0, 0.0], [0.5, -1.0], [0.0, 2.0]])
      >>> kernel = jnp.array([[1.0, -1.0, 0.5, 0.0, 2.0], [0.0, 1.0, -0.5, 1.0, 0.0]])
      >>> labels = jnp.array([4, 2, 1])
      >>> fused = jaxce.linear_softmax_cross_entropy(hidden, kernel, labels, chunk_size=2)
      >>> with jnp.printoptions(precision=4):
      ...     print(jnp.stack([fused, jaxce.softmax_cross_entropy(hidden @ kernel, labels)]))
      [0.8743 0.8743]
    """
    hidden, kernel, bias = _validate(hidden, kernel, bias)
    classes = _labels.parse(
        hidden, labels, hidden.ndim - 1, allow_probs=False, logits_name="hidden"
    )
    assert classes.classes is not None
    example_shape = hidden.shape[:-1]
    # Inside shard_map the kernel holds this shard's columns; labels are global.
    label_range = kernel.shape[1] * (1 if axis_name is None else lax.axis_size(axis_name))
    v = _labels.per_example_weights(example_weights, example_shape)
    mask, bad = _labels.example_mask(
        classes.classes,
        example_shape,
        label_range,
        ignore_index=ignore_index,
        where=where,
        weights=v,
    )
    n = int(np.prod(example_shape))
    plan, mesh = _plan(hidden, kernel, bias, n, chunk_size, axis_name)
    inputs = _Inputs(
        hidden.reshape(n, hidden.shape[-1]),
        kernel,
        bias,
        classes.classes.reshape(n),
        label_smoothing,
        z_loss,
        logit_softcap,
    )
    flat_mask, flat_bad = mask.reshape(n), None if bad is None else bad.reshape(n)
    flat_v = None if v is None else jnp.broadcast_to(v, example_shape).reshape(n)
    if mesh is None:
        losses = _linear_ce(plan, flat_mask, flat_bad, inputs, flat_v)
    else:
        losses = _per_shard(plan, mesh, flat_mask, flat_bad, inputs, flat_v)
    losses = losses.reshape(example_shape)
    norm = _labels.weighted_count(mask, v, losses.dtype)
    return reduce_loss(losses, norm, reduction, denominator)
