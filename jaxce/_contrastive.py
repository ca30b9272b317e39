"""Contrastive losses over the similarities of two towers, never materialising them.

CLIP / InfoNCE, SimCLR's NT-Xent and SigLIP are losses of the similarities
`s_ij = a_i . b_j / T + bias` of every row of `a` `[N, D]` with every row of
`b` `[M, D]`. Like the fused linear head (`_linear`), the rule streams blocks
of rows of `b` (`_linear_chunks.chunk`, `b` read as a `[V, D]` kernel), so
that only `[N, chunk]` similarities exist at a time: each block is folded
into the rows' running softmax (`_stream.fold`), the target similarity and,
for the b -> a direction, the block's own column log-sum-exp (complete in one
block, since a block holds every row), and dropped. The backward computes each
block again and turns its cotangent into d a, d b (`_linear_chunks.backprop`),
d temperature and d bias.

Inside `shard_map` (`axis_name`), each device holds a slice of the batch: its
rows of `a` and `b`. It all-gathers `b` (O(M D), never the similarities) and
streams its own rows against every column; the b -> a direction's column
log-sum-exps and the column cotangents are M-vectors, combined across the
devices once each (`_stream.combine`, a `psum`), and autodiff turns the
all-gather into a reduce-scatter (`psum_scatter`) of the gradient of `b`. A
`ppermute` ring (each device passing its slice of `b` on, as big_vision's
chunked SigLIP does) would hold O(M D / devices) of `b` instead. On 8 host
CPU devices (`benchmarks/contrastive_ring.py`, SigLIP's training step), the
ring of the same streamed loss took 1.16 and 0.95 times the all-gather's time
at N = 2,048 and 4,096 and held more temp (3.5 against 2.4 MiB, 14.0 against
9.5 MiB): hence the all-gather, one collective each way. Towers whose rows an
Explicit mesh splits take that path by themselves (`_per_device`).

Example i is the pair `(a_i, b_{y_i})`. An excluded example (`where`, or an
example weight of 0) is no candidate for any other example: its row of `a` is
dropped from every column's softmax and, when it owns its column (the
diagonal, NT-Xent), that column from every row's. Each example's own softmax
always holds its positive, so that its loss term (the derivative with respect
to its weight) is defined also where its weight is 0.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from jax.typing import ArrayLike

from . import _checks, _labels, _numerics, _sharding, _stream
from ._linear_chunks import (
    Plan,
    backprop,
    backward_loop,
    check_chunk_size,
    chunk,
    counted_hidden,
    make_plan,
    num_steps,
    varying,
)
from ._options import entry_point
from ._reduce import reduce_loss
from ._rule import Summed, cotangents, per_example_rule

LOSSES = ("softmax", "sigmoid")


class _Config(NamedTuple):
    plan: Plan
    loss: str  # "softmax" (CLIP, NT-Xent) or "sigmoid" (SigLIP)
    symmetric: bool  # also the b -> a cross-entropy (softmax only)
    exclude_self: bool  # a row never sees its own column (NT-Xent: a and b are one array)
    axis_name: Any = None  # the shard_map axes splitting the batch (b then gathered whole)
    axis: int = 1  # the rule skeleton's class axis of a [N, 1] loss


class _Inputs(NamedTuple):
    a: jax.Array  # [N, D]
    b: jax.Array  # [M, D]
    temperature: Any  # T, or None for 1
    bias: Any  # scalar, or None for 0
    classes: jax.Array  # [N], the column of each example's positive
    present: jax.Array  # [N], the examples present
    keep: jax.Array  # [N], those that count: the rows of `a` that are candidates
    col_present: jax.Array | None  # [M], the columns present (None: all)
    col_keep: jax.Array | None  # [M], the columns that are candidates (None: all)


def _partner(x: jax.Array) -> jax.Array:
    """Each NT-Xent view's value at its partner (rows 2k and 2k+1 swapped)."""
    return x.reshape(-1, 2)[:, ::-1].reshape(-1)


def _masked(x: jax.Array, rows: jax.Array | None) -> jax.Array:
    return x if rows is None else jnp.where(rows[:, None], x, 0)


def _block(cfg: _Config, inp: _Inputs, a: jax.Array, b: jax.Array, step: Any) -> _stream.Chunk:
    """Chunk `step` of the similarities, `z = a b_c^T / T + bias` (`raw` is `a b_c^T`)."""
    block = chunk(cfg.plan, a, b, None, None, step)
    z = block.raw
    if inp.temperature is not None:
        z = z / jnp.asarray(inp.temperature).astype(z.dtype)
    if inp.bias is not None:
        z = z + jnp.asarray(inp.bias).astype(z.dtype)
    return block._replace(z=z)


def _candidates(cfg: _Config, inp: _Inputs, block: _stream.Chunk) -> tuple[jax.Array, jax.Array]:
    """`[N, chunk]`: each row's positive, and the columns in its softmax (its positive too)."""
    hit = _stream.is_target(inp.classes, block)
    seen = jnp.ones_like(hit)
    counted = block.classes(inp.col_keep)
    if counted is not None:
        seen = hit | counted
    if cfg.exclude_self:
        n = hit.shape[0]
        rows = lax.iota(block.cols.dtype, n)[:, None]
        if cfg.axis_name is not None:
            rows = rows + lax.axis_index(cfg.axis_name).astype(rows.dtype) * n
        seen = seen & (block.cols != rows)
    return hit, seen


def _loop(cfg: _Config, inp: _Inputs, a: jax.Array, b: jax.Array, body: Any, init: Any) -> Any:
    if b.shape[0] == 0:
        return init
    return lax.fori_loop(
        0,
        num_steps(cfg.plan, b),
        lambda i, s: body(_block(cfg, inp, a, b, i), s),
        varying(init, *inp),
    )


class _Residuals(NamedTuple):
    lse: jax.Array  # [N, 1], each row's log-sum-exp over its softmax (softmax only)
    col_lse: jax.Array | None  # [M], each column's over the counted rows (symmetric only)


def _weights(cfg: _Config) -> tuple[float, float]:
    """The weights of the a -> b and b -> a cross-entropies."""
    return (0.5, 0.5) if cfg.symmetric else (1.0, 0.0)


def _fwd(cfg: _Config, inp: _Inputs) -> tuple[jax.Array, _Residuals | None]:
    n, m, dtype = inp.a.shape[0], inp.b.shape[0], cfg.plan.compute_dtype
    a = counted_hidden(cfg.plan, inp.a, inp.present)
    b = _masked(inp.b.astype(cfg.plan.dot_dtype), inp.col_present)
    zeros = jnp.zeros((n,), dtype)
    if cfg.loss == "sigmoid":

        def pairs(block, total):
            # -log sigmoid(+-z) = softplus(-+z): +1 on the positive, -1 elsewhere.
            hit, seen = _candidates(cfg, inp, block)
            terms = jax.nn.softplus(jnp.where(hit, -block.z, block.z))
            return total + jnp.sum(jnp.where(seen & block.fresh, terms, 0), axis=1)

        return _loop(cfg, inp, a, b, pairs, zeros)[:, None], None

    def step(block, state):
        rows, target, col_lse = state
        hit, seen = _candidates(cfg, inp, block)
        z = block.z
        rows = _stream.fold(rows, jnp.where(seen, z, -jnp.inf), block)
        target = target + _stream.at_target(inp.classes, block, z)
        if col_lse is not None:
            # A block holds every row (of this device): its columns' log-sum-exp is complete.
            lse = jax.nn.logsumexp(jnp.where(inp.keep[:, None], z, -jnp.inf), axis=0)
            col_lse = lax.dynamic_update_slice_in_dim(col_lse, lse, block.start, 0)
        return rows, target, col_lse

    col_lse = jnp.zeros((m,), dtype) if cfg.symmetric else None
    init = (_stream.Softmax.empty(n, dtype), zeros, col_lse)
    rows, target, col_lse = _loop(cfg, inp, a, b, step, init)
    shift, log_sum = rows.normaliser()
    target = target[:, None]
    # (shift - z_y) + log_sum: no cancellation between the normaliser and the target.
    nll = (shift - target) + log_sum
    to_b, to_a = _weights(cfg)
    loss = to_b * nll
    if col_lse is not None:
        if cfg.axis_name is not None:
            # Each column's log-sum-exp over every device's rows: one pmax and one psum of M.
            own = _stream.Softmax(col_lse, jnp.ones_like(col_lse))  # one term: its lse
            (cols,), _ = _stream.combine((own,), (), cfg.axis_name)
            shift, log_sum = cols.normaliser()
            col_lse = (shift + log_sum)[:, 0]
        col_target = _numerics.class_value(col_lse, inp.classes)[:, None]
        loss = loss + to_a * _own(inp.keep, col_target - target)
    return loss, _Residuals(target + nll, col_lse)


def _own(counted: jax.Array | None, nll: jax.Array) -> jax.Array:
    """The cross-entropy with the positive added to its softmax where it does not count:
    `log(1 + exp(lse - z_y)) = softplus(nll)`."""
    return nll if counted is None else jnp.where(counted[:, None], nll, jax.nn.softplus(nll))


def _bwd(cfg: _Config, inp: _Inputs, res: _Residuals | None, g: jax.Array) -> Any:
    a = counted_hidden(cfg.plan, inp.a, inp.keep)
    b = _masked(inp.b.astype(cfg.plan.dot_dtype), inp.col_keep)
    to_b, to_a = _weights(cfg)
    # An excluded row's cotangent is 0, and its log-sum-exp may be anything: +inf zeroes it.
    lse = None if res is None else jnp.where(inp.keep[:, None], res.lse, jnp.inf)
    col_lse = None if res is None else res.col_lse
    if col_lse is not None and inp.col_keep is not None:
        col_lse = jnp.where(inp.col_keep, col_lse, jnp.inf)

    g_col = None
    if col_lse is not None:
        # Column j's cross-entropies sum g_i over the examples whose positive it is (on any
        # device): an M-vector, one psum.
        index = jnp.where(inp.classes >= 0, inp.classes, col_lse.shape[0])
        g_col = jnp.zeros_like(col_lse).at[index].add(to_a * g[:, 0], mode="drop")
        if cfg.axis_name is not None:
            g_col = lax.psum(g_col, cfg.axis_name)

    def body(block, carry):
        grads, d_bias = carry
        hit, seen = _candidates(cfg, inp, block)
        z = block.z
        if res is None:
            # sigmoid(z) - [j = y], as -sigmoid(-z) on the positive: no cancellation.
            ds = g * jnp.where(seen, jnp.where(hit, -jax.nn.sigmoid(-z), jax.nn.sigmoid(z)), 0)
            d_bias = d_bias + jnp.sum(jnp.where(block.fresh, ds, 0))
        else:
            # The weights of the two directions sum to 1: -g on each positive.
            ds = g * (to_b * jnp.where(seen, jnp.exp(z - lse), 0) - jnp.where(hit, 1.0, 0.0))
            if col_lse is not None:
                lse_c = block.classes(col_lse)
                p_col = jnp.where(inp.keep[:, None], jnp.exp(z - lse_c), 0)
                ds = ds + block.classes(g_col) * p_col
        if inp.temperature is not None:
            ds = ds / jnp.asarray(inp.temperature).astype(ds.dtype)
        grads = backprop(cfg.plan, a, ds, block, grads, b, None)
        return grads, d_bias

    d_bias = jnp.zeros((), cfg.plan.compute_dtype)
    refs = tuple(jax.tree.leaves((g, res)))
    if b.shape[0] == 0:
        return cotangents(inp, a=jnp.zeros_like(inp.a), b=Summed(jnp.zeros_like(inp.b)))
    (da, db, _), d_bias = backward_loop(
        cfg.plan,
        lambda i, c: body(_block(cfg, inp, a, b, i), c),
        d_bias,
        inp.a,
        inp.b,
        None,
        (*inp, *refs),
    )
    d_t = None
    if inp.temperature is not None:
        # d s_ij / d T = -(a_i . b_j) / T^2, and sum_ij ds_ij a_i . b_j / T = sum_i a_i . da_i.
        t = jnp.asarray(inp.temperature).astype(da.dtype)
        d_t = -jnp.sum(a.astype(da.dtype) * da) / t
    # The softmax's bias stays 0: it cancels, every row's and column's probabilities sum to 1.
    d_c = None if inp.bias is None else d_bias
    return cotangents(inp, a=da, b=Summed(db), temperature=Summed(d_t), bias=Summed(d_c))


_rule = per_example_rule(_fwd, _bwd)


def _check_autodiff(autodiff: str) -> None:
    if autodiff != "reverse":
        raise ValueError(
            "autodiff must be 'reverse' for a contrastive loss: its rule computes each block of "
            f"similarities again in the backward and has no forward-mode rule; got {autodiff!r}."
        )


def _towers(a: ArrayLike, b: ArrayLike) -> tuple[jax.Array, jax.Array]:
    a, b = _checks.floating("a", a), _checks.floating("b", b)
    if a.ndim != 2:
        raise ValueError(f"a must have shape (N, D) (examples by features); got {a.shape}.")
    if b.ndim != 2 or b.shape[1] != a.shape[1]:
        raise ValueError(f"b must have shape (M, {a.shape[1]}) (a's features); got {b.shape}.")
    return a, b


def _loss(
    cfg: tuple[str, bool, bool],
    a: jax.Array,
    b: jax.Array,
    labels: ArrayLike | None,
    *options: Any,
) -> jax.Array:
    """The loss of validated towers; `labels` None pairs row i of `a` with row i of `b`."""
    loss, symmetric, exclude_self = cfg
    temperature, bias, where, example_weights, reduction, chunk_size, axis_name = options
    classes = None if labels is None else _classes(a, labels)
    n, m = a.shape[0], b.shape[0]
    v = _labels.per_example_weights(example_weights, (n,))
    if axis_name is None:
        mesh, rows = _sharding.explicit_axes(a, 0)
        if mesh is not None and rows is not None and _splits(cfg, mesh, rows, n, m):
            return _per_device(cfg, mesh, rows, a, b, classes, v, *options)
    owned = classes is None
    if owned:
        if m != n:
            raise ValueError(
                f"b must have as many rows as a ({n}) when labels is None (row i of a and row i "
                f"of b are a positive pair); got {m}. Pass labels for other pairings."
            )
        classes = lax.iota(jnp.int32, n)
        if axis_name is not None:
            classes = classes + lax.axis_index(axis_name) * n
        if exclude_self:
            classes = classes ^ 1
    if axis_name is not None:
        m *= lax.axis_size(axis_name)
    mask, bad = _labels.example_mask(classes, (n,), m, ignore_index=None, where=where, weights=v)
    v = None if v is None else jnp.broadcast_to(v, (n,))
    if exclude_self:
        # A view is its partner's positive: a pair is present only with both its views, and
        # a view whose partner weighs 0 is out as where=False would put it.
        mask = mask & _partner(_labels.kept(mask, v))
    keep = _labels.kept(mask, v)
    columns = (mask, keep) if owned else (None, None)
    if axis_name is not None:
        # Every row of b (O(M D)), in the order of the devices along the axis; autodiff
        # reduce-scatters its gradient back to the devices (`psum_scatter`).
        b, columns = jax.tree.map(lambda x: lax.all_gather(x, axis_name, tiled=True), (b, columns))
    placed = [x for x in (a, b, mask, v) if x is not None and _sharding.on_explicit_mesh(x)]
    placed = [] if axis_name is not None else placed
    if placed:
        # The towers (O((N + M) D)) and the per-example arrays are gathered, never N x M;
        # every device then streams the whole loss (the cotangents are resharded like a, b).
        whole = NamedSharding(jax.typeof(placed[0]).sharding.mesh, P())
        a, b, classes, mask, bad, v, keep, columns = jax.tree.map(
            lambda x: jax.reshard(x, whole), (a, b, classes, mask, bad, v, keep, columns)
        )
    plan, _ = make_plan(
        a, b, (), num_examples=n, chunk_size=chunk_size, layout="VD", axis_name=None
    )
    plan = plan._replace(chunk=max(plan.chunk, 1))
    assert classes is not None
    inputs = _Inputs(a, b, temperature, bias, classes, mask, keep, *columns)
    # The loop's fresh arrays on the towers' mesh, also outside `jax.set_mesh`.
    with jax.sharding.use_abstract_mesh(whole.mesh.abstract_mesh) if placed else nullcontext():
        config = _Config(plan, loss, symmetric, exclude_self, axis_name)
        losses = _rule(config, mask, bad, inputs, v)
    norm = _labels.weighted_count(mask, v, losses.dtype)
    if axis_name is not None and reduction != "none":
        # The whole batch's sum and normaliser, the same on every device.
        losses, norm = lax.psum((jnp.sum(losses), jnp.sum(norm)), axis_name)
    return reduce_loss(losses, norm, reduction)


def _splits(cfg: tuple[str, bool, bool], mesh: Any, rows: tuple[str, ...], n: int, m: int) -> bool:
    """Whether `rows` of `mesh` split both towers evenly (NT-Xent: into whole pairs)."""
    devices = int(np.prod([mesh.shape[axis] for axis in rows]))
    per_device = 2 * devices if cfg[2] else devices
    return n % per_device == 0 and m % devices == 0


def _per_device(
    cfg: tuple[str, bool, bool],
    mesh: Any,
    rows: tuple[str, ...],
    a: jax.Array,
    b: jax.Array,
    classes: jax.Array | None,
    v: jax.Array | None,
    *options: Any,
) -> jax.Array:
    """The loss of towers whose rows an Explicit mesh splits, each device streaming its own
    rows (`shard_map` over `rows`, as with `axis_name`): no device computes another's."""
    temperature, bias, where, _, reduction, chunk_size, _ = options
    n = a.shape[0]
    per_row = {
        "classes": classes,
        "where": None if where is None else _checks.example_mask(where, (n,)),
        "v": None if v is None else jnp.broadcast_to(v, (n,)),
    }
    scalars = {"temperature": temperature, "bias": bias}
    scalars = {k: None if x is None else jnp.asarray(x) for k, x in scalars.items()}

    def local(a, b, per_row, scalars):
        hyper = (scalars["temperature"], scalars["bias"], per_row["where"], per_row["v"])
        return _loss(cfg, a, b, per_row["classes"], *hyper, reduction, chunk_size, rows)

    split, whole = P(rows), P()
    in_specs = (
        split,
        split,
        jax.tree.map(lambda _: split, per_row),
        jax.tree.map(lambda _: whole, scalars),
    )
    args = (a, b, per_row, scalars)
    args = jax.tree.map(lambda x, s: jax.reshard(x, NamedSharding(mesh, s)), args, in_specs)
    out_specs = split if reduction == "none" else whole
    return jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=out_specs)(*args)


_STATIC = ("chunk_size", "reduction", "axis_name", "symmetric")
_HYPER = {
    "temperature": _checks.POSITIVE,
    "bias": _checks.Interval(-jnp.inf, optional=True),
}
_CHECKS = {"chunk_size": check_chunk_size, "symmetric": _checks.flag}


@entry_point(static=_STATIC, hyperparameters=_HYPER, off={"temperature": 1.0}, checks=_CHECKS)
def contrastive_cross_entropy(
    a: ArrayLike,
    b: ArrayLike,
    *,
    temperature: ArrayLike = 1.0,
    bias: ArrayLike | None = None,
    labels: ArrayLike | None = None,
    symmetric: bool = True,
    where: ArrayLike | None = None,
    example_weights: ArrayLike | None = None,
    reduction: str = "mean",
    chunk_size: int | None = None,
    axis_name: str | tuple[str, ...] | None = None,
    autodiff: str = "reverse",
) -> jax.Array:
    r"""CLIP / InfoNCE: softmax cross-entropy over the similarities of two towers.

    With similarities $s_{ij} = a_i \cdot b_j / T + \beta$ and the positive
    $y_i$ of row $i$ (`labels`, by default $i$), the loss of example $i$ is

    $$
    \ell_i = \tfrac12 \Big(\operatorname{lse}_j s_{ij} - s_{i y_i}\Big)
        + \tfrac12 \Big(\operatorname{lse}_k s_{k y_i} - s_{i y_i}\Big),
    \qquad L = \frac{\sum_i m_i v_i \ell_i}{\sum_i m_i v_i},
    $$

    the mean of the a -> b and b -> a cross-entropies (CLIP); with
    `symmetric=False` only the first, without the 1/2 (InfoNCE). The
    similarities are streamed in blocks of rows of `b` and never held whole:
    the forward keeps each row's running max and sum of exponentials and
    each block's column log-sum-exp; the backward (a `jax.custom_vjp`)
    computes each block again and accumulates $\partial L/\partial a$,
    $\partial L/\partial b$, $\partial L/\partial T$ and
    $\partial L/\partial \beta$ (0: a softmax does not see a constant). Peak
    memory is $O(N \cdot \text{chunk} + (N + M) D)$ instead of $O(N M)$, for
    4 matmuls of $N M D$ instead of 3.

    The towers are used as given: CLIP's cosine similarity is the caller's
    L2 normalisation, `a / jnp.linalg.norm(a, axis=-1, keepdims=True)` (and
    the same for `b`), and its learned logit scale
    $1/T = \exp(t)$ is `temperature=jnp.exp(-t)`.

    Args:
      a: floating array `(N, D)`, one row per example (the first tower).
      b: floating array `(M, D)` (the second tower), `M = N` without `labels`.
      temperature: $T > 0$; may be traced, with an exact gradient.
      bias: $\beta$ added to every similarity, or None; may be traced.
      labels: integer array `(N,)` in `[0, M)`: the row of `b` that is row
        $i$'s positive. None: the diagonal, row $i$ of `b`.
      symmetric: also the b -> a cross-entropy (each example's positive
        column against every counted row of `a`).
      where: boolean mask broadcastable to `(N,)`. An excluded example is no
        candidate for any other: its row of `a` leaves every column's softmax,
        and without `labels` its row of `b` leaves every row's; what it holds
        (inf, NaN) is never read into another value or gradient. With
        `labels`, every row of `b` is a candidate.
      example_weights: $v$, floating, broadcastable to `(N,)`: each example's
        loss and its share of the mean's denominator; 0 excludes it like
        `where`, and its derivative is then its loss term (its own softmax
        always holds its positive).
      reduction: `"mean"`, `"sum"` or `"none"` (`(N,)`, 0 where excluded).
      chunk_size: rows of `b` per block. None picks about $2^{20}/N$ on a
        CPU and $2^{23}/N$ on an accelerator, at least 128.
      axis_name: inside `jax.shard_map`, the mesh axis (or axes) that split
        the batch: `a`, `b`, `labels`, `where` and `example_weights` each
        hold this device's rows, in the order of the devices along the axis
        (`P(axis_name)`), and `labels` index the whole `b`. Each device
        all-gathers `b` (O(M D), never O(N M)) and streams its rows against
        every column; the b -> a direction's column statistics are combined
        across devices with one `psum` of an M-vector, and the gradient of `b`
        comes back reduce-scattered (`psum_scatter`): an all-gather rather
        than a `ppermute` ring, which was no faster on 8 host CPU devices
        and held more memory (`benchmarks/contrastive_ring.py`). Returns
        the whole batch's loss on every device (`"none"`: this device's
        examples'), with exact gradients with respect to both towers,
        `temperature` and `bias`. Outside `shard_map`, towers whose rows an
        `Explicit` mesh splits evenly take this path over those mesh axes by
        themselves; other towers on an `Explicit` mesh are gathered
        (O((N + M) D)) and every device streams the whole loss; on an `Auto`
        mesh the partitioner places it.
      autodiff: `"reverse"` only: the backward computes each block again.

    Returns:
      A scalar, or `(N,)` losses for `"none"`; float32 for half-precision
      inputs.

    Raises:
      TypeError: non-floating `a` or `b`, non-integer `labels`, a
        non-boolean `where`.
      ValueError: mismatched shapes, `M != N` without `labels`, a concrete
        `temperature <= 0`, an unknown `reduction`.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxce
      >>> a = jnp.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
      >>> b = jnp.array([[0.8, 0.6], [0.0, 1.0], [1.0, 0.0]])
      >>> s = a @ b.T / 0.5
      >>> clip = 0.5 * (jaxce.softmax_cross_entropy(s, jnp.arange(3))
      ...               + jaxce.softmax_cross_entropy(s.T, jnp.arange(3)))
      >>> with jnp.printoptions(precision=4):
      ...     print(jnp.stack([jaxce.contrastive_cross_entropy(a, b, temperature=0.5), clip]))
      [0.9885 0.9885]

    References:
      Oord et al., *Representation Learning with Contrastive Predictive
      Coding*, 2018; Radford et al., *Learning Transferable Visual Models
      From Natural Language Supervision* (CLIP), 2021.
    """
    _check_autodiff(autodiff)
    options = (temperature, bias, where, example_weights, reduction, chunk_size, axis_name)
    return _loss(("softmax", symmetric, False), *_towers(a, b), labels, *options)


def _classes(a: jax.Array, labels: ArrayLike) -> jax.Array:
    classes = _labels.parse(a, labels, 1, allow_probs=False, logits_name="a").classes
    assert classes is not None
    return classes


_NTXENT_HYPER = {"temperature": _checks.POSITIVE}


@entry_point(static=_STATIC[:3], hyperparameters=_NTXENT_HYPER, checks=_CHECKS)
def ntxent_loss(
    z: ArrayLike,
    *,
    temperature: ArrayLike,
    where: ArrayLike | None = None,
    example_weights: ArrayLike | None = None,
    reduction: str = "mean",
    chunk_size: int | None = None,
    axis_name: str | tuple[str, ...] | None = None,
    autodiff: str = "reverse",
) -> jax.Array:
    r"""SimCLR's NT-Xent: each of 2K views against every other view, rows 2k and 2k+1 a pair.

    With $s_{ij} = z_i \cdot z_j / T$ and $p(i) = i \oplus 1$ the other view of
    row $i$'s pair, the loss of row $i$ is

    $$
    \ell_i = \log \sum_{j \ne i} e^{s_{ij}} - s_{i p(i)},
    \qquad L = \frac{\sum_i m_i v_i \ell_i}{\sum_i m_i v_i},
    $$

    a row never seeing itself. It equals `optax.losses.ntxent(z, labels)` with
    `labels = jnp.arange(2 * K) // 2` when the rows of `z` are L2-normalised
    (optax normalises them itself; here it is the caller's
    `z / jnp.linalg.norm(z, axis=-1, keepdims=True)`), and is streamed like
    [`contrastive_cross_entropy`][jaxce.contrastive_cross_entropy]: memory
    $O(N \cdot \text{chunk} + N D)$, where optax's gradient needs more than
    $O(N^2)$.

    Args:
      z: floating array `(2K, D)`: the two views of K examples, interleaved.
      temperature: $T > 0$; may be traced, with an exact gradient.
      where: boolean mask broadcastable to `(2K,)`; an excluded row has no
        loss and is no candidate for any other row (each row's softmax
        always holds its own positive). Excluding one view of a pair
        excludes the other, whose positive it is.
      example_weights: $v$, floating, broadcastable to `(2K,)`; 0 excludes a
        row (and so its pair) like `where`, and its derivative is its loss
        term.
      reduction: `"mean"`, `"sum"` or `"none"` (`(2K,)`, 0 where excluded).
      chunk_size: rows per block, as in `contrastive_cross_entropy`.
      axis_name: as in `contrastive_cross_entropy`; each device's rows hold
        whole pairs (an even number of rows).
      autodiff: `"reverse"` only.

    Returns:
      A scalar, or `(2K,)` losses for `"none"`.

    Raises:
      ValueError: an odd number of rows, a concrete `temperature <= 0`.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxce
      >>> z = jnp.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]])
      >>> print(f"{jaxce.ntxent_loss(z, temperature=0.5):.4f}")
      0.4302

    References:
      Chen et al., *A Simple Framework for Contrastive Learning of Visual
      Representations* (SimCLR), 2020.
    """
    _check_autodiff(autodiff)
    z = _checks.floating("z", z)
    if z.ndim != 2 or z.shape[0] % 2:
        raise ValueError(
            "z must have shape (2K, D), rows 2k and 2k+1 the two views of example k; "
            f"got {z.shape}."
        )
    options = (temperature, None, where, example_weights, reduction, chunk_size, axis_name)
    return _loss(("softmax", False, True), z, z, None, *options)


_SIGMOID_HYPER = {"temperature": _checks.POSITIVE, "bias": _HYPER["bias"]._replace(optional=False)}


@entry_point(static=_STATIC[:3], hyperparameters=_SIGMOID_HYPER, checks=_CHECKS)
def sigmoid_contrastive_loss(
    a: ArrayLike,
    b: ArrayLike,
    *,
    temperature: ArrayLike,
    bias: ArrayLike,
    labels: ArrayLike | None = None,
    where: ArrayLike | None = None,
    example_weights: ArrayLike | None = None,
    reduction: str = "mean",
    chunk_size: int | None = None,
    axis_name: str | tuple[str, ...] | None = None,
    autodiff: str = "reverse",
) -> jax.Array:
    r"""SigLIP: a binary cross-entropy over every pair, +1 on the positives, -1 elsewhere.

    With $s_{ij} = a_i \cdot b_j / T + \beta$ and $\epsilon_{ij} = +1$ for
    $j = y_i$, $-1$ otherwise, the loss of row $i$ sums over its pairs:

    $$
    \ell_i = \sum_j \log\big(1 + e^{-\epsilon_{ij} s_{ij}}\big),
    \qquad L = \frac{\sum_i m_i v_i \ell_i}{\sum_i m_i v_i},
    $$

    SigLIP's loss, summed over the pairs and averaged over the rows
    ($1/T = e^{t'}$ with SigLIP's learned $t'$, initialised at $\log 10$,
    and $\beta = -10$). Streamed like
    [`contrastive_cross_entropy`][jaxce.contrastive_cross_entropy], with
    $\partial \ell_i / \partial s_{ij} = \sigma(s_{ij}) - [j = y_i]$. L2
    normalisation of the towers is the caller's, as there.

    Args:
      a: floating array `(N, D)`.
      b: floating array `(M, D)`, `M = N` without `labels`.
      temperature: $T > 0$; may be traced, with an exact gradient.
      bias: $\beta$; may be traced, with an exact gradient.
      labels: integer array `(N,)` in `[0, M)`, the positive of each row; None:
        the diagonal.
      where: boolean mask broadcastable to `(N,)`, as in
        `contrastive_cross_entropy`: an excluded example has no loss, and
        without `labels` its row of `b` is no negative for any other row.
      example_weights: $v$, floating, broadcastable to `(N,)`.
      reduction: `"mean"`, `"sum"` or `"none"` (`(N,)`).
      chunk_size: rows of `b` per block, as in `contrastive_cross_entropy`.
      axis_name: as in `contrastive_cross_entropy`.
      autodiff: `"reverse"` only.

    Returns:
      A scalar, or `(N,)` losses for `"none"`.

    Raises:
      ValueError: mismatched shapes, a concrete `temperature <= 0`.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxce
      >>> a = jnp.array([[1.0, 0.0], [0.0, 1.0]])
      >>> b = jnp.array([[0.8, 0.6], [0.6, 0.8]])
      >>> print(f"{jaxce.sigmoid_contrastive_loss(a, b, temperature=0.1, bias=-5.0):.4f}")
      1.3618

    References:
      Zhai et al., *Sigmoid Loss for Language Image Pre-Training* (SigLIP), 2023.
    """
    _check_autodiff(autodiff)
    options = (temperature, bias, where, example_weights, reduction, chunk_size, axis_name)
    return _loss(("sigmoid", False, False), *_towers(a, b), labels, *options)
