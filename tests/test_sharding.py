"""Every loss compiles with vocabulary-sharded logits, Auto and Explicit meshes, no all-gather.

The checks live in `tests/sharding_checks.py` and run once in a subprocess, because
the 8 host devices they need must be configured before jax is imported.
"""

import pytest

import jaxce
from tests.helpers import run_on_host_devices

# Public names that take no class-sharded logits (option holders, label helpers, metrics
# checked elsewhere) or whose checks run under another key.
NOT_LOSSES = {
    "BCEWithLogitsLoss",
    "CalibrationCurve",
    "CrossEntropyLoss",
    "CrossEntropyStats",
    "FocalLoss",
    "calibration_curve",
    "expected_calibration_error",
    "fit_temperature",
    "log_softmax",
    "smooth_labels",
    "softmax",
}
# Calibration measures take no gradient and are checked under shard_map in their own tests.
CALIBRATION = {n for n in jaxce.__all__ if getattr(jaxce, n).__module__.startswith("jaxce._calib")}
LOSSES = sorted(set(jaxce.__all__) - NOT_LOSSES - CALIBRATION)


@pytest.fixture(scope="module")
def results():
    return run_on_host_devices("tests.sharding_checks")


def _cases(name, results):
    return {k: v for k, v in results.items() if k.split("/")[0] == name}


@pytest.mark.parametrize("name", LOSSES)
def test_loss_shards_over_vocabulary(name, results):
    cases = _cases(name, results)
    assert cases, f"{name} has no entry in tests/sharding_checks.py CALLS"
    failed = {k: v for k, v in cases.items() if v != "ok"}
    assert not failed, failed


@pytest.mark.parametrize("name", LOSSES)
def test_loss_with_example_weights_shards_over_vocabulary(name, results):
    # Weights sharded like the examples; their gradient is compared too.
    cases = {k: v for k, v in _cases(name, results).items() if "/example_weights" in k}
    assert cases, f"{name} has no example_weights entry in tests/sharding_checks.py"
    failed = {k: v for k, v in cases.items() if v != "ok"}
    assert not failed, failed


@pytest.mark.parametrize("mesh", ["Auto", "Explicit"])
def test_both_mesh_types_checked(mesh, results):
    names = {k.split("/")[0] for k in results if k.endswith("/" + mesh)}
    assert {"softmax_cross_entropy", "nll_loss", "linear_softmax_cross_entropy"} <= names


# The vocabulary-parallel loss runs inside `shard_map`, which is given its mesh.
@pytest.mark.parametrize("mesh", ["Auto", "Explicit"])
@pytest.mark.parametrize("name", [n for n in LOSSES if n != "vocab_parallel_softmax_cross_entropy"])
def test_loss_runs_on_placed_arrays_without_set_mesh(name, mesh, results):
    # Arrays placed with NamedSharding on `jax.make_mesh`'s mesh, outside `jax.set_mesh`.
    suffix = f"/{mesh}/no_set_mesh"
    cases = {k: v for k, v in _cases(name, results).items() if k.endswith(suffix)}
    assert cases, f"{name} has no {suffix} entry in tests/sharding_checks.py"
    failed = {k: v for k, v in cases.items() if v != "ok"}
    assert not failed, failed


def test_shard_map_form(results):
    assert results["vocab_parallel_softmax_cross_entropy/shard_map"] == "ok"
    assert results["vocab_parallel_softmax_cross_entropy/shard_map_softcap"] == "ok"
    assert results["vocab_parallel_softmax_cross_entropy/shard_map_stats"] == "ok"
    assert results["vocab_parallel_softmax_cross_entropy/shard_map_forward"] == "ok"
