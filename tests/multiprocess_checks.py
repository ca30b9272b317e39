"""Checks run in each process of a multi-process JAX system started by `tests/multiprocess.py`.

Usage: `python -m tests.multiprocess_checks` in every process (`multiprocess.Processes`
sets the environment that says which). Every process holds the whole of each input (the
same seeds), places it on meshes whose devices belong to all processes, and compares its
own shards of each global result with the one-process value, computed on its first local
device. Prints one JSON object (see `multiprocess.report`) mapping each check to `"ok"` or
an error, and the seconds each group of checks took.
"""

import sys

from tests import multiprocess

if __name__ == "__main__":  # (not when pytest imports the module for its doctests)
    multiprocess.initialize()  # before anything else starts JAX's backend

import contextlib  # noqa: E402
import copy  # noqa: E402
import dataclasses  # noqa: E402
import functools  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402
from jax.sharding import AxisType  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import jaxce  # noqa: E402

# Imported once the backend has started: on import, it asks for 8 host devices per process.
from tests import helpers, registry  # noqa: E402
from tests import sharding_checks as checks  # noqa: E402

DEVICES = multiprocess.DEVICES
RTOL, ATOL = 1e-5, 1e-6  # float32
FUSED = ("linear_softmax_cross_entropy", "linear_distillation_loss")
SHARD_MAP = ("vocab_parallel_softmax_cross_entropy",)
CONTRASTIVE = "contrastive_cross_entropy"


def compare(expected, got) -> None:
    """Each process's shards of the global arrays `got` equal those slices of `expected`."""
    for e, g in zip(jax.tree.leaves(expected), jax.tree.leaves(got), strict=True):
        for shard in g.addressable_shards:
            want = np.asarray(e)[shard.index]
            np.testing.assert_allclose(np.asarray(shard.data), want, rtol=RTOL, atol=ATOL)


def _outcome(expected, got, check=None) -> str:
    """The outcome of a check: "ok", or the error of the one-process program, of the global
    one, of the comparison or of `check` (given the compiled program's text)."""
    for result in (expected, got):
        if isinstance(result, str):
            return result
    try:
        compare({k: expected[0][k] for k in got[0]}, got[0])
        if check is not None:
            check(got[1])
        return "ok"
    except Exception:
        return checks.error()


def _mesh(shape, axis_type=AxisType.Explicit) -> jax.sharding.Mesh:
    return jax.make_mesh(shape, ("data", "vocab"), axis_types=(axis_type,) * 2)


def meshes() -> dict:
    """`{label: (mesh, inside jax.set_mesh)}`: the classes over all devices of all processes
    (Auto, Explicit, and `jax.make_mesh`'s default simply used for placing), and a 2-D mesh
    of the examples over the processes and the classes over each one's devices."""
    n = jax.process_count()
    across = (1, DEVICES)
    two_d = _mesh((n, DEVICES // n))
    for row in two_d.devices:
        if len({d.process_index for d in row}) != 1:
            raise AssertionError(f"a row of the 2-D mesh spans processes: {row}")
    return {
        "Auto": (_mesh(across, AxisType.Auto), True),
        "Explicit": (_mesh(across), True),
        "no_set_mesh": (jax.make_mesh(across, ("data", "vocab")), False),
        "2d": (two_d, True),
    }


def check_placed() -> dict[str, str]:
    """Softmax CE with class weights, `ignore_index`, smoothing and statistics on every mesh,
    the fused heads on the Explicit one that splits the classes over the processes: value
    and every gradient, and no gather of the logits. CLIP on the 2-D mesh, its towers'
    rows split over the processes: each device streams its own rows."""
    softmax = checks.Case(registry.BY_NAME["softmax_cross_entropy"], stats=True)
    fused = [checks.Case(registry.BY_NAME[name]) for name in FUSED]
    clip = checks.Case(registry.BY_NAME[CONTRASTIVE])
    every = [softmax, *fused, clip]
    programs = {c.name: functools.partial(c.program, unweighted=False) for c in every}
    args = {c.name: (c.arrays, c.where, c.v) for c in every}
    expected = checks.run_together(every, programs, args)
    on_mesh = {"Explicit": [softmax, *fused], "2d": [softmax, clip]}
    results = {}
    for label, (mesh, in_context) in meshes().items():
        cases = on_mesh.get(label, [softmax])
        specs = {c.name: (c.specs, P("data"), P("data")) for c in cases}
        placed = jax.tree.map(checks.placer(mesh), {c.name: args[c.name] for c in cases}, specs)
        context = functools.partial(jax.set_mesh, mesh) if in_context else contextlib.nullcontext
        got = checks.run_together(cases, programs, placed, context)
        for c in cases:
            check = functools.partial(_no_gathered_logits, c, mesh)
            if c is clip:
                check = functools.partial(checks.check_batch_split, c, AxisType.Explicit)
            results[f"{c.name}/{label}"] = _outcome(expected[c.name], got[c.name], check)
    return results


def _no_gathered_logits(case: checks.Case, mesh: jax.sharding.Mesh, hlo: str) -> None:
    """No all-gather as large as the logits of one shard of the examples, all classes (the
    statistics' per-device maxima, `N x devices`, are smaller)."""
    limit = checks.N * checks.V // mesh.shape["data"]
    gathered = checks.largest_all_gather(hlo, case.tag)
    if gathered >= limit:
        raise AssertionError(f"all-gather of {gathered} elements (the logits: {limit})")


def check_shard_map() -> dict[str, str]:
    """The losses that take `axis_name`, inside `shard_map` with the classes split over the
    devices of all processes: a sum and a weighted mean, values and gradients, no all-gather."""
    cases = [checks.Case(registry.BY_NAME[name]) for name in SHARD_MAP]
    mesh = _mesh((1, DEVICES))
    args, placed, programs = {}, {}, {}
    for c in cases:
        layouts = checks.shard_map_layouts(c)
        args[c.name] = {"sum": (c.arrays, c.where), "mean": (c.arrays, c.where, c.v)}
        on_mesh = {
            k: jax.tree.map(checks.placer(mesh), a, layouts[k][0]) for k, a in args[c.name].items()
        }
        placed[c.name] = (on_mesh,)
        programs[c.name] = functools.partial(checks.shard_map_program, c, mesh, layouts)
    local = {
        c.name: functools.partial(checks.shard_map_program, _whole(c), None, None) for c in cases
    }
    expected = checks.run_together(cases, local, {name: (a,) for name, a in args.items()})
    got = checks.run_together(cases, programs, placed, functools.partial(jax.set_mesh, mesh))

    def check(hlo):
        if checks.largest_all_gather(hlo):
            raise AssertionError("an all-gather inside shard_map")

    return {f"{c.name}/shard_map": _outcome(expected[c.name], got[c.name], check) for c in cases}


def _whole(case: checks.Case) -> checks.Case:
    """`case` on whole arrays: the vocabulary-parallel loss as `softmax_cross_entropy`
    (its own one-device form would take the first device of the whole system)."""
    if case.loss.placed:
        return case
    whole = copy.copy(case)
    whole.loss = dataclasses.replace(case.loss, fn=jaxce.softmax_cross_entropy, placed=True)
    return whole


def check_calibration() -> None:
    """Each process updates a `CalibrationState` with its own batches; merged, the states
    give the calibration errors of all the data at once."""
    logits, labels = helpers.calibration_data(96, 6)
    n, k = jax.process_count(), jax.process_index()
    state = jaxce.CalibrationState.create(n_bins=8, num_classes=6)
    for rows in np.array_split(np.array_split(np.arange(96), n)[k], 3):
        state = state.update(logits[rows], labels[rows])
    gathered = multihost_utils.process_allgather(state)  # each leaf stacked over processes
    parts = [jax.tree.map(lambda x, p=p: x[p], gathered) for p in range(n)]
    merged = functools.reduce(jaxce.CalibrationState.merge, parts)
    once = jaxce.CalibrationState.create(n_bins=8, num_classes=6).update(logits, labels)
    np.testing.assert_array_equal(merged.counts, once.counts)
    got = [merged.compute(), merged.compute("l2"), merged.compute(classwise=True)]
    want = [jaxce.expected_calibration_error(logits, labels, n_bins=8), once.compute("l2")]
    want.append(once.compute(classwise=True))
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def check_global_mean() -> None:
    """An exact token mean over all processes from each one's micro-batches: the loss of
    each with `denominator=` the global count sums to the one-shot mean, and each one's
    gradient equals its rows of the one-shot gradient."""
    n, k = jax.process_count(), jax.process_index()
    logits, labels = helpers.class_data((12 * n, 10), 10)
    labels[::4] = registry.IGNORE
    labels[: 12 * n // 2 : 3] = registry.IGNORE  # uneven counts across processes
    mine = np.array_split(np.arange(12 * n), n)[k]

    @jax.jit
    def loss(x, y, denominator=None):
        ce = functools.partial(jaxce.softmax_cross_entropy, ignore_index=registry.IGNORE)
        return jax.value_and_grad(lambda x: ce(x, y, denominator=denominator))(x)

    count = np.sum(labels[mine] != registry.IGNORE)
    total_count = multihost_utils.process_allgather(count).sum()
    micro = [loss(logits[rows], labels[rows], total_count) for rows in np.array_split(mine, 2)]
    value = multihost_utils.process_allgather(sum(v for v, _ in micro)).sum()
    want_value, want_grad = loss(logits, labels)
    np.testing.assert_allclose(value, want_value, rtol=RTOL)
    grad = np.concatenate([g for _, g in micro])
    np.testing.assert_allclose(grad, np.asarray(want_grad)[mine], rtol=RTOL, atol=ATOL)


def check_training() -> None:
    """`examples/multihost.py`: 20 data-parallel steps with the vocabulary-sharded fused
    head give the loss trajectory of one device, and the step gathers nothing."""
    sys.path.insert(0, str(multiprocess.ROOT / "examples"))
    import multihost

    here, one_device = multihost.run(steps=20)
    np.testing.assert_allclose(here.losses, one_device.losses, rtol=RTOL)
    gathers = multihost.collectives(here.program, "all-gather")
    assert not gathers, f"the training step gathers {gathers}"


def main() -> None:
    results, times = {}, {}
    for name, check in (
        ("placed", check_placed),
        ("shard_map", check_shard_map),
        ("calibration", check_calibration),
        ("global_mean", check_global_mean),
        ("training", check_training),
    ):
        start = time.perf_counter()
        try:
            results.update(check() or {name: "ok"})
        except Exception:
            results[name] = checks.error()
        times[name] = round(time.perf_counter() - start, 2)
    multiprocess.report({"results": results, "seconds": times})


if __name__ == "__main__":
    main()
