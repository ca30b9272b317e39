"""Fused linear head and softmax cross-entropy that never materialises the N x V logits.

The loss is the streamed softmax cross-entropy (`_stream`) of one source of
blocks: the chunks `cap(h W + b)` of the kernel (`_linear_chunks`). Each step
of the forward computes one `[N, chunk]` block of logits, folds it into the
running softmax statistics, the target logit, its class weight and the
smoothing sums, and drops it; only per-token numbers are kept for the
backward, which recomputes each block once more and turns its logit cotangent
straight into its share of d hidden, d kernel, d bias and d weights.

The public function validates, plans (chunk, dtypes, layout, the mesh axes of
the vocabulary) and dispatches (one loop, or one loop per vocabulary shard).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from . import _checks, _labels, _linear_chunks, _stats, _stream
from ._linear_chunks import Plan, as_bits, from_bits
from ._options import entry_point
from ._reduce import reduce_loss
from ._rule import Summed


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


def _chunks(plan: Plan, inp: _Inputs, step: Callable, state: Any) -> Any:
    """Folds in each chunk `cap(h W + b)` of the logits, from every present example's `h`."""
    h = _linear_chunks.forward_hidden(plan, inp.hidden, inp.keep, inp.present)

    def body(i, state):
        return step(state, _linear_chunks.chunk(plan, h, inp.kernel, inp.bias, inp.softcap, i))

    steps = _linear_chunks.num_steps(plan, inp.kernel)
    return lax.fori_loop(0, steps, body, _linear_chunks.varying(state, *inp))


def _chunk_grads(
    plan: Plan, inp: _Inputs, grads: Callable, rest: Any, refs: tuple
) -> tuple[dict[str, Any], Any]:
    """d hidden, d kernel, d bias and d weights from each chunk's logit cotangents."""
    h = _linear_chunks.counted_hidden(plan, inp.hidden, inp.keep)
    w = inp.weights

    def body(i, carry):
        acc, (dw, rest) = carry
        block = _linear_chunks.chunk(plan, h, inp.kernel, inp.bias, inp.softcap, i)
        dz, dw_c, rest = grads(block, rest)
        dz = _linear_chunks.counted_blocks(dz, inp.keep, inp.present)
        if w is not None and dw is not None:
            dw_c = jnp.sum(_linear_chunks.counted_blocks(dw_c, inp.keep, inp.present), axis=0)
            dw = _linear_chunks.per_class_update(dw, dw_c, block, w.dtype)
        acc = _linear_chunks.backprop(plan, h, dz, block, acc, inp.kernel, inp.bias)
        return acc, (dw, rest)

    dw = None if w is None else jnp.zeros_like(as_bits(w))
    (dh, dk, db), (dw, rest) = _linear_chunks.backward_loop(
        plan, body, (dw, rest), inp.hidden, inp.kernel, inp.bias, (*inp, *refs)
    )
    dw = None if dw is None or w is None else from_bits(dw, w.dtype)
    return {"hidden": dh, "kernel": Summed(dk), "bias": Summed(db), "weights": Summed(dw)}, rest


_linear_ce = _stream.cross_entropy_rule(_chunks, _chunk_grads)


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
    off={"label_smoothing": 0.0, "z_loss": 0.0},
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
    forward keeps a running max and the sum of exponentials, rescaled when
    the max grows (the max kept apart from the log-sum, so the loss loses
    nothing to cancellation), and saves only per-token numbers; the backward
    (a `jax.custom_vjp`) recomputes each chunk's logits and accumulates
    $\partial L/\partial h$, $\partial L/\partial W$ and $\partial L/\partial b$ from
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
    head = _linear_chunks.head(
        hidden,
        kernel,
        labels,
        bias=bias,
        layout=kernel_layout,
        chunk_size=chunk_size,
        axis_name=axis_name,
        ignore_index=ignore_index,
        where=where,
        example_weights=example_weights,
        autodiff=autodiff,
    )
    weights = _checks.class_vector("weights", weights, head.num_classes)
    plan, mesh = head.plan((weights,), stats=return_stats)
    rows = head.rows
    assert head.classes is not None and rows.classes is not None
    inputs = _Inputs(
        head.flat(head.hidden),
        head.kernel,
        head.bias,
        weights,
        rows.classes,
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
    example_shape, v = head.example_shape, head.example_weights
    losses = losses.reshape(example_shape)
    norm = _stream.weighted_count(head.mask, v, weights, head.classes, axis_name, losses.dtype)
    loss = reduce_loss(losses, norm, reduction, denominator)
    if lse is None or predicted is None:
        return loss
    lse, predicted = lse.reshape(example_shape), predicted.reshape(example_shape)
    return loss, _stats.finish(lse, predicted, head.classes, _labels.kept(head.mask, v))
