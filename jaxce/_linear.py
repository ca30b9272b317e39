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
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import PartitionSpec as P
from jax.typing import ArrayLike

from . import _checks, _labels
from ._reduce import reduce_loss

# Logits per chunk when `chunk_size` is None: 4 MiB of float32 per block.
_AUTO_CHUNK_ELEMENTS = 1 << 20


class _Config(NamedTuple):
    chunk: int
    smoothing: float
    z_loss: float
    softcap: float | None
    dot_dtype: Any
    compute_dtype: Any
    kernel_dtype: Any
    bias_dtype: Any
    axis_name: Any = None


def _num_steps(num_classes: int, chunk: int) -> int:
    return -(-num_classes // chunk)


def _dot(a: jax.Array, b: jax.Array, contract: tuple[int, int], dtype: Any) -> jax.Array:
    dims = (((contract[0],), (contract[1],)), ((), ()))
    return lax.dot_general(a, b, dims, preferred_element_type=dtype)


def _as_bits(x: jax.Array) -> jax.Array:
    """Half-precision floats viewed as uint16 (a bitcast, no copy); others unchanged.

    XLA's CPU backend has no half-precision dynamic-slice or
    dynamic-update-slice: it converts the whole operand to float32 around them
    and hoists that conversion out of the loop, a float32 copy of the whole
    kernel. Slicing the bits instead keeps every copy chunk-sized.
    """
    return lax.bitcast_convert_type(x, jnp.uint16) if x.dtype.itemsize == 2 else x


def _from_bits(x: jax.Array, dtype: Any) -> jax.Array:
    return lax.bitcast_convert_type(x, dtype) if x.dtype != dtype else x


def _chunk_logits(cfg, h, kernel, bias, step):
    """Logits of chunk `step`, their class indices and which are new to this chunk.

    `kernel` and `bias` are in their `_as_bits` form.
    """
    c, num_classes = cfg.chunk, kernel.shape[1]
    start = jnp.minimum(step * c, num_classes - c)
    # Sliced, then converted, inside the loop body: the conversion depends on the
    # step, so XLA cannot hoist a converted copy of the whole kernel out of the loop.
    k = _from_bits(lax.dynamic_slice_in_dim(kernel, start, c, axis=1), cfg.kernel_dtype)
    k = k.astype(cfg.dot_dtype)
    z = _dot(h, k, (1, 0), cfg.compute_dtype)
    if bias is not None:
        b = _from_bits(lax.dynamic_slice_in_dim(bias, start, c), cfg.bias_dtype)
        z = z + b.astype(cfg.compute_dtype)[None, :]
    if cfg.softcap is not None:
        z = cfg.softcap * jnp.tanh(z / cfg.softcap)
    local = start + lax.iota(start.dtype, c)
    fresh = local >= step * c
    cols = local
    if cfg.axis_name is not None:
        cols = local + lax.axis_index(cfg.axis_name).astype(start.dtype) * num_classes
    return z, k, start, cols[None, :], fresh[None, :]


def _target(classes, cols):
    return cols == classes[:, None].astype(cols.dtype)


def _vma(x: jax.Array) -> frozenset:
    """The manual mesh axes `x` varies over (inside `shard_map`; empty elsewhere)."""
    aval = jax.typeof(x)
    manual = getattr(aval, "manual_axis_type", None)
    return frozenset(manual.varying if manual is not None else getattr(aval, "vma", ()))


def _varying_like(x: jax.Array, *refs: Any) -> jax.Array:
    """Marks a loop's initial carry as varying over the manual axes its inputs vary over."""
    missing = frozenset().union(*(_vma(r) for r in refs if r is not None)) - _vma(x)
    return lax.pcast(x, tuple(sorted(missing)), to="varying") if missing else x


def _sum_to(ct: jax.Array | None, primal: jax.Array | None) -> jax.Array | None:
    """Sums a cotangent over the manual axes its primal is replicated along."""
    if ct is None or primal is None:
        return ct
    extra = _vma(ct) - _vma(primal)
    return lax.psum(ct, tuple(sorted(extra))) if extra else ct


def _combine_shards(lse, sums, axis_name):
    """Global logsumexp and sums from per-shard ones: one `pmax`, one `psum` of O(N)."""
    top = lax.pmax(lse, axis_name)
    top = jnp.where(jnp.isfinite(top), top, 0)
    total = lax.psum(jnp.stack([jnp.exp(lse - top), *sums]), axis_name)
    return (top + jnp.log(total[0]), *total[1:])


def _token_loss(cfg, lse, z_y, z_sum, count, mask, bad):
    """Per-token loss from its logsumexp, target logit and smoothing sums (0 where masked)."""
    eps = cfg.smoothing
    loss = (1 - eps) * (lse - z_y)
    if eps:
        loss = loss + eps * (lse - z_sum / count)
    if cfg.z_loss:
        loss = loss + cfg.z_loss * lse**2
    return jnp.where(bad, jnp.nan, jnp.where(mask, loss, 0))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _linear_ce(cfg, hidden, kernel, bias, classes, mask, bad):
    return _linear_ce_fwd(cfg, hidden, kernel, bias, classes, mask, bad)[0]


def _linear_ce_fwd(cfg, hidden, kernel, bias, classes, mask, bad):
    dtype, eps = cfg.compute_dtype, cfg.smoothing
    n = hidden.shape[0]
    h = hidden.astype(cfg.dot_dtype)
    kernel_bits = _as_bits(kernel)
    bias_bits = None if bias is None else _as_bits(bias)

    def body(step, carry):
        lse, z_y, z_sum, count = carry
        z, _, _, cols, fresh = _chunk_logits(cfg, h, kernel_bits, bias_bits, step)
        z_new = jnp.where(fresh, z, -jnp.inf)
        lse = jnp.logaddexp(lse, jax.nn.logsumexp(z_new, axis=1))
        z_y = z_y + jnp.sum(jnp.where(_target(classes, cols) & fresh, z, 0), axis=1)
        if eps:
            finite = z_new > -jnp.inf
            z_sum = z_sum + jnp.sum(jnp.where(finite, z, 0), axis=1)
            count = count + jnp.sum(finite, axis=1, dtype=dtype)
        return lse, z_y, z_sum, count

    init = (jnp.full((n,), -jnp.inf, dtype),) + tuple(jnp.zeros((n,), dtype) for _ in range(3))
    init = tuple(_varying_like(x, hidden, kernel, bias, classes) for x in init)
    steps = _num_steps(kernel.shape[1], cfg.chunk)
    lse, z_y, z_sum, count = lax.fori_loop(0, steps, body, init)
    if cfg.axis_name is not None:
        lse, z_y, z_sum, count = _combine_shards(lse, (z_y, z_sum, count), cfg.axis_name)
    loss = _token_loss(cfg, lse, z_y, z_sum, count, mask, bad)
    norm = mask.astype(dtype)
    return (loss, norm), (hidden, kernel, bias, classes, mask, bad, lse, count)


def _linear_ce_bwd(cfg, res, cts):
    hidden, kernel, bias, classes, mask, bad, lse, count = res
    dtype, eps = cfg.compute_dtype, cfg.smoothing
    h = hidden.astype(cfg.dot_dtype)
    g = jnp.where(bad, jnp.nan, jnp.where(mask, cts[0], 0))[:, None]
    # d loss_i / d z_ic = a_i P_ic - (1 - eps) Y_ic - eps / K'_i [z_ic finite]
    a = (1 + 2 * cfg.z_loss * lse if cfg.z_loss else jnp.ones_like(lse))[:, None]
    lse = lse[:, None]
    kernel_bits = _as_bits(kernel)
    bias_bits = None if bias is None else _as_bits(bias)

    def body(step, carry):
        dh, dk, db = carry
        z, k, start, cols, fresh = _chunk_logits(cfg, h, kernel_bits, bias_bits, step)
        target = jnp.where(_target(classes, cols), 1 - eps, 0)
        if eps:
            target = target + jnp.where(z > -jnp.inf, eps / count[:, None], 0)
        dz = g * (a * jnp.exp(z - lse) - target)
        if cfg.softcap is not None:
            dz = dz * (1 - jnp.square(z / cfg.softcap))
        # Columns shared with the previous chunk get the same values again in dk
        # and db, but must count once in dh.
        dz_dot = dz.astype(cfg.dot_dtype)
        dk_chunk = _as_bits(_dot(h, dz_dot, (0, 0), dtype).astype(kernel.dtype))
        dk = lax.dynamic_update_slice_in_dim(dk, dk_chunk, start, axis=1)
        if db is not None:
            db_chunk = _as_bits(jnp.sum(dz, axis=0).astype(bias.dtype))
            db = lax.dynamic_update_slice_in_dim(db, db_chunk, start, axis=0)
        dh = dh + _dot(jnp.where(fresh, dz_dot, 0), k, (1, 1), dtype)
        return dh, dk, db

    init = (
        jnp.zeros(hidden.shape, dtype),
        jnp.zeros_like(kernel_bits),
        None if bias_bits is None else jnp.zeros_like(bias_bits),
    )
    init = tuple(
        None if x is None else _varying_like(x, hidden, kernel, bias, classes, mask, bad, lse)
        for x in init
    )
    steps = _num_steps(kernel.shape[1], cfg.chunk)
    dh, dk, db = lax.fori_loop(0, steps, body, init)
    dk = _sum_to(_from_bits(dk, kernel.dtype), kernel)
    db = None if db is None else _sum_to(_from_bits(db, bias.dtype), bias)
    return _sum_to(dh.astype(hidden.dtype), hidden), dk, db, None, None, None


_linear_ce.defvjp(_linear_ce_fwd, _linear_ce_bwd)


def _chunk_size(chunk_size: Any, num_examples: int, num_classes: int) -> int:
    if chunk_size is None:
        return min(max(128, _AUTO_CHUNK_ELEMENTS // max(num_examples, 1)), num_classes)
    return min(_checks.positive_integer("chunk_size", chunk_size), num_classes)


def _explicit_vocab_axes(kernel: jax.Array) -> tuple[Any, tuple[str, ...] | None]:
    """The mesh and axes sharding the kernel's vocabulary, on an Explicit mesh."""
    sharding = jax.typeof(kernel).sharding
    spec = getattr(sharding, "spec", None)
    if spec is None or len(spec) < 2 or spec[1] is None:
        return None, None
    axes = spec[1] if isinstance(spec[1], tuple) else (spec[1],)
    return sharding.mesh, axes


def _vocab_parallel(cfg, mesh, vocab_axes, flat, kernel, bias):
    """Runs the chunk loop per vocabulary shard with `shard_map`."""
    hidden, classes, mask, bad = flat
    rows = jax.typeof(hidden).sharding.spec[0]
    if rows is not None and set(rows if isinstance(rows, tuple) else (rows,)) & set(vocab_axes):
        rows = None
    args = (hidden, kernel, bias, classes, mask, bad)
    specs = (P(rows, None), P(None, vocab_axes), P(vocab_axes), P(rows), P(rows), P(rows))
    if bias is None:
        args, specs = args[:2] + args[3:], specs[:2] + specs[3:]

    def local(hidden, kernel, *rest):
        bias, rest = (None, rest) if len(rest) == 3 else (rest[0], rest[1:])
        return _linear_ce(cfg, hidden, kernel, bias, *rest)

    args = tuple(jax.reshard(x, spec) for x, spec in zip(args, specs, strict=True))
    run = jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=(P(rows), P(rows)))
    return run(*args)


_STATIC = (
    "chunk_size",
    "ignore_index",
    "label_smoothing",
    "z_loss",
    "logit_softcap",
    "reduction",
    "axis_name",
)


@functools.partial(jax.jit, static_argnames=_STATIC)
def linear_softmax_cross_entropy(
    hidden: ArrayLike,
    kernel: ArrayLike,
    labels: ArrayLike,
    *,
    bias: ArrayLike | None = None,
    chunk_size: int | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    logit_softcap: float | None = None,
    where: ArrayLike | None = None,
    reduction: str = "mean",
    denominator: ArrayLike | None = None,
    axis_name: str | tuple[str, ...] | None = None,
) -> jax.Array:
    r"""Softmax cross-entropy of a linear head, without materialising the logits.

    Equals `softmax_cross_entropy(hidden @ kernel + bias, labels, ...)`, with
    the logits optionally soft-capped first,
    $z \mapsto c \tanh(z / c)$ (Gemma 2), but streams the vocabulary in chunks:
    with $z_i = \operatorname{cap}(h_i W + b)$ the `"mean"` loss is

    $$
    L = \frac{1}{S}\sum_i m_i \Big[(1-\varepsilon)\big(\operatorname{lse}(z_i) - z_{i y_i}\big)
        + \frac{\varepsilon}{K_i}\sum_{c} \big(\operatorname{lse}(z_i) - z_{ic}\big)
        + \zeta \operatorname{lse}(z_i)^2\Big],
    \qquad S = \sum_i m_i,
    $$

    the smoothing sum running over the $K_i$ classes with a finite logit. The
    forward keeps a running `logaddexp` over the chunks and saves only
    per-token numbers; the backward (a `jax.custom_vjp`) recomputes each
    chunk's logits and accumulates $\partial L/\partial h$,
    $\partial L/\partial W$ and $\partial L/\partial b$ from
    $\partial L/\partial z = m_i (P_i - Y_i)/S$ (smoothing and z-loss
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

    Returns:
      A scalar, or per-example losses for `"none"`; float32 for half-precision
      inputs.

    Raises:
      TypeError: non-floating `hidden`, `kernel` or `bias`, non-integer
        `labels`, a non-boolean `where`.
      ValueError: mismatched shapes, `chunk_size < 1`, an unknown `reduction`,
        `label_smoothing` outside [0, 1], negative `z_loss`, non-positive
        `logit_softcap`.

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
    hidden = _checks.floating("hidden", hidden)
    kernel = _checks.floating("kernel", kernel)
    bias = _checks.optional_floating("bias", bias)
    if hidden.ndim < 1:
        raise ValueError("hidden must have at least one dimension (the features); got a scalar.")
    if kernel.ndim != 2 or kernel.shape[0] != hidden.shape[-1]:
        raise ValueError(
            f"kernel must have shape ({hidden.shape[-1]}, V) (hidden features by classes); "
            f"got {kernel.shape}."
        )
    num_classes = kernel.shape[1]
    if num_classes < 1:
        raise ValueError("kernel must have at least one class column; got V = 0.")
    bias = _checks.class_vector("bias", bias, num_classes)
    eps = _checks.unit_interval("label_smoothing", label_smoothing)
    zeta = _checks.non_negative("z_loss", z_loss)
    softcap = None
    if logit_softcap is not None:
        softcap = _checks.static_float("logit_softcap", logit_softcap)
        if softcap <= 0:
            raise ValueError(f"logit_softcap must be > 0 or None; got {softcap}.")
    _checks.reduction(reduction)
    ignore_index = _checks.integer("ignore_index", ignore_index, optional=True)
    axis = hidden.ndim - 1
    classes = _labels.parse(hidden, labels, axis, allow_probs=False, logits_name="hidden").classes
    assert classes is not None
    example_shape = hidden.shape[:-1]
    # Inside shard_map the kernel holds this shard's columns; labels are global.
    label_range = num_classes * (1 if axis_name is None else lax.axis_size(axis_name))
    mask, bad = _labels.example_mask(
        classes, example_shape, label_range, ignore_index=ignore_index, where=where
    )
    assert bad is not None
    num_examples = int(np.prod(example_shape))
    mesh, vocab_axes = _explicit_vocab_axes(kernel) if axis_name is None else (None, None)
    local_classes = num_classes
    if vocab_axes is not None:
        assert mesh is not None
        local_classes //= int(np.prod([mesh.shape[a] for a in vocab_axes]))
    dtypes = [hidden.dtype, kernel.dtype] + ([] if bias is None else [bias.dtype])
    dtype = _checks.compute_dtype(*dtypes)
    dot_dtype = hidden.dtype if hidden.dtype == kernel.dtype else dtype
    cfg = _Config(
        chunk=_chunk_size(chunk_size, num_examples, local_classes),
        smoothing=eps,
        z_loss=zeta,
        softcap=softcap,
        dot_dtype=dot_dtype,
        compute_dtype=dtype,
        kernel_dtype=kernel.dtype,
        bias_dtype=None if bias is None else bias.dtype,
        axis_name=axis_name if vocab_axes is None else vocab_axes,
    )
    flat = (
        hidden.reshape(num_examples, hidden.shape[-1]),
        classes.reshape(num_examples),
        mask.reshape(num_examples),
        bad.reshape(num_examples),
    )
    if vocab_axes is None:
        losses, norm = _linear_ce(cfg, flat[0], kernel, bias, *flat[1:])
    else:
        losses, norm = _vocab_parallel(cfg, mesh, vocab_axes, flat, kernel, bias)
    losses = losses.reshape(example_shape)
    return reduce_loss(losses, norm.reshape(example_shape), reduction, denominator)
