"""Vocabulary-sharding checks, run in a subprocess with 8 host devices.

Usage: `python -m tests.sharding_checks` (sets XLA_FLAGS itself before importing
jax). Prints one JSON object mapping `"<loss>/<mesh>"` to `"ok"` or an error.
For each loss, the value and gradients with logits (or the kernel) sharded over
the vocabulary must equal the unsharded ones, and the compiled program must
not all-gather anything as large as a device's slice of the logits.
"""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()

import contextlib  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import traceback  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import jaxce  # noqa: E402

N, V, D = 16, 64, 8
DATA, VOCAB = 2, 4

_keys = jax.random.split(jax.random.key(0), 9)
LOGITS = jax.random.normal(_keys[0], (N, V))
LABELS = jax.random.randint(_keys[1], (N,), 0, V)
PROBS = jax.nn.softmax(jax.random.normal(_keys[2], (N, V)))
BINARY = (jax.random.uniform(_keys[3], (N, V)) < 0.3).astype(jnp.float32)
HIDDEN = jax.random.normal(_keys[4], (N, D))
KERNEL = jax.random.normal(_keys[5], (D, V)) / 3
WHERE = jnp.arange(N) % 5 != 0
WEIGHTS = 0.5 + jnp.arange(V, dtype=jnp.float32) / V
TEACHER = 2 * jax.random.normal(_keys[6], (N, V))  # a teacher's logits
TEACHER_HIDDEN = jax.random.normal(_keys[7], (N, 12))
TEACHER_KERNEL = jax.random.normal(_keys[8], (12, V)) / 4

# Rows whose largest logit appears twice, in different vocabulary shards (columns 5 and 40).
TIED = LOGITS.at[::2, 5].set(9.0).at[::2, 40].set(9.0)


def _with_stats(out):
    """A loss that depends on every statistic: the lse (differentiable) and the argmax."""
    loss, stats = out
    extra = jnp.sum(stats.predicted * (stats.correct + 1)).astype(loss.dtype)
    return loss + 0.1 * jnp.sum(stats.logsumexp**2) + 1e-3 * extra


# name -> (arrays: tuple of (value, spec kind), loss of those arrays). Spec kinds:
# "nv" (examples on data, classes on vocab), "n" (examples on data), "dv" and "vd"
# (a kernel in either layout).
CALLS = {
    "softmax_cross_entropy": (
        (("nv", LOGITS), ("n", LABELS)),
        lambda x, y: jaxce.softmax_cross_entropy(x, y, label_smoothing=0.1, z_loss=1e-3),
    ),
    "softmax_cross_entropy/weights": (
        (("nv", LOGITS), ("n", LABELS)),
        lambda x, y: jaxce.softmax_cross_entropy(x, y, weights=WEIGHTS, label_smoothing=0.1),
    ),
    "softmax_cross_entropy/probs": (
        (("nv", LOGITS), ("nv", PROBS)),
        lambda x, p: jaxce.softmax_cross_entropy(x, p, label_smoothing=0.1),
    ),
    "nll_loss": (
        (("nv", jax.nn.log_softmax(LOGITS)), ("n", LABELS)),
        lambda x, y: jaxce.nll_loss(x, y, where=WHERE),
    ),
    "linear_softmax_cross_entropy": (
        (("n", HIDDEN), ("dv", KERNEL), ("n", LABELS)),
        lambda h, k, y: jaxce.linear_softmax_cross_entropy(
            h, k, y, chunk_size=6, label_smoothing=0.1, z_loss=1e-3, where=WHERE
        ),
    ),
    "linear_softmax_cross_entropy/weights_vd": (
        (("n", HIDDEN), ("vd", KERNEL.T), ("n", LABELS)),
        lambda h, k, y: jaxce.linear_softmax_cross_entropy(
            h, k, y, kernel_layout="VD", weights=WEIGHTS, chunk_size=6, label_smoothing=0.1
        ),
    ),
    "softmax_cross_entropy/stats": (
        (("nv", TIED), ("n", LABELS)),
        lambda x, y: _with_stats(jaxce.softmax_cross_entropy(x, y, return_stats=True)),
    ),
    "linear_softmax_cross_entropy/stats": (
        (("n", HIDDEN), ("dv", KERNEL), ("n", LABELS)),
        lambda h, k, y: _with_stats(
            jaxce.linear_softmax_cross_entropy(h, k, y, chunk_size=6, return_stats=True)
        ),
    ),
    "linear_distillation_loss": (
        (("n", HIDDEN), ("dv", KERNEL), ("nv", TEACHER), ("n", LABELS)),
        lambda h, k, t, y: jaxce.linear_distillation_loss(
            h, k, t, labels=y, alpha=0.3, temperature=2.0, chunk_size=6, where=WHERE
        ),
    ),
    "linear_distillation_loss/jsd_teacher_hidden_vd": (
        (("n", HIDDEN), ("vd", KERNEL.T), ("n", TEACHER_HIDDEN), ("vd", TEACHER_KERNEL.T)),
        lambda h, k, th, tk: jaxce.linear_distillation_loss(
            h,
            k,
            th,
            teacher_kernel=tk,
            kernel_layout="VD",
            divergence="jsd",
            beta=0.3,
            temperature=2.0,
            chunk_size=6,
        ),
    ),
    "linear_distillation_loss/reverse_kl": (
        (("n", HIDDEN), ("dv", KERNEL), ("nv", TEACHER)),
        lambda h, k, t: jaxce.linear_distillation_loss(
            h, k, t, divergence="reverse_kl", temperature=0.5, chunk_size=5
        ),
    ),
    "sigmoid_binary_cross_entropy": (
        (("nv", LOGITS), ("nv", BINARY)),
        lambda x, y: jaxce.sigmoid_binary_cross_entropy(x, y),
    ),
    "binary_cross_entropy": (
        (("nv", jax.nn.sigmoid(LOGITS)), ("nv", BINARY)),
        lambda p, y: jaxce.binary_cross_entropy(p, y),
    ),
    "sigmoid_focal_loss": (
        (("nv", LOGITS), ("nv", BINARY)),
        lambda x, y: jaxce.sigmoid_focal_loss(x, y),
    ),
    "softmax_focal_loss": (
        (("nv", LOGITS), ("n", LABELS)),
        lambda x, y: jaxce.softmax_focal_loss(x, y),
    ),
    "poly1_cross_entropy": (
        (("nv", LOGITS), ("n", LABELS)),
        lambda x, y: jaxce.poly1_cross_entropy(x, y),
    ),
    "kl_divergence": (
        (("nv", LOGITS), ("nv", PROBS)),
        lambda x, t: jaxce.kl_divergence(x, t),
    ),
    "entropy": (
        (("nv", LOGITS),),
        lambda x: jnp.sum(jaxce.entropy(x)),
    ),
    "distillation_loss": (
        (("nv", LOGITS), ("nv", 2 * PROBS)),
        lambda s, t: jaxce.distillation_loss(s, t, temperature=2.0),
    ),
    "jensen_shannon_divergence": (
        (("nv", LOGITS), ("nv", 2 * PROBS)),
        lambda s, t: jaxce.jensen_shannon_divergence(s, t, beta=0.3, temperature=2.0, where=WHERE),
    ),
    "jensen_shannon_divergence/beta0": (
        (("nv", LOGITS), ("nv", 2 * PROBS)),
        lambda s, t: jaxce.jensen_shannon_divergence(s, t, beta=0.0),
    ),
    "reverse_kl_divergence": (
        (("nv", LOGITS), ("nv", 2 * PROBS)),
        lambda s, t: jaxce.reverse_kl_divergence(s, t, temperature=2.0),
    ),
}

# Every loss again with example weights, sharded like the examples (some of them 0, which
# is where=False): the weights' gradient is compared too.
EXAMPLE_WEIGHTS = jnp.where(jnp.arange(N) % 4 == 1, 0.0, 0.5 + jnp.arange(N) / N)
ROW_WEIGHTS = EXAMPLE_WEIGHTS[:, None]  # one per row of elementwise (N, V) losses
ELEMENT_WEIGHTS = ROW_WEIGHTS * BINARY + 0.5
CALLS.update(
    {
        "softmax_cross_entropy/example_weights": (
            (("nv", LOGITS), ("n", LABELS), ("n", EXAMPLE_WEIGHTS)),
            lambda x, y, v: jaxce.softmax_cross_entropy(
                x, y, weights=WEIGHTS, label_smoothing=0.1, z_loss=1e-3, example_weights=v
            ),
        ),
        "softmax_cross_entropy/probs/example_weights": (
            (("nv", LOGITS), ("nv", PROBS), ("n", EXAMPLE_WEIGHTS)),
            lambda x, p, v: jaxce.softmax_cross_entropy(
                x, p, label_smoothing=0.1, example_weights=v
            ),
        ),
        "nll_loss/example_weights": (
            (("nv", jax.nn.log_softmax(LOGITS)), ("n", LABELS), ("n", EXAMPLE_WEIGHTS)),
            lambda x, y, v: jaxce.nll_loss(x, y, weights=WEIGHTS, example_weights=v),
        ),
        "linear_softmax_cross_entropy/example_weights": (
            (("n", HIDDEN), ("dv", KERNEL), ("n", LABELS), ("n", EXAMPLE_WEIGHTS)),
            lambda h, k, y, v: jaxce.linear_softmax_cross_entropy(
                h, k, y, chunk_size=6, label_smoothing=0.1, where=WHERE, example_weights=v
            ),
        ),
        "linear_distillation_loss/example_weights": (
            (("n", HIDDEN), ("dv", KERNEL), ("nv", TEACHER), ("n", EXAMPLE_WEIGHTS)),
            lambda h, k, t, v: jaxce.linear_distillation_loss(
                h, k, t, labels=LABELS, alpha=0.3, chunk_size=6, example_weights=v
            ),
        ),
        "sigmoid_binary_cross_entropy/example_weights": (
            (("nv", LOGITS), ("nv", BINARY), ("nv", ELEMENT_WEIGHTS)),
            lambda x, y, v: jaxce.sigmoid_binary_cross_entropy(x, y, example_weights=v),
        ),
        "binary_cross_entropy/example_weights": (
            (("nv", jax.nn.sigmoid(LOGITS)), ("nv", BINARY), ("n", ROW_WEIGHTS)),
            lambda p, y, v: jaxce.binary_cross_entropy(p, y, example_weights=v),
        ),
        "sigmoid_focal_loss/example_weights": (
            (("nv", LOGITS), ("nv", BINARY), ("n", ROW_WEIGHTS)),
            lambda x, y, v: jaxce.sigmoid_focal_loss(x, y, example_weights=v),
        ),
        "softmax_focal_loss/example_weights": (
            (("nv", LOGITS), ("n", LABELS), ("n", EXAMPLE_WEIGHTS)),
            lambda x, y, v: jaxce.softmax_focal_loss(x, y, weights=WEIGHTS, example_weights=v),
        ),
        "poly1_cross_entropy/example_weights": (
            (("nv", LOGITS), ("n", LABELS), ("n", EXAMPLE_WEIGHTS)),
            lambda x, y, v: jaxce.poly1_cross_entropy(x, y, example_weights=v),
        ),
        "kl_divergence/example_weights": (
            (("nv", LOGITS), ("nv", PROBS), ("n", EXAMPLE_WEIGHTS)),
            lambda x, t, v: jaxce.kl_divergence(x, t, example_weights=v),
        ),
        "entropy/example_weights": (
            (("nv", LOGITS), ("n", EXAMPLE_WEIGHTS)),
            lambda x, v: jaxce.entropy(x, reduction="mean", example_weights=v),
        ),
        "distillation_loss/example_weights": (
            (("nv", LOGITS), ("nv", 2 * PROBS), ("n", EXAMPLE_WEIGHTS)),
            lambda s, t, v: jaxce.distillation_loss(s, t, temperature=2.0, example_weights=v),
        ),
        "jensen_shannon_divergence/example_weights": (
            (("nv", LOGITS), ("nv", 2 * PROBS), ("n", EXAMPLE_WEIGHTS)),
            lambda s, t, v: jaxce.jensen_shannon_divergence(
                s, t, beta=0.3, temperature=2.0, example_weights=v
            ),
        ),
        "reverse_kl_divergence/example_weights": (
            (("nv", LOGITS), ("nv", 2 * PROBS), ("n", EXAMPLE_WEIGHTS)),
            lambda s, t, v: jaxce.reverse_kl_divergence(s, t, temperature=2.0, example_weights=v),
        ),
    }
)

SPECS = {"nv": P("data", "vocab"), "n": P("data"), "dv": P(None, "vocab"), "vd": P("vocab", None)}


def _largest_all_gather(hlo: str) -> int:
    """Elements of the largest all-gather result in compiled HLO text."""
    largest = 0
    for shape in re.findall(r"= \w+\[([\d,]*)\][^ ]* all-gather(?:-start)?\(", hlo):
        largest = max(largest, int(np.prod([int(d) for d in shape.split(",") if d])))
    return largest


def _differentiable(arrays):
    return tuple(i for i, (_, a) in enumerate(arrays) if jnp.issubdtype(a.dtype, jnp.floating))


def check_mesh(name: str, axis_type: AxisType, in_context: bool = True) -> None:
    """One loss on arrays placed on a mesh, inside `jax.set_mesh` or (`in_context=False`)
    simply placed there, as `jax.device_put` on `jax.make_mesh`'s mesh leaves them."""
    arrays, loss = CALLS[name]
    mesh = jax.make_mesh((DATA, VOCAB), ("data", "vocab"), axis_types=(axis_type,) * 2)
    values = [a for _, a in arrays]
    argnums = _differentiable(arrays)
    f = jax.jit(jax.value_and_grad(loss, argnums=argnums))
    expected = f(*values)
    sharded = [jax.device_put(a, NamedSharding(mesh, SPECS[kind])) for kind, a in arrays]
    with jax.set_mesh(mesh) if in_context else contextlib.nullcontext():
        got = f(*sharded)
        hlo = f.lower(*sharded).compile().as_text()
    _compare(expected, got)
    limit = N * V // (DATA * VOCAB)  # one device's slice of the logits
    if name.startswith("linear_") and axis_type == AxisType.Auto:
        # The partitioner cannot see the kernel's sharding from inside the loss, so an
        # Auto mesh gathers the D x V kernels; the N x V logits still never exist.
        limit = N * V
    gathered = _largest_all_gather(hlo)
    if gathered >= limit:
        raise AssertionError(f"all-gather of {gathered} elements (limit {limit})")
    if axis_type == AxisType.Explicit and re.search(r" gather\(", hlo.replace("all-gather", "")):
        # With the classes split over devices the target is picked locally, not gathered.
        raise AssertionError("a gather on an Explicit mesh whose class axis is split")


def check_shard_map(*weights: jax.Array) -> None:
    """The vocabulary-parallel loss; with `weights`, example weights and their gradient too."""
    mesh = jax.make_mesh((DATA, VOCAB), ("data", "vocab"), axis_types=(AxisType.Explicit,) * 2)
    opts = dict(
        label_smoothing=0.1, z_loss=1e-3, ignore_index=3, reduction="sum", logit_softcap=3.0
    )

    def local(x, y, w, *v):
        loss = jaxce.vocab_parallel_softmax_cross_entropy(
            x, y, axis_name="vocab", where=w, example_weights=v[0] if v else None, **opts
        )
        return jax.lax.psum(loss, "data")

    def sharded(x, *v):
        args = (x, LABELS, WHERE, *v)
        specs = (P("data", "vocab"), P("data"), P("data")) + (P("data"),) * len(v)
        run = jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=P())
        return run(*(jax.reshard(a, s) for a, s in zip(args, specs, strict=True)))

    def full(x, *v):
        return jaxce.softmax_cross_entropy(
            x, LABELS, where=WHERE, example_weights=v[0] if v else None, **opts
        )

    argnums = tuple(range(1 + len(weights)))
    with jax.set_mesh(mesh):
        f = jax.jit(jax.value_and_grad(sharded, argnums=argnums))
        got = f(LOGITS, *weights)
        hlo = f.lower(LOGITS, *weights).compile().as_text()
    _compare(jax.value_and_grad(full, argnums=argnums)(LOGITS, *weights), got)
    if _largest_all_gather(hlo):
        raise AssertionError("all-gather in the vocabulary-parallel loss")
    reduces = re.findall(r"= (\S+) all-reduce(?:-start)?\(", hlo)
    # pmax + psum of the stacked [4, N/2] statistics forward, the user's psum: none backward.
    if len(reduces) != 3:
        raise AssertionError(f"expected 3 all-reduces; got {reduces}")


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


def check_linear_shard_map(*weights: jax.Array) -> None:
    """The fused head inside shard_map; with `weights`, example weights and their gradient too."""
    mesh = jax.make_mesh((DATA, VOCAB), ("data", "vocab"), axis_types=(AxisType.Auto,) * 2)
    opts = dict(chunk_size=5, label_smoothing=0.1, reduction="sum")

    def local(h, k, y, *v):
        loss = jaxce.linear_softmax_cross_entropy(
            h, k, y, axis_name="vocab", example_weights=v[0] if v else None, **opts
        )
        return jax.lax.psum(loss, "data")

    def sharded(h, k, *v):
        specs = (P("data"), P(None, "vocab"), P("data")) + (P("data"),) * len(v)
        return jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=P())(h, k, LABELS, *v)

    def full(h, k, *v):
        return jaxce.linear_softmax_cross_entropy(
            h, k, LABELS, example_weights=v[0] if v else None, **opts
        )

    argnums = tuple(range(2 + len(weights)))
    f = jax.jit(jax.value_and_grad(sharded, argnums=argnums))
    args = (HIDDEN, KERNEL, *weights)
    _compare(jax.value_and_grad(full, argnums=argnums)(*args), f(*args))
    if _largest_all_gather(f.lower(*args).compile().as_text()):
        raise AssertionError("all-gather in the vocabulary-parallel linear head")


def check_linear_distill_shard_map() -> None:
    mesh = jax.make_mesh((DATA, VOCAB), ("data", "vocab"), axis_types=(AxisType.Auto,) * 2)
    opts = dict(divergence="jsd", beta=0.4, temperature=2.0, alpha=0.2, chunk_size=5)

    def local(h, k, t, y):
        loss = jaxce.linear_distillation_loss(
            h, k, t, labels=y, axis_name="vocab", reduction="sum", **opts
        )
        return jax.lax.psum(loss, "data")

    def sharded(h, k):
        specs = (P("data"), P(None, "vocab"), P("data", "vocab"), P("data"))
        run = jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=P())
        return run(h, k, TEACHER, LABELS)

    def full(h, k):
        return jaxce.linear_distillation_loss(h, k, TEACHER, labels=LABELS, reduction="sum", **opts)

    f = jax.jit(jax.value_and_grad(sharded, argnums=(0, 1)))
    _compare(jax.value_and_grad(full, argnums=(0, 1))(HIDDEN, KERNEL), f(HIDDEN, KERNEL))
    if _largest_all_gather(f.lower(HIDDEN, KERNEL).compile().as_text()):
        raise AssertionError("all-gather in the vocabulary-parallel distillation head")


def _compare(expected, got) -> None:
    for e, g in zip(jax.tree.leaves(expected), jax.tree.leaves(got), strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(e), rtol=2e-5, atol=2e-6)


def main() -> None:
    results = {}
    cases = [
        (name, t, in_context)
        for name in CALLS
        for t in (AxisType.Auto, AxisType.Explicit)
        for in_context in (True, False)
    ]
    for name, axis_type, in_context in cases:
        key = f"{name}/{axis_type.name}" + ("" if in_context else "/no_set_mesh")
        try:
            check_mesh(name, axis_type, in_context)
            results[key] = "ok"
        except Exception:
            results[key] = traceback.format_exc(limit=3)[-2000:]
    for name, check in (
        ("vocab_parallel_softmax_cross_entropy", check_shard_map),
        ("linear_softmax_cross_entropy", check_linear_shard_map),
    ):
        for suffix, weights in (("", ()), ("/example_weights", (EXAMPLE_WEIGHTS,))):
            key = f"{name}/shard_map{suffix}"
            try:
                check(*weights)
                results[key] = "ok"
            except Exception:
                results[key] = traceback.format_exc()[-2000:]
    for key, check in (
        ("vocab_parallel_softmax_cross_entropy/shard_map_stats", check_shard_map_stats),
        ("vocab_parallel_softmax_cross_entropy/shard_map_forward", check_shard_map_forward),
        ("linear_distillation_loss/shard_map", check_linear_distill_shard_map),
        (
            "vocab_parallel_softmax_cross_entropy/shard_map_softcap",
            check_shard_map_softcap_gradient,
        ),
    ):
        try:
            check()
            results[key] = "ok"
        except Exception:
            results[key] = traceback.format_exc()[-2000:]
    print(json.dumps(results))


if __name__ == "__main__":
    main()
