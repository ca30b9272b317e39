"""CalibrationState over batches and devices, and the bootstrap interval.

The shard_map check runs in a subprocess (`python -m tests.test_calibration_streaming`),
because the 8 host devices it needs must be configured before jax is imported.
"""

import json
import os

if __name__ == "__main__":
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from jax import lax  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import jaxce  # noqa: E402
from tests import reference as ref  # noqa: E402
from tests.helpers import calibration_data, run_on_host_devices  # noqa: E402

NORMS = ("l1", "l2", "max")


def _errors(compute):
    """Every error a state computes: (norm, classwise, debiased) -> value."""
    options = [(n, c, False) for n in NORMS for c in (False, True)]
    options += [("l2", False, True), ("l2", True, True)]
    return {o: float(compute(*o)) for o in options}


def _one_shot(logits, labels, where=None):
    def compute(norm, classwise, debiased):
        return jaxce.expected_calibration_error(
            logits,
            labels,
            n_bins=10,
            norm=norm,
            classwise=classwise,
            debiased=debiased,
            where=where,
        )

    return _errors(compute)


def _stream(batches, num_classes=4):
    state = jaxce.CalibrationState.create(n_bins=10, num_classes=num_classes)
    for batch in batches:
        state = state.update(*batch)
    return state


def _assert_same(got, expected, rtol=1e-5):
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=rtol, atol=1e-6, err_msg=str(key))


LOGITS, LABELS = calibration_data(64, 4, seed=1)


@settings(max_examples=15, deadline=None)
@given(cuts=st.lists(st.sampled_from([8, 16, 24, 32, 40, 48, 56]), max_size=4, unique=True))
def test_any_split_into_batches_equals_one_shot(cuts):
    bounds = [0, *sorted(cuts), 64]
    batches = [(LOGITS[a:b], LABELS[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    state = _stream(batches)
    _assert_same(_errors(state.compute), _one_shot(LOGITS, LABELS))


def test_update_with_where_and_odd_batches():
    logits, labels = calibration_data(50, 4, seed=2)
    where = np.random.default_rng(3).random(50) < 0.6
    state = jaxce.CalibrationState.create(n_bins=10, num_classes=4)
    for a, b in [(0, 7), (7, 7), (7, 33), (33, 50)]:  # one of them empty
        state = state.update(logits[a:b], labels[a:b], where=where[a:b])
    _assert_same(_errors(state.compute), _one_shot(logits, labels, where))
    assert int(state.counts.sum()) == where.sum()
    np.testing.assert_array_equal(state.class_counts.sum(-1), np.full(4, where.sum()))


def test_state_matches_oracle():
    logits, labels = calibration_data(80, 5, seed=4)
    state = jaxce.CalibrationState.create(n_bins=10, num_classes=5).update(logits, labels)
    for norm in NORMS:
        for classwise in (False, True):
            np.testing.assert_allclose(
                state.compute(norm, classwise=classwise),
                ref.calibration_error(logits, labels, n_bins=10, norm=norm, classwise=classwise),
                rtol=1e-5,
                atol=1e-6,
            )


def test_merge_equals_update_and_is_symmetric():
    logits, labels = calibration_data(60, 4, seed=5)
    empty = jaxce.CalibrationState.create(n_bins=10, num_classes=4)
    a, b = empty.update(logits[:25], labels[:25]), empty.update(logits[25:], labels[25:])
    both = empty.update(logits, labels)
    for merged in (a.merge(b), b.merge(a), a.merge(b).merge(empty)):
        for x, y in zip(jax.tree.leaves(merged), jax.tree.leaves(both), strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-6)
    assert a.update(logits[25:], labels[25:]).compute() == pytest.approx(float(both.compute()))


def test_state_is_a_pytree_for_jit_and_scan():
    logits, labels = calibration_data(64, 4, seed=6)
    state = jaxce.CalibrationState.create(n_bins=10, num_classes=4)

    def step(state, batch):
        return state.update(*batch), None

    batches = (logits.reshape(8, 8, 4), labels.reshape(8, 8))
    scanned, _ = jax.jit(lambda s, b: lax.scan(step, s, b))(state, batches)
    assert isinstance(scanned, jaxce.CalibrationState)
    _assert_same(_errors(scanned.compute), _one_shot(logits, labels))
    summed = jax.tree.map(lambda x: x.sum(0), jax.vmap(state.update)(*batches))
    _assert_same(_errors(summed.compute), _one_shot(logits, labels))


def test_empty_state_and_empty_batches_give_zero():
    state = jaxce.CalibrationState.create(n_bins=5, num_classes=3)
    assert all(v == 0 for v in _errors(state.compute).values())
    state = state.update(np.zeros((0, 3), np.float32), np.zeros(0, np.int32))
    state = state.update(
        np.ones((4, 3), np.float32), np.zeros(4, np.int32), where=np.zeros(4, bool)
    )
    assert all(v == 0 for v in _errors(state.compute).values())


def test_top_label_state_without_classes():
    logits, labels = calibration_data(30, 6, seed=7)
    state = jaxce.CalibrationState.create(n_bins=10).update(logits, labels)
    assert state.class_confidence is None and state.num_classes is None
    assert len(jax.tree.leaves(state)) == 3
    np.testing.assert_allclose(
        state.compute("l2"),
        jaxce.expected_calibration_error(logits, labels, n_bins=10, norm="l2"),
        rtol=1e-6,
    )
    with pytest.raises(ValueError, match="num_classes"):
        state.compute(classwise=True)


def test_bad_labels_poison_the_state():
    logits, labels = calibration_data(10, 3, seed=8)
    labels[3] = 7
    state = jaxce.CalibrationState.create(n_bins=4).update(logits, labels)
    assert np.isnan(state.compute())


def test_float64_state(x64):
    logits, labels = calibration_data(40, 3, seed=9)
    state = jaxce.CalibrationState.create(n_bins=10, num_classes=3, dtype=jnp.float64)
    state = state.update(jnp.asarray(logits, jnp.float64), labels)
    assert state.compute().dtype == jnp.float64
    np.testing.assert_allclose(
        state.compute(classwise=True),
        ref.calibration_error(logits, labels, n_bins=10, classwise=True),
        rtol=1e-12,
    )


def test_state_errors_name_the_argument():
    logits, labels = calibration_data(6, 3)
    with pytest.raises(ValueError, match="n_bins"):
        jaxce.CalibrationState.create(n_bins=0)
    with pytest.raises(ValueError, match="num_classes"):
        jaxce.CalibrationState.create(num_classes=0)
    with pytest.raises(TypeError, match="dtype"):
        jaxce.CalibrationState.create(dtype=jnp.int32)
    state = jaxce.CalibrationState.create(n_bins=4, num_classes=4)
    with pytest.raises(ValueError, match="4 classes"):
        state.update(logits, labels)
    with pytest.raises(ValueError, match="n_bins"):
        state.merge(jaxce.CalibrationState.create(n_bins=5, num_classes=4))
    with pytest.raises(ValueError, match="num_classes"):
        state.merge(jaxce.CalibrationState.create(n_bins=4))
    with pytest.raises(ValueError, match="norm"):
        state.compute("l3")
    with pytest.raises(ValueError, match="debiased"):
        state.compute("l1", debiased=True)


# The bootstrap interval.


def test_bootstrap_estimate_is_the_point_estimate():
    logits, labels = calibration_data(300, 5, seed=10)
    key = jax.random.key(0)
    for options in ({"binning": "mass", "n_bins": 8}, {"classwise": True, "norm": "l2"}):
        estimate, low, high = jaxce.bootstrap_calibration_error(
            key, logits, labels, num_resamples=50, **options
        )
        np.testing.assert_allclose(
            estimate, jaxce.expected_calibration_error(logits, labels, **options), rtol=1e-6
        )
        assert low <= high


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_bootstrap_interval_contains_the_estimate(seed):
    # Over-confident logits; the shape of test_bootstrap_interval_narrows_as_n_grows.
    logits, labels = calibration_data(1000, 5, seed=seed, scale=2.5, hit_rate=0.5)
    estimate, low, high = jaxce.bootstrap_calibration_error(jax.random.key(seed), logits, labels)
    assert estimate > 0.1
    assert low < estimate < high


def test_bootstrap_interval_narrows_as_n_grows():
    widths = []
    for n in (250, 1000, 4000):
        logits, labels = calibration_data(n, 5, seed=14, scale=2.0)
        _, low, high = jaxce.bootstrap_calibration_error(jax.random.key(1), logits, labels)
        widths.append(float(high - low))
    # The standard error falls like 1/sqrt(n): about half per fourfold n.
    assert widths[1] < 0.75 * widths[0] and widths[2] < 0.75 * widths[1], widths


def test_bootstrap_is_reproducible():
    logits, labels = calibration_data(200, 4, seed=15)
    first = jaxce.bootstrap_calibration_error(jax.random.key(3), logits, labels)
    again = jaxce.bootstrap_calibration_error(jax.random.key(3), logits, labels)
    other = jaxce.bootstrap_calibration_error(jax.random.key(4), logits, labels)
    np.testing.assert_array_equal(first, again)
    assert first[1:] != other[1:]
    raw = jaxce.bootstrap_calibration_error(jax.random.PRNGKey(3), logits, labels)
    assert raw[0] == first[0]
    jitted = jax.jit(jaxce.bootstrap_calibration_error)(jax.random.key(3), logits, labels)
    np.testing.assert_allclose(jitted, first, rtol=1e-6)


def test_bootstrap_agrees_with_a_numpy_bootstrap():
    """Same distribution, independent random numbers: the quantiles agree to Monte Carlo error."""
    logits, labels = calibration_data(400, 4, seed=16, scale=2.0)
    options = {"n_bins": 10, "norm": "l2", "binning": "mass"}
    estimate, low, high = jaxce.bootstrap_calibration_error(
        jax.random.key(5), logits, labels, num_resamples=1000, confidence=0.9, **options
    )
    expected = ref.bootstrap_calibration_error(
        logits, labels, np.random.default_rng(5), 1000, confidence=0.9, **options
    )
    np.testing.assert_allclose(estimate, expected[0], rtol=1e-5)
    width = expected[2] - expected[1]
    assert abs(low - expected[1]) < 0.1 * width and abs(high - expected[2]) < 0.1 * width


def test_bootstrap_resamples_only_counted_examples():
    """Identical counted examples: a resample differs from them only by drawing a masked one."""
    logits = np.concatenate(
        [np.tile([[2.0, 0.0, 0.0]], (50, 1)), np.tile([[0.0, 6.0, 0.0]], (50, 1))]
    )
    labels = np.concatenate([np.zeros(50, np.int32), np.zeros(50, np.int32)])
    where = np.arange(100) < 50
    estimate, low, high = jaxce.bootstrap_calibration_error(
        jax.random.key(6), logits.astype(np.float32), labels, where=where
    )
    assert estimate > 0.2
    np.testing.assert_allclose([low, high], [estimate, estimate], rtol=1e-6)


def test_bootstrap_with_nothing_counted_gives_zeros():
    logits, labels = calibration_data(10, 3, seed=17)
    key = jax.random.key(7)
    got = jaxce.bootstrap_calibration_error(key, logits, labels, where=np.zeros(10, bool))
    assert [float(v) for v in got] == [0.0, 0.0, 0.0]
    empty = jaxce.bootstrap_calibration_error(
        key, np.zeros((0, 3), np.float32), np.zeros(0, np.int32), classwise=True
    )
    assert [float(v) for v in empty] == [0.0, 0.0, 0.0]


def test_bootstrap_errors_name_the_argument():
    logits, labels = calibration_data(6, 3)
    key = jax.random.key(0)
    with pytest.raises(TypeError, match="n_binz"):
        jaxce.bootstrap_calibration_error(key, logits, labels, n_binz=4)
    with pytest.raises(ValueError, match="num_resamples"):
        jaxce.bootstrap_calibration_error(key, logits, labels, num_resamples=0)
    with pytest.raises(ValueError, match="confidence"):
        jaxce.bootstrap_calibration_error(key, logits, labels, confidence=1.0)
    with pytest.raises(TypeError, match="confidence"):
        jaxce.bootstrap_calibration_error(key, logits, labels, confidence="high")
    with pytest.raises(ValueError, match="debiased"):
        jaxce.bootstrap_calibration_error(key, logits, labels, debiased=True)


# Devices.


@pytest.fixture(scope="module")
def sharded():
    return run_on_host_devices("tests.test_calibration_streaming")


@pytest.mark.host_devices
def test_psum_of_shard_states_equals_one_shot(sharded):
    assert sharded["devices"] == 8
    got = {tuple(json.loads(key)): value for key, value in sharded["sharded"].items()}
    _assert_same(got, _one_shot(*_sharded_data()))


def _sharded_data():
    logits, labels = calibration_data(96, 4, seed=20)
    where = np.arange(96) % 7 != 3
    return logits, labels, where


def _main():
    """Each of 8 devices streams its shard of the batch; psum of the states, then compute."""
    logits, labels, where = _sharded_data()
    mesh = jax.make_mesh((8,), ("data",))

    def local(x, y, m):
        state = jaxce.CalibrationState.create(n_bins=10, num_classes=4).update(x, y, where=m)
        return jax.tree.map(lambda leaf: lax.psum(leaf, "data"), state)

    run = jax.jit(
        jax.shard_map(local, mesh=mesh, in_specs=(P("data"), P("data"), P("data")), out_specs=P())
    )
    spec = NamedSharding(mesh, P("data"))
    state = run(*(jax.device_put(a, spec) for a in (logits, labels, where)))
    sharded = _errors(state.compute)
    print(
        json.dumps(
            {
                "devices": len(jax.devices()),
                "sharded": {json.dumps(list(k)): v for k, v in sharded.items()},
            }
        )
    )


if __name__ == "__main__":
    _main()
