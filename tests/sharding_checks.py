"""Vocabulary-sharding checks, run in a subprocess with 8 host devices.

Usage: `python -m tests.sharding_checks` (sets XLA_FLAGS itself before importing
jax). Prints one JSON object mapping `"<loss>/<mesh>"` (and the keys of the
shard_map checks) to `"ok"` or an error. For each loss of `tests/registry.py`,
the value and the gradients of every differentiable input (and of the example
weights) with the inputs split over the examples and the vocabulary must equal
the unsharded ones, and the compiled program must not all-gather anything as
large as a device's slice of the logits.
"""

import os

# The checks read the partitioned program and its values, not its speed: LLVM's optimisation
# of the CPU code would be a third or more of their compile time.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"
).strip()

import contextlib  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import traceback  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import jaxce  # noqa: E402
from tests import reference, registry  # noqa: E402
from tests.helpers import central_difference, replaced  # noqa: E402

N, V = 16, 64
DATA, VOCAB = 2, 4

_keys = jax.random.split(jax.random.key(0), 2)
LOGITS = jax.random.normal(_keys[0], (N, V))
LABELS = jax.random.randint(_keys[1], (N,), 0, V)
WHERE = np.arange(N) % 5 != 0
# Some of them 0, which is where=False: the weights' gradient is compared too.
EXAMPLE_WEIGHTS = jnp.where(jnp.arange(N) % 4 == 1, 0.0, 0.5 + jnp.arange(N) / N)

# Rows whose largest logit appears twice, in different vocabulary shards (columns 5 and 40).
TIED = LOGITS.at[::2, 5].set(9.0).at[::2, 40].set(9.0)


def _with_stats(out):
    """A loss that depends on every statistic: the lse (differentiable) and the argmax."""
    loss, stats = out
    extra = jnp.sum(stats.predicted * (stats.correct + 1)).astype(loss.dtype)
    return loss + 0.1 * jnp.sum(stats.logsumexp**2) + 1e-3 * extra


class Case:
    """A loss of the registry at N examples of V classes: its arrays (float32), their specs,
    the mask and example weights (one per row of an elementwise loss's elements)."""

    def __init__(self, loss, stats=False):
        self.loss, self.stats = loss, stats
        self.name = loss.name + ("/stats" if stats else "")
        data = loss.data(N, V)
        if stats and loss.inputs[0] is registry.LOGITS:
            data = (np.asarray(TIED), *data[1:])
        self.arrays = tuple(
            jnp.asarray(a, jnp.float32 if a.dtype.kind == "f" else jnp.int32) for a in data
        )
        self.specs = tuple(a.spec for a in loss.arrays)
        self.where = WHERE[:, None] if loss.elementwise else WHERE
        self.v = EXAMPLE_WEIGHTS[:, None] if loss.elementwise else EXAMPLE_WEIGHTS

    @property
    def tag(self) -> str:
        """The name of its program, which the compiled HLO's metadata repeats."""
        return "case_" + re.sub(r"\W", "_", self.name)

    def value(self, arrays, fn=None, **kw):
        """The loss as one float (`fn` its shard_map form)."""
        options = dict(return_stats=True) if self.stats else {}
        if fn is None:
            out = self.loss(arrays, **options, **kw)
        else:
            args, keywords = self.loss._split(arrays)
            out = fn(*args, **keywords, **self.loss.options, **self.loss.static, **options, **kw)
        return _with_stats(out) if self.stats else out

    def floats(self, arrays):
        return tuple(arrays[i] for i in self.loss.differentiable)

    def program(self, arrays, where, v, unweighted=True):
        """Weighted (and unweighted), each value and its gradients."""

        def value(floats, v):
            xs = replaced(arrays, self.loss.differentiable, floats)
            return self.value(xs, where=where, example_weights=v, reduction="mean")

        floats = self.floats(arrays)
        out = {"weighted": jax.value_and_grad(value, argnums=(0, 1))(floats, v)}
        if unweighted:
            out["unweighted"] = jax.value_and_grad(value)(floats, None)
        return out


def run_together(cases, programs, args, context=contextlib.nullcontext):
    """Every case's program on its arguments, compiled together (one compilation is much
    cheaper than one per loss): `{name: (outputs, compiled HLO text) or an error}`. Where
    the whole fails, each case runs alone, so that an error names its loss."""

    def together(args):
        return {c.name: jax.jit(_named(programs[c.name], c.tag))(*args[c.name]) for c in cases}

    try:
        with context():
            compiled = jax.jit(together).lower(args).compile()
            out = compiled(args)
        hlo = compiled.as_text()
        return {c.name: (out[c.name], hlo) for c in cases}
    except Exception:
        if len(cases) == 1:
            return {cases[0].name: error()}
        results = {}
        for c in cases:
            results.update(run_together([c], programs, {c.name: args[c.name]}, context))
        return results


def _named(fn, name):
    def program(*args):
        return fn(*args)

    program.__name__ = program.__qualname__ = name
    return program


def placer(mesh):
    return lambda a, spec: jax.device_put(a, NamedSharding(mesh, spec))


def largest_all_gather(hlo: str, tag: str | None = None) -> int:
    """Elements of the largest all-gather result in compiled HLO text; with `tag`, of those
    that the metadata puts in that case's program (or nowhere)."""
    largest = 0
    for line in hlo.splitlines():
        found = re.search(r"= \w+\[([\d,]*)\][^ ]* all-gather(?:-start)?\(", line)
        if found and _belongs(line, tag):
            size = int(np.prod([int(d) for d in found.group(1).split(",") if d]))
            largest = max(largest, size)
    return largest


def _belongs(line: str, tag: str | None) -> bool:
    op_name = re.search(r'op_name="([^"]*)"', line)
    return tag is None or op_name is None or f"jit({tag})" in op_name.group(1)


def check_meshes(cases: list[Case]) -> dict[str, str]:
    """The losses on arrays placed on a mesh of either axis type, inside `jax.set_mesh` or
    simply placed there, as `jax.device_put` on `jax.make_mesh`'s mesh leaves them."""
    programs = {c.name: c.program for c in cases}
    args = {c.name: (c.arrays, c.where, c.v) for c in cases}
    expected = run_together(cases, programs, args)
    results = {}
    for axis_type in (AxisType.Auto, AxisType.Explicit):
        mesh = jax.make_mesh((DATA, VOCAB), ("data", "vocab"), axis_types=(axis_type,) * 2)
        placed = {
            c.name: jax.tree.map(placer(mesh), args[c.name], (c.specs, P("data"), P("data")))
            for c in cases
        }
        for in_context in (True, False):
            context = functools.partial(jax.set_mesh, mesh) if in_context else None
            # Outside set_mesh, the weighted loss stands for both.
            weighted = {c.name: functools.partial(c.program, unweighted=False) for c in cases}
            run = programs if in_context else weighted
            got = run_together(cases, run, placed, context or contextlib.nullcontext)
            suffix = f"/{axis_type.name}" + ("" if in_context else "/no_set_mesh")
            for c in cases:
                results[c.name + suffix] = _outcome(
                    c,
                    expected[c.name],
                    got[c.name],
                    functools.partial(_check_program, c, axis_type),
                )
    return results


def _outcome(case: Case, expected, got, check) -> str:
    for result in (expected, got):
        if isinstance(result, str):
            return result
    try:
        _compare({k: expected[0][k] for k in got[0]}, got[0])
        check(got[1])
        return "ok"
    except Exception:
        return error()


def _batch_split(case: Case) -> bool:
    """Whether `axis_name` splits the loss's examples (no input is split over "vocab"): the
    contrastive losses, whose towers are split over the batch."""
    return not any("vocab" in spec for spec in case.specs)


def check_batch_split(case: Case, axis_type: AxisType, hlo: str) -> None:
    """A batch-split loss gathers the rows of its towers (O((N + M) D)), never similarities.
    On an Explicit mesh each device streams its own rows (`shard_map` over the rows' axes):
    no product of similarities there spans all N rows."""
    gathered, limit = largest_all_gather(hlo, case.tag), max(a.size for a in case.arrays)
    if gathered > limit:
        raise AssertionError(f"all-gather of {gathered} elements (the towers: {limit})")
    if axis_type != AxisType.Explicit:
        return
    whole = [
        line.strip()[:80]
        for line in hlo.splitlines()
        if re.search(rf"= \w+\[{N},\d+\][^ ]* dot\(", line) and _belongs(line, case.tag)
    ]
    if whole:
        raise AssertionError(f"every device computes all {N} rows: {whole[:2]}")


def _check_program(case: Case, axis_type: AxisType, hlo: str) -> None:
    if _batch_split(case):
        return check_batch_split(case, axis_type, hlo)
    limit = N * V // (DATA * VOCAB)  # one device's slice of the logits
    if case.loss.public.startswith("linear_") and axis_type == AxisType.Auto:
        # The partitioner cannot see the kernel's sharding from inside the loss, so an
        # Auto mesh gathers the D x V kernels; the N x V logits still never exist.
        limit = N * V
    gathered = largest_all_gather(hlo, case.tag)
    if gathered >= limit:
        raise AssertionError(f"all-gather of {gathered} elements (limit {limit})")
    gathers = [line for line in hlo.splitlines() if re.search(r" gather\(", line)]
    if axis_type == AxisType.Explicit and any(_belongs(line, case.tag) for line in gathers):
        # With the classes split over devices the target is picked locally, not gathered.
        raise AssertionError("a gather on an Explicit mesh whose class axis is split")


def shard_map_layouts(case: Case) -> dict[str, tuple]:
    """For the sum and the weighted mean: the in_specs, the loss's `axis_name` and the axes
    the caller psums the sum over (or None).

    A vocabulary-split loss has the sum's examples split over "data" and the mean's on every
    device, the classes over "vocab". A batch-split loss has its examples split over both
    axes for the sum and over "vocab" for the mean (the same on both "data" devices)."""
    if not _batch_split(case):
        vocab_only = tuple(P(*(None if s == "data" else s for s in spec)) for spec in case.specs)
        return {
            "sum": ((case.specs, P("data")), "vocab", "data"),
            "mean": ((vocab_only, P(), P()), "vocab", None),
        }

    def over(axes, rows):
        arrays = tuple(P(*(axes if s == "data" else s for s in spec)) for spec in case.specs)
        return (arrays, *(P(axes),) * rows)

    both = ("data", "vocab")
    return {"sum": (over(both, 1), both, None), "mean": (over("vocab", 2), "vocab", None)}


def check_shard_maps(cases: list[Case]) -> dict[str, str]:
    """The losses that take `axis_name`, inside shard_map: a sum and a weighted mean
    (`shard_map_layouts`), equal to the unsharded ones."""
    mesh = jax.make_mesh((DATA, VOCAB), ("data", "vocab"), axis_types=(AxisType.Explicit,) * 2)
    sharded, unsharded, args, placed = {}, {}, {}, {}
    for c in cases:
        layouts = shard_map_layouts(c)
        args[c.name] = {"sum": (c.arrays, c.where), "mean": (c.arrays, c.where, c.v)}
        placed[c.name] = {
            k: jax.tree.map(placer(mesh), a, layouts[k][0]) for k, a in args[c.name].items()
        }
        sharded[c.name] = functools.partial(shard_map_program, c, mesh, layouts)
        unsharded[c.name] = functools.partial(shard_map_program, c, None, None)
    expected = run_together(cases, unsharded, {c.name: (args[c.name],) for c in cases})
    got = run_together(
        cases,
        sharded,
        {c.name: (placed[c.name],) for c in cases},
        functools.partial(jax.set_mesh, mesh),
    )

    def check(case, hlo):
        if _batch_split(case):
            return check_batch_split(case, AxisType.Explicit, hlo)
        if largest_all_gather(hlo, case.tag):
            raise AssertionError(f"all-gather in {case.name} inside shard_map")

    return {
        f"{c.name}/shard_map": _outcome(
            c, expected[c.name], got[c.name], functools.partial(check, c)
        )
        for c in cases
    }


def shard_map_program(case: Case, mesh, layouts, args):
    """`case`'s sum and weighted mean, inside shard_map on `mesh` (None: unsharded)."""
    loss = case.loss

    def split(reduction, arrays, where, v=None):
        specs, axis_name, psum = layouts[reduction]

        def local(arrays, where, *v):
            out = case.value(
                arrays, loss.fn, axis_name=axis_name, where=where, reduction=reduction,
                example_weights=v[0] if v else None,
            )  # fmt: skip
            return out if psum is None else jax.lax.psum(out, psum)

        run = jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=P())
        return run(arrays, where, *(() if v is None else (v,)))

    def total(floats):
        arrays, where = args["sum"]
        xs = replaced(arrays, loss.differentiable, floats)
        if mesh is not None:
            return split("sum", xs, where)
        return case.value(xs, where=where, reduction="sum")

    def mean(floats, v):
        arrays, where, _ = args["mean"]
        xs = replaced(arrays, loss.differentiable, floats)
        if mesh is not None:
            return split("mean", xs, where, v)
        return case.value(xs, where=where, example_weights=v, reduction="mean")

    mean_args = (case.floats(args["mean"][0]), args["mean"][2])
    return {
        "sum": jax.value_and_grad(total)(case.floats(args["sum"][0])),
        "mean": jax.value_and_grad(mean, argnums=(0, 1))(*mean_args),
    }


def check_contrastive_memory() -> dict[str, str]:
    """The contrastive losses inside shard_map, towers of 512 rows split over 8 devices:
    no array of the compiled training step (temperature and bias too) is as large as a
    device's rows against every column, let alone the N x M similarities."""
    n, d, chunk = 512, 8, 32
    mesh = jax.make_mesh((DATA * VOCAB,), ("batch",), axis_types=(AxisType.Explicit,))
    losses = {
        "contrastive_cross_entropy": jaxce.contrastive_cross_entropy,
        "ntxent_loss": lambda a, b, **kw: jaxce.ntxent_loss(a, **kw),
        "sigmoid_contrastive_loss": jaxce.sigmoid_contrastive_loss,
    }
    limit = n // (DATA * VOCAB) * n
    towers = jax.ShapeDtypeStruct((n, d), jnp.float32, sharding=NamedSharding(mesh, P("batch")))
    scalar = jax.ShapeDtypeStruct((), jnp.float32, sharding=NamedSharding(mesh, P()))
    results = {}
    for name, fn in losses.items():
        hyper = ("temperature", "bias") if name != "ntxent_loss" else ("temperature",)

        def local(a, b, *h, fn=fn, hyper=hyper):
            return fn(a, b, **dict(zip(hyper, h, strict=True)), chunk_size=chunk, axis_name="batch")

        specs = (P("batch"), P("batch"), *(P(),) * len(hyper))
        run = jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=P())
        step = jax.jit(jax.grad(run, argnums=tuple(range(2 + len(hyper)))))
        try:
            hlo = step.lower(towers, towers, *(scalar,) * len(hyper)).compile().as_text()
            shapes = re.findall(r"\b[a-z]+\d*\[(\d+(?:,\d+)*)\]", hlo)
            largest = max(int(np.prod([int(x) for x in s.split(",")])) for s in shapes)
            if largest >= limit:
                raise AssertionError(f"an array of {largest} elements (limit {limit})")
            results[f"{name}/shard_map_memory"] = "ok"
        except Exception:
            results[f"{name}/shard_map_memory"] = error()
    return results


def check_contrastive_gathered() -> dict[str, str]:
    """The contrastive losses on an Explicit mesh whose axes do not split the towers' rows
    evenly (replicated towers, towers split over their features, NT-Xent's pairs split
    across devices): every device gathers the towers and streams the whole batch, and the
    value and every gradient equal the unsharded loss's."""
    mesh = jax.make_mesh((DATA, VOCAB), ("data", "vocab"), axis_types=(AxisType.Explicit,) * 2)
    rng = np.random.default_rng(3)
    a, b = (jnp.asarray(rng.normal(size=(6, VOCAB)), jnp.float32) for _ in "ab")
    losses = {  # name: (loss of (a, b, T), the towers' placement)
        "contrastive_cross_entropy": (
            lambda a, b, t: jaxce.contrastive_cross_entropy(a, b, temperature=t, chunk_size=4),
            P(),
        ),
        "sigmoid_contrastive_loss": (
            lambda a, b, t: jaxce.sigmoid_contrastive_loss(
                a, b, temperature=t, bias=-1.0, chunk_size=4
            ),
            P(None, "vocab"),
        ),
        # 3 rows a device: each device would hold half a pair.
        "ntxent_loss": (
            lambda a, b, t: jaxce.ntxent_loss(a, temperature=t, chunk_size=4),
            P("data"),
        ),
    }
    results = {}
    t = jnp.float32(0.7)
    for name, (loss, spec) in losses.items():
        step = jax.value_and_grad(loss, argnums=(0, 1, 2))
        try:
            placed = [jax.device_put(x, NamedSharding(mesh, spec)) for x in (a, b)]
            _compare(step(a, b, t), jax.jit(step)(*placed, t))
            results[f"{name}/Explicit/gathered"] = "ok"
        except Exception:
            results[f"{name}/Explicit/gathered"] = error()
    return results


def check_vocab_parallel_all_reduces() -> None:
    """Vocabulary-parallel CE with example weights: three all-reduces and no all-gather."""
    mesh = jax.make_mesh((DATA, VOCAB), ("data", "vocab"), axis_types=(AxisType.Explicit,) * 2)
    opts = dict(
        label_smoothing=0.1, z_loss=1e-3, ignore_index=3, reduction="sum", logit_softcap=3.0
    )

    def local(x, y, w, v):
        loss = jaxce.vocab_parallel_softmax_cross_entropy(
            x, y, axis_name="vocab", where=w, example_weights=v, **opts
        )
        return jax.lax.psum(loss, "data")

    def sharded(x, v):
        args = (x, LABELS, WHERE, v)
        specs = (P("data", "vocab"), P("data"), P("data"), P("data"))
        run = jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=P())
        return run(*(jax.reshard(a, s) for a, s in zip(args, specs, strict=True)))

    def full(x, v):
        return jaxce.softmax_cross_entropy(x, LABELS, where=WHERE, example_weights=v, **opts)

    with jax.set_mesh(mesh):
        f = jax.jit(jax.value_and_grad(sharded, argnums=(0, 1)))
        compiled = f.lower(LOGITS, EXAMPLE_WEIGHTS).compile()
        got = compiled(LOGITS, EXAMPLE_WEIGHTS)
    _compare(jax.value_and_grad(full, argnums=(0, 1))(LOGITS, EXAMPLE_WEIGHTS), got)
    hlo = compiled.as_text()
    if largest_all_gather(hlo):
        raise AssertionError("all-gather in the vocabulary-parallel loss")
    reduces = re.findall(r"= (\S+) all-reduce(?:-start)?\(", hlo)
    # pmax + psum of the stacked [4, N/2] statistics forward, the user's psum: none backward.
    if len(reduces) != 3:
        raise AssertionError(f"expected 3 all-reduces; got {reduces}")


def check_shard_map_class_weights() -> None:
    """Class weights, each shard holding its slice: loss and gradients equal the float64 oracle."""
    mesh = jax.make_mesh((DATA, VOCAB), ("data", "vocab"), axis_types=(AxisType.Explicit,) * 2)
    opts = dict(label_smoothing=0.1, where=WHERE)  # "mean": S = sum_i m_i w_{y_i}

    def local(x, y, w):
        return jaxce.vocab_parallel_softmax_cross_entropy(
            x, y, axis_name="vocab", weights=w, **opts
        )

    def sharded(x, w):
        specs = (P(None, "vocab"), P(), P("vocab"))
        run = jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=P())
        return run(*(jax.reshard(a, s) for a, s in zip((x, LABELS, w), specs, strict=True)))

    weights = (0.5 + jnp.arange(V, dtype=jnp.float32)[::-1] / V) ** 2  # uneven across shards
    with jax.set_mesh(mesh):
        got = jax.jit(jax.value_and_grad(sharded, argnums=(0, 1)))(LOGITS, weights)

    def oracle(x, w):
        return reference.softmax_cross_entropy(x, LABELS, weights=w, **opts)

    x, w = np.asarray(LOGITS, np.float64), np.asarray(weights, np.float64)
    want = (
        oracle(x, w),
        (
            central_difference(lambda x: oracle(x, w), x),
            central_difference(lambda w: oracle(x, w), w),
        ),
    )
    _compare(want, got)


def check_shard_map_forward() -> None:
    """Forward mode across vocabulary shards: each shard's tangent terms are summed once."""
    mesh = jax.make_mesh((DATA, VOCAB), ("data", "vocab"), axis_types=(AxisType.Explicit,) * 2)
    opts = dict(z_loss=1e-3, logit_softcap=3.0, reduction="sum", autodiff="forward")

    def local(x, y, v, h):
        loss = jaxce.vocab_parallel_softmax_cross_entropy(
            x, y, axis_name="vocab", example_weights=v, label_smoothing=h, **opts
        )
        return jax.lax.psum(loss, "data")

    def sharded(x, v, h):
        specs = (P("data", "vocab"), P("data"), P("data"), P())
        args = [jax.reshard(a, s) for a, s in zip((x, LABELS, v, h), specs, strict=True)]
        return jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=P())(*args)

    def full(x, v, h):
        return jaxce.softmax_cross_entropy(x, LABELS, example_weights=v, label_smoothing=h, **opts)

    args = (LOGITS, EXAMPLE_WEIGHTS, jnp.float32(0.1))
    tangents = (jnp.cos(LOGITS), jnp.ones(N), jnp.float32(1.0))
    with jax.set_mesh(mesh):
        got = jax.jit(lambda *a: jax.jvp(sharded, a, tangents))(*args)
    _compare(jax.jvp(full, args, tangents), got)


def check_shard_map_stats() -> None:
    # Statistics of vocabulary shards equal the unsharded ones; ties go to the lowest index.
    mesh = jax.make_mesh((DATA, VOCAB), ("data", "vocab"), axis_types=(AxisType.Explicit,) * 2)

    def local(x, y):
        loss, stats = jaxce.vocab_parallel_softmax_cross_entropy(
            x, y, axis_name="vocab", reduction="sum", return_stats=True
        )
        return jax.lax.psum(loss, "data"), stats

    def sharded(x):
        specs = (P("data", "vocab"), P("data"))
        out_specs = (P(), jaxce.CrossEntropyStats(P("data"), P("data"), P("data")))
        run = jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=out_specs)
        loss, stats = run(jax.reshard(x, specs[0]), jax.reshard(LABELS, specs[1]))
        return loss + 0.1 * jnp.sum(stats.logsumexp**2), stats

    def full(x):
        loss, stats = jaxce.softmax_cross_entropy(x, LABELS, reduction="sum", return_stats=True)
        return loss + 0.1 * jnp.sum(stats.logsumexp**2), stats

    with jax.set_mesh(mesh):
        (value, stats), grad = jax.jit(jax.value_and_grad(sharded, has_aux=True))(TIED)
    (want_value, want), want_grad = jax.value_and_grad(full, has_aux=True)(TIED)
    _compare((value, grad, stats.logsumexp), (want_value, want_grad, want.logsumexp))
    np.testing.assert_array_equal(np.asarray(stats.predicted), np.asarray(want.predicted))
    np.testing.assert_array_equal(np.asarray(stats.correct), np.asarray(want.correct))
    if not np.all(np.asarray(stats.predicted)[::2] == 5):
        raise AssertionError("a tie across shards did not go to the lowest index")


def check_shard_map_softcap_gradient() -> None:
    # A traced cap's cotangent is summed over the vocabulary shards exactly once.
    mesh = jax.make_mesh((DATA, VOCAB), ("data", "vocab"), axis_types=(AxisType.Explicit,) * 2)

    def local(x, y, c):
        loss = jaxce.vocab_parallel_softmax_cross_entropy(
            x, y, axis_name="vocab", logit_softcap=c, reduction="sum"
        )
        return jax.lax.psum(loss, "data")

    def sharded(x, c):
        specs = (P("data", "vocab"), P("data"), P())
        run = jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=P())
        return run(jax.reshard(x, specs[0]), jax.reshard(LABELS, specs[1]), c)

    def full(x, c):
        return jaxce.softmax_cross_entropy(x, LABELS, logit_softcap=c, reduction="sum")

    cap = jnp.float32(2.0)
    with jax.set_mesh(mesh):
        got = jax.jit(jax.value_and_grad(sharded, argnums=(0, 1)))(LOGITS, cap)
    _compare(jax.value_and_grad(full, argnums=(0, 1))(LOGITS, cap), got)


def _compare(expected, got) -> None:
    for e, g in zip(jax.tree.leaves(expected), jax.tree.leaves(got), strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(e), rtol=2e-5, atol=2e-6)


def error() -> str:
    return traceback.format_exc(limit=3)[-2000:]


def main() -> None:
    cases = [Case(loss) for loss in registry.LOSSES]
    cases += [Case(loss, stats=True) for loss in registry.LOSSES if loss.stats]
    results = check_meshes([c for c in cases if c.loss.placed])
    results.update(check_shard_maps([c for c in cases if c.loss.axis_name and not c.stats]))
    results.update(check_contrastive_memory())
    results.update(check_contrastive_gathered())
    for key, check in (
        ("all_reduces", check_vocab_parallel_all_reduces),
        ("shard_map_stats", check_shard_map_stats),
        ("shard_map_forward", check_shard_map_forward),
        ("shard_map_class_weights", check_shard_map_class_weights),
        ("shard_map_softcap", check_shard_map_softcap_gradient),
    ):
        key = f"vocab_parallel_softmax_cross_entropy/{key}"
        try:
            check()
            results[key] = "ok"
        except Exception:
            results[key] = error()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
