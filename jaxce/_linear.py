"""Fused linear head and softmax cross-entropy that never materialises the N x V logits.

The forward streams the vocabulary in chunks of the kernel (`_linear_chunks`):
each step computes one `[N, chunk]` block of logits, folds it into a running
logsumexp (`logaddexp` of the chunk's logsumexp), the target logit, its class
weight and the smoothing sums, and drops it. Only per-token numbers are kept
for the backward, which recomputes each block of logits once more and turns it
straight into its share of d hidden, d kernel, d bias and d weights.

The public function validates, plans (chunk, dtypes, layout, the mesh axes of
the vocabulary) and dispatches (one loop, or one loop per vocabulary shard).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from . import _checks, _labels, _linear_chunks, _numerics, _sharding, _stats
from ._linear_chunks import Plan, as_bits, from_bits, is_target
from ._options import entry_point
from ._reduce import reduce_loss
from ._rule import Summed, per_example_rule


class _Inputs(NamedTuple):
    hidden: jax.Array  # [N, D]
    kernel: jax.Array  # [D, V] or [V, D]
    bias: jax.Array | None  # [V]
    weights: jax.Array | None  # [V], per class
    classes: jax.Array  # [N]
    keep: jax.Array | None  # [N], the examples that count, when an option can exclude one
    present: jax.Array | None  # [N], the examples present, with example weights
    smoothing: Any
    z_loss: Any
    softcap: Any


# How `_linear_chunks.per_shard` splits each `_Inputs` field over a vocabulary-sharded mesh.
_KINDS = ("rows", "kernel", "classes", "classes", "rows", "rows", "rows", "whole", "whole", "whole")


class _Residuals(NamedTuple):
    lse: jax.Array  # [N, 1] after capping, over the whole vocabulary
    target: jax.Array  # the target's logit
    w_y: Any  # the target's class weight (class weights only)
    num_finite: Any  # K', the classes with a finite logit (smoothing only)
    mean_logit: Any  # (1 / K') sum_c w_c z_c over those classes (smoothing only)
    mean_weight: Any  # (1 / K') sum_c w_c over those classes (smoothing with weights)


def _linear_ce_fwd(plan: Plan, inp: _Inputs) -> tuple[Any, _Residuals]:
    dtype, eps, w = plan.compute_dtype, inp.smoothing, inp.weights
    n = inp.hidden.shape[0]
    h = _linear_chunks.forward_hidden(plan, inp.hidden, inp.keep, inp.present)

    def body(step, carry):
        (lse, target, w_y, z_sum, count, w_sum), best = carry
        block = _linear_chunks.chunk(plan, h, inp.kernel, inp.bias, inp.softcap, step)
        z, fresh = block.z, block.fresh
        z_new = jnp.where(fresh, z, -jnp.inf)
        lse = jnp.logaddexp(lse, jax.nn.logsumexp(z_new, axis=1))
        target = target + _linear_chunks.at_target(inp.classes, block, z)
        w_c = block.classes(w)
        if w_c is not None:
            w_y = w_y + _linear_chunks.at_target(inp.classes, block, w_c)
        if eps is not None:
            finite = z_new > -jnp.inf
            z_sum = z_sum + jnp.sum(jnp.where(finite, z if w_c is None else w_c * z, 0), axis=1)
            count = count + jnp.sum(finite, axis=1, dtype=dtype)
            if w_c is not None:
                w_sum = w_sum + jnp.sum(jnp.where(finite, w_c, 0), axis=1)
        if best is not None:
            best = _stats.running_argmax(best, z_new, block.cols[0, 0])
        return (lse, target, w_y, z_sum, count, w_sum), best

    init = (jnp.full((n,), -jnp.inf, dtype),) + tuple(jnp.zeros((n,), dtype) for _ in range(5))
    best = None
    if plan.stats:
        best = _linear_chunks.varying(
            (jnp.full((n,), -jnp.inf, dtype), jnp.zeros((n,), jnp.int32)), *inp
        )
    steps = _linear_chunks.num_steps(plan, inp.kernel)
    carry = (_linear_chunks.varying(init, *inp), best)
    stats, best = lax.fori_loop(0, steps, body, carry)
    predicted = None if best is None else best[1]
    if plan.axis_name is not None:
        tops = () if best is None else (best[0],)
        lse_, *sums = _sharding.combine_shards(stats[0], stats[1:], plan.axis_name, tops)
        if best is not None:
            predicted = _stats.shard_argmax(best[0], best[1], sums.pop(), plan.axis_name)
        stats = (lse_, *sums)
    lse, target, w_y, z_sum, count, w_sum = (x[:, None] for x in stats)
    if w is None:
        w_y = w_sum = None
    mean = mean_weight = count_ = None
    if eps is not None:
        mean, count_ = z_sum / count, count
        mean_weight = None if w is None else w_sum / count
    loss = _numerics.token_cross_entropy(lse, target, eps, mean, inp.z_loss, w_y, mean_weight)
    residuals = _Residuals(lse, target, w_y, count_, mean, mean_weight)
    if predicted is None:
        return loss, residuals
    return (loss, lse, predicted[:, None]), residuals


def _linear_ce_bwd(plan: Plan, inp: _Inputs, res: _Residuals, g: jax.Array) -> tuple[Any, ...]:
    dtype, eps, cap, w = plan.compute_dtype, inp.smoothing, inp.softcap, inp.weights
    g, g_lse = (g[0], g[1]) if plan.stats else (g, None)
    h = _linear_chunks.counted_hidden(plan, inp.hidden, inp.keep)
    w_y: Any = 1 if res.w_y is None else res.w_y
    # d loss / d z_c = a P_c - t_c, with t = (1 - eps) w_y Y + eps / K' w_c [z_c finite]
    # and a = sum_c t_c (+ 2 zeta lse).
    a: Any = w_y
    if eps is not None:
        a = (1 - eps) * w_y + eps * (1 if res.mean_weight is None else res.mean_weight)
    if inp.z_loss is not None:
        a = a + 2 * inp.z_loss * res.lse
    nll = res.lse - res.target

    def body(step, carry):
        grads, (dw, d_cap) = carry
        block = _linear_chunks.chunk(plan, h, inp.kernel, inp.bias, cap, step)
        z, w_c = block.z, block.classes(w)
        onehot = is_target(inp.classes, block)
        t = jnp.where(onehot, w_y if eps is None else (1 - eps) * w_y, 0)
        if eps is not None:
            t = t + jnp.where(z > -jnp.inf, eps / res.num_finite * (1 if w_c is None else w_c), 0)
        probs = jnp.exp(z - res.lse)
        dz = g * (a * probs - t)
        if g_lse is not None:
            dz = dz + g_lse * probs  # d lse / d z = P
        dz = _linear_chunks.counted_blocks(dz, inp.keep, inp.present)
        if w is not None and dw is not None:
            # d loss / d w_c = (1 - eps) nll [c = y] + eps / K' (lse - z_c) [z_c finite]
            dw_c = jnp.where(onehot, nll if eps is None else (1 - eps) * nll, 0)
            if eps is not None:
                dw_c = dw_c + jnp.where(z > -jnp.inf, eps / res.num_finite * (res.lse - z), 0)
            dw_c = _linear_chunks.counted_blocks(g * dw_c, inp.keep, inp.present)
            dw = _linear_chunks.per_class_update(dw, jnp.sum(dw_c, axis=0), block, w.dtype)
        if cap is not None:
            dz, d_cap_c = _numerics.through_softcap(dz, block.raw, z, cap)
            d_cap = d_cap + jnp.sum(jnp.where(block.fresh, d_cap_c, 0), axis=1)
        grads = _linear_chunks.backprop(plan, h, dz, block, grads, inp.kernel, inp.bias)
        return grads, (dw, d_cap)

    rest = (
        None if w is None else jnp.zeros_like(as_bits(w)),
        jnp.zeros(inp.hidden.shape[:1], dtype),
    )
    (dh, dk, db), (dw, d_cap) = _linear_chunks.backward_loop(
        plan, body, rest, inp.hidden, inp.kernel, inp.bias, (*inp, g, res.lse)
    )
    dw = None if dw is None or w is None else from_bits(dw, w.dtype)
    d_eps = None
    if eps is not None:
        smooth = (
            res.lse - res.mean_logit if w is None else res.mean_weight * res.lse - res.mean_logit
        )
        d_eps = g * (smooth - w_y * nll)
    d_zeta = None if inp.z_loss is None else g * res.lse**2
    d_cap = None if cap is None else d_cap[:, None]
    return dh, Summed(dk), Summed(db), Summed(dw), None, None, None, d_eps, d_zeta, d_cap


_linear_ce = per_example_rule(_linear_ce_fwd, _linear_ce_bwd)


def _target_weights(weights, classes, axis_name):
    """`w[y]` for each example; inside `shard_map` the weights are this shard's classes."""
    if axis_name is None:
        return _numerics.class_value(weights, classes)
    offset = lax.axis_index(axis_name) * weights.shape[0]
    return lax.psum(_numerics.class_value(weights, classes - offset), axis_name)


@entry_point(
    static=(
        "chunk_size",
        "ignore_index",
        "reduction",
        "axis_name",
        "kernel_layout",
        "return_stats",
    ),
    hyperparameters={
        "label_smoothing": _checks.UNIT,
        "z_loss": _checks.NON_NEGATIVE,
        "logit_softcap": _checks.POSITIVE._replace(optional=True),
    },
    checks={
        "chunk_size": _linear_chunks.check_chunk_size,
        "kernel_layout": _linear_chunks.check_layout,
        "return_stats": _checks.flag,
    },
)
def linear_softmax_cross_entropy(
    hidden: ArrayLike,
    kernel: ArrayLike,
    labels: ArrayLike,
    *,
    bias: ArrayLike | None = None,
    weights: ArrayLike | None = None,
    kernel_layout: str = "DV",
    chunk_size: int | None = None,
    ignore_index: int | None = None,
    label_smoothing: ArrayLike = 0.0,
    z_loss: ArrayLike = 0.0,
    logit_softcap: ArrayLike | None = None,
    where: ArrayLike | None = None,
    reduction: str = "mean",
    denominator: ArrayLike | None = None,
    axis_name: str | tuple[str, ...] | None = None,
    return_stats: bool = False,
    example_weights: ArrayLike | None = None,
    autodiff: str = "reverse",
) -> jax.Array | tuple[jax.Array, _stats.CrossEntropyStats]:
    r"""Softmax cross-entropy of a linear head, without materialising the logits.

    Equals `softmax_cross_entropy(hidden @ kernel + bias, labels, ...)`, with
    the logits optionally soft-capped first,
    $z \mapsto c \tanh(z / c)$ (Gemma 2), but streams the vocabulary in chunks:
    with $z_i = \operatorname{cap}(h_i W + b)$ and class weights $w$ (1 by
    default) the `"mean"` loss is

    $$
    L = \frac{1}{S}\sum_i m_i v_i \Big[(1-\varepsilon)\, w_{y_i}
        \big(\operatorname{lse}(z_i) - z_{i y_i}\big)
        + \frac{\varepsilon}{K_i}\sum_{c} w_c \big(\operatorname{lse}(z_i) - z_{ic}\big)
        + \zeta \operatorname{lse}(z_i)^2\Big],
    \qquad S = \sum_i m_i v_i w_{y_i},
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
    mode only (see `autodiff`).

    Args:
      hidden: floating array `(..., D)`; the leading dimensions are examples.
      kernel: floating array `(D, V)` (the layout of Flax `Dense`/`nnx.Linear`),
        or `(V, D)` with `kernel_layout="VD"`.
      labels: integer class indices in `[0, V)`, shape `hidden.shape[:-1]`.
      bias: optional floating array `(V,)`; a `-inf` entry masks a class.
      weights: optional per-class weights `(V,)`, as in
        [`softmax_cross_entropy`][jaxce.softmax_cross_entropy] (PyTorch's
        `weight`), with an exact gradient.
      kernel_layout: `"DV"` for a `(D, V)` kernel, `"VD"` for a `(V, D)` one
        (a tied embedding table, `logits = hidden @ table.T`), read as it is:
        no transposed copy is made.
      chunk_size: vocabulary columns per step. None picks about $2^{20}/N$
        (4 MiB of float32 logits per step) when the default backend is the
        CPU and $2^{23}/N$ (32 MiB) on an accelerator, at least 128.
      ignore_index: integer label whose examples are excluded.
      label_smoothing: $\varepsilon \in [0, 1]$.
      z_loss: $\zeta \ge 0$, coefficient of the $\operatorname{lse}^2$ penalty.
      logit_softcap: $c > 0$ or None; caps the logits at $\pm c$ with $\tanh$.
        The three float options may be traced (a schedule compiles once) and
        get exact gradients.
      where: boolean mask broadcastable to `hidden.shape[:-1]`; False excludes
        an example like `ignore_index`. An excluded example's hidden state may
        hold anything (inf or NaN from a padding token): it is read as 0, so
        no gradient sees it. With `where`, `ignore_index` or
        `example_weights` the program holds that masked copy of `hidden`.
      reduction: `"mean"`, `"sum"` or `"none"` (per example, shape
        `hidden.shape[:-1]`, 0 where excluded).
      denominator: replaces $S$ in `"mean"`.
      return_stats: also return a
        [`CrossEntropyStats`][jaxce.CrossEntropyStats] of per-example arrays:
        the logsumexp (differentiable), the argmax class (found chunk by
        chunk, ties to the lowest index) and whether it is the label. They
        come from the same chunk loop: no more passes over the vocabulary,
        and on vocabulary shards one more `pmin` of $N$ indices.
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
        weighted); 0 is `where=False` (exactly 0; its derivative is its loss). Should
        be non-negative (not checked, not clipped). Their gradient is exact.
      autodiff: `"reverse"` only: the head computes each chunk's logits again
        in its backward and has no forward-mode rule; `"forward"` raises.

    Returns:
      A scalar, or per-example losses for `"none"`; float32 for half-precision
      inputs. With `return_stats`, the pair `(loss, stats)`.

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
    _linear_chunks.reverse_only(autodiff)
    hidden, kernel, bias = _linear_chunks.validate(hidden, kernel, bias, kernel_layout)
    local_classes = kernel.shape[kernel_layout.index("V")]
    weights = _checks.class_vector("weights", weights, local_classes)
    example_shape = hidden.shape[:-1]
    v = _labels.per_example_weights(example_weights, example_shape)
    classes, mask, bad = _linear_chunks.head_labels(
        hidden,
        labels,
        local_classes,
        axis_name=axis_name,
        ignore_index=ignore_index,
        where=where,
        example_weights=v,
    )
    n = int(np.prod(example_shape))
    plan, mesh = _linear_chunks.make_plan(
        hidden,
        kernel,
        (bias, weights),
        num_examples=n,
        chunk_size=chunk_size,
        layout=kernel_layout,
        axis_name=axis_name,
        stats=return_stats,
    )
    flat = classes.reshape(n)
    rows = _linear_chunks.flat_rows(mask, bad, v, where=where, ignore_index=ignore_index)
    inputs = _Inputs(
        hidden.reshape(n, hidden.shape[-1]),
        kernel,
        bias,
        weights,
        flat,
        rows.keep,
        rows.present,
        label_smoothing,
        z_loss,
        logit_softcap,
    )
    if mesh is None:
        out = _linear_ce(plan, rows.mask, rows.bad, inputs, rows.weights)
    else:
        out = _linear_chunks.per_shard(
            _linear_ce, plan, mesh, (rows.mask, rows.bad), inputs, _KINDS, rows.weights
        )
    losses, lse, predicted = out if return_stats else (out, None, None)
    losses = losses.reshape(example_shape)
    norm = _labels.weighted_count(mask, v, losses.dtype)
    if weights is not None:
        w_y = _target_weights(weights.astype(losses.dtype), flat, axis_name)
        norm = norm * w_y.reshape(example_shape)
    loss = reduce_loss(losses, norm, reduction, denominator)
    if lse is None or predicted is None:
        return loss
    lse, predicted = lse.reshape(example_shape), predicted.reshape(example_shape)
    return loss, _stats.finish(lse, predicted, classes, _labels.kept(mask, v))
