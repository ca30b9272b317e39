"""Every loss of `tests/registry.py` compiles with vocabulary-sharded inputs, on Auto and
Explicit meshes, without an all-gather; its value and gradients (example weights included)
equal the unsharded ones.

The checks live in `tests/sharding_checks.py` and run once in a subprocess, because
the 8 host devices they need must be configured before jax is imported.
"""

import pytest

from tests.helpers import run_on_host_devices
from tests.registry import LOSSES

pytestmark = pytest.mark.host_devices

NAMES = sorted({loss.public for loss in LOSSES})
SHARD_MAP = sorted({loss.public for loss in LOSSES if loss.axis_name})


@pytest.fixture(scope="module")
def results():
    return run_on_host_devices("tests.sharding_checks")


def _failed(results, name, suffix=""):
    cases = {k: v for k, v in results.items() if k.split("/")[0] == name and k.endswith(suffix)}
    assert cases, f"{name} has no {suffix or 'sharding'} check in tests/sharding_checks.py"
    return {k: v for k, v in cases.items() if v != "ok"}


@pytest.mark.parametrize("name", NAMES)
def test_loss_shards_over_vocabulary(name, results):
    failed = _failed(results, name)
    assert not failed, failed


@pytest.mark.parametrize("mesh", ["Auto", "Explicit"])
def test_both_mesh_types_checked(mesh, results):
    names = {k.split("/")[0] for k in results if k.endswith("/" + mesh)}
    assert {"softmax_cross_entropy", "nll_loss", "linear_softmax_cross_entropy"} <= names


# The vocabulary-parallel loss runs inside `shard_map`, which is given its mesh.
@pytest.mark.parametrize(
    ("name", "mesh"),
    [
        (n, m)
        for n in NAMES
        if n != "vocab_parallel_softmax_cross_entropy"
        for m in ("Auto", "Explicit")
    ],
)
def test_loss_runs_on_placed_arrays_without_set_mesh(name, mesh, results):
    # Arrays placed with NamedSharding on `jax.make_mesh`'s mesh, outside `jax.set_mesh`.
    failed = _failed(results, name, f"/{mesh}/no_set_mesh")
    assert not failed, failed


@pytest.mark.parametrize("name", SHARD_MAP)
def test_shard_map_form(name, results):
    failed = _failed(results, name, "/shard_map")
    assert not failed, failed


@pytest.mark.parametrize(
    "name", ["contrastive_cross_entropy", "ntxent_loss", "sigmoid_contrastive_loss"]
)
def test_contrastive_shard_map_holds_no_similarities(name, results):
    # Towers split over 8 devices: no array of the training step is one device's rows
    # against every column (`check_contrastive_memory`).
    assert results[f"{name}/shard_map_memory"] == "ok"


@pytest.mark.parametrize(
    "check",
    [
        "all_reduces",
        "shard_map_stats",
        "shard_map_forward",
        "shard_map_softcap",
        "shard_map_class_weights",
    ],
)
def test_vocabulary_parallel_loss(check, results):
    assert results[f"vocab_parallel_softmax_cross_entropy/{check}"] == "ok"
