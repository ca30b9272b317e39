"""Calibration error, reliability curves and temperature scaling: oracles, edge cases, errors."""

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.experimental import checkify

import jaxce
from tests import reference as ref
from tests.helpers import calibration_data

NORMS = ("l1", "l2", "max")


def _calibrated(n, k, seed=0, scale=2.0):
    """A calibrated model: labels drawn from softmax(logits) (Gumbel-max sampling)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k)) * scale
    labels = np.argmax(logits + rng.gumbel(size=(n, k)), axis=-1).astype(np.int32)
    return logits.astype(np.float32), labels


def _nll(logits, labels, t, where=None):
    return ref.temperature_nll(np.asarray(logits, np.float64), labels, float(t), where)


@pytest.fixture(scope="module")
def calibrated_20k():
    return _calibrated(20_000, 10, seed=7)


# Expected calibration error and the curve against the float64 oracle.


@pytest.mark.parametrize("mode", ["eager", "jit"])
@pytest.mark.parametrize("n_bins", [1, 4, 15])
@pytest.mark.parametrize("norm", NORMS)
def test_ece_matches_oracle(norm, n_bins, mode):
    logits, labels = calibration_data(400, 6, seed=n_bins)
    fn = jaxce.expected_calibration_error
    if mode == "jit":
        got = jax.jit(lambda x, y: fn(x, y, n_bins=n_bins, norm=norm))(logits, labels)
    else:
        got = fn(logits, labels, n_bins=n_bins, norm=norm)
    expected = ref.expected_calibration_error(logits, labels, n_bins, norm)
    assert got.dtype == jnp.float32 and got.shape == ()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_op_by_op_matches_oracle():
    logits, labels = calibration_data(100, 4, seed=2)
    with jax.disable_jit():
        for norm in NORMS:
            np.testing.assert_allclose(
                jaxce.expected_calibration_error(logits, labels, n_bins=7, norm=norm),
                ref.expected_calibration_error(logits, labels, 7, norm),
                rtol=1e-5,
            )
        curve = jaxce.calibration_curve(logits, labels, n_bins=7)
    np.testing.assert_array_equal(curve.counts, ref.calibration_bins(logits, labels, 7)[2])


@pytest.mark.parametrize("n_bins", [1, 3, 10, 15])
def test_curve_matches_oracle(n_bins):
    logits, labels = calibration_data(300, 5, seed=10 + n_bins, scale=1.5)
    curve = jaxce.calibration_curve(logits, labels, n_bins=n_bins)
    conf, acc, count = ref.calibration_bins(logits, labels, n_bins)
    assert isinstance(curve, jaxce.CalibrationCurve)
    assert curve.counts.dtype == jnp.int32 and curve.counts.shape == (n_bins,)
    np.testing.assert_array_equal(curve.counts, count)
    np.testing.assert_allclose(curve.confidence, conf, rtol=1e-5, equal_nan=True)
    np.testing.assert_allclose(curve.accuracy, acc, rtol=1e-6, equal_nan=True)


def test_curve_and_ece_agree():
    logits, labels = calibration_data(300, 5, seed=3)
    curve = jaxce.calibration_curve(logits, labels, n_bins=10)
    full = np.asarray(curve.counts) > 0
    share = np.asarray(curve.counts)[full] / 300
    gap = np.abs(np.asarray(curve.accuracy) - np.asarray(curve.confidence))[full]
    for norm, value in [
        ("l1", np.sum(share * gap)),
        ("l2", np.sqrt(np.sum(share * gap**2))),
        ("max", gap.max()),
    ]:
        got = jaxce.expected_calibration_error(logits, labels, n_bins=10, norm=norm)
        np.testing.assert_allclose(got, value, rtol=1e-5)


def test_ece_hand_computed():
    logits = np.array([[3.0, 0.0], [2.0, 0.0], [0.0, 1.0], [1.0, 0.0]], np.float32)
    labels = np.array([0, 1, 1, 0])
    s = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    # Bin 3 of 5: confidences s(1), s(1), both right; bin 4: s(3) right, s(2) wrong.
    gap3, gap4 = 1 - s(1.0), abs(0.5 - (s(3.0) + s(2.0)) / 2)
    expected = {
        "l1": 0.5 * gap3 + 0.5 * gap4,
        "l2": np.sqrt(0.5 * gap3**2 + 0.5 * gap4**2),
        "max": max(gap3, gap4),
    }
    for norm in NORMS:
        got = jaxce.expected_calibration_error(logits, labels, n_bins=5, norm=norm)
        np.testing.assert_allclose(got, expected[norm], rtol=1e-6)


# The binning rule.


@pytest.mark.parametrize(("k", "n_bins", "expected_bin"), [(4, 4, 1), (4, 8, 2), (2, 2, 1)])
def test_bin_edge_goes_up(k, n_bins, expected_bin):
    """Confidence exactly b / B belongs to bin b (left-closed bins)."""
    logits = np.zeros((3, k), np.float32)
    curve = jaxce.calibration_curve(logits, np.zeros(3, np.int32), n_bins=n_bins)
    expected = np.zeros(n_bins, np.int32)
    expected[expected_bin] = 3
    np.testing.assert_array_equal(curve.counts, expected)
    np.testing.assert_allclose(curve.confidence[expected_bin], 1 / k, rtol=0)


def test_confidence_one_goes_to_last_bin():
    logits = np.array([[200.0, 0.0, 0.0], [0.0, -300.0, 150.0]], np.float32)
    curve = jaxce.calibration_curve(logits, np.array([0, 1], np.int32), n_bins=7)
    np.testing.assert_array_equal(curve.counts, [0, 0, 0, 0, 0, 0, 2])
    np.testing.assert_array_equal(curve.confidence[-1], 1.0)
    np.testing.assert_array_equal(curve.accuracy[-1], 0.5)
    assert np.all(np.isnan(curve.confidence[:-1])) and np.all(np.isnan(curve.accuracy[:-1]))


@pytest.mark.parametrize("norm", NORMS)
def test_matches_torchmetrics_formula_below_one(norm):
    """Without confidence 1.0 the bins are torchmetrics' (bucketize, right=True)."""
    logits, labels = calibration_data(2000, 10, seed=5, scale=1.0)
    conf, correct = ref.top_label(logits, labels)
    assert conf.max() < 1.0
    expected = ref.torchmetrics_calibration_error(conf, correct, 15, norm)
    got = jaxce.expected_calibration_error(logits, labels, norm=norm)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_differs_from_torchmetrics_at_confidence_one():
    """torchmetrics gives confidence 1.0 a bin of its own; jaxce keeps it in the last bin."""
    logits = np.array([[100.0, 0.0], [1.0, 0.0]], np.float32)
    labels = np.array([1, 0])
    s1 = 1 / (1 + np.exp(-1.0))
    got = jaxce.expected_calibration_error(logits, labels, n_bins=2)
    np.testing.assert_allclose(got, abs(0.5 - (1 + s1) / 2), rtol=1e-6)
    conf, correct = ref.top_label(logits, labels)
    torchmetrics = ref.torchmetrics_calibration_error(conf, correct, 2)
    np.testing.assert_allclose(torchmetrics, 0.5 * (1 - s1) + 0.5 * 1.0, rtol=1e-6)


def test_confidence_is_softmax_not_values():
    """Rows that look like probabilities are still logits."""
    probs_like = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]], np.float32)
    labels = np.array([0, 1])
    curve = jaxce.calibration_curve(probs_like, labels, n_bins=10)
    # softmax maxima 0.464 and 0.502 (bins 4 and 5), not 0.7 and 0.8 (bins 7 and 8).
    np.testing.assert_array_equal(curve.counts, [0, 0, 0, 0, 1, 1, 0, 0, 0, 0])
    conf, _ = ref.top_label(probs_like, labels)
    np.testing.assert_allclose(curve.confidence[4:6], conf, rtol=1e-6)


# Masks, axes, batching, dtypes.


@pytest.mark.parametrize("norm", NORMS)
def test_where_equals_slicing(norm):
    logits, labels = calibration_data(300, 5, seed=11)
    where = np.random.default_rng(1).random(300) < 0.6
    got = jaxce.expected_calibration_error(logits, labels, norm=norm, where=where)
    expected = jaxce.expected_calibration_error(logits[where], labels[where], norm=norm)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    np.testing.assert_allclose(
        got, ref.expected_calibration_error(logits, labels, 15, norm, where), rtol=1e-5
    )
    curve = jaxce.calibration_curve(logits, labels, where=where)
    sliced = jaxce.calibration_curve(logits[where], labels[where])
    for a, b in zip(curve, sliced, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, equal_nan=True)


def test_all_masked():
    logits, labels = calibration_data(10, 3)
    where = np.zeros(10, bool)
    for norm in NORMS:
        assert jaxce.expected_calibration_error(logits, labels, norm=norm, where=where) == 0
    curve = jaxce.calibration_curve(logits, labels, n_bins=4, where=where)
    np.testing.assert_array_equal(curve.counts, np.zeros(4))
    assert np.all(np.isnan(curve.confidence)) and np.all(np.isnan(curve.accuracy))
    assert jaxce.fit_temperature(logits, labels, where=where) == 1.0


def test_axis_and_extra_example_axes():
    logits, labels = calibration_data(60, 4, seed=12)
    expected = jaxce.expected_calibration_error(logits, labels, n_bins=6)
    got = jaxce.expected_calibration_error(logits.T, labels, n_bins=6, axis=0)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    got = jaxce.expected_calibration_error(
        logits.reshape(3, 20, 4), labels.reshape(3, 20), n_bins=6
    )
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    nchw = np.moveaxis(logits.reshape(3, 4, 5, 4), -1, 1)
    curve = jaxce.calibration_curve(nchw, labels.reshape(3, 4, 5), n_bins=6, axis=1)
    for a, b in zip(curve, jaxce.calibration_curve(logits, labels, n_bins=6), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, equal_nan=True)
    t = jaxce.fit_temperature(logits.T, labels, axis=0)
    np.testing.assert_allclose(t, jaxce.fit_temperature(logits, labels), rtol=1e-6)


def test_vmap_over_datasets():
    data = [calibration_data(300, 5, seed=20 + i) for i in range(3)]
    logits = np.stack([d[0] for d in data])
    labels = np.stack([d[1] for d in data])
    ece = jax.vmap(lambda x, y: jaxce.expected_calibration_error(x, y, norm="l2"))(logits, labels)
    curves = jax.vmap(lambda x, y: jaxce.calibration_curve(x, y, n_bins=5))(logits, labels)
    temps = jax.vmap(jaxce.fit_temperature)(logits, labels)
    for i, (x, y) in enumerate(data):
        np.testing.assert_allclose(
            ece[i], jaxce.expected_calibration_error(x, y, norm="l2"), rtol=1e-6
        )
        for a, b in zip(curves, jaxce.calibration_curve(x, y, n_bins=5), strict=True):
            np.testing.assert_allclose(a[i], b, rtol=1e-6, equal_nan=True)
        np.testing.assert_allclose(temps[i], jaxce.fit_temperature(x, y), rtol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_gives_float32(dtype):
    logits, labels = calibration_data(300, 5, seed=30)
    half = jnp.asarray(logits, dtype)
    upcast = half.astype(jnp.float32)
    for norm in NORMS:
        got = jaxce.expected_calibration_error(half, labels, norm=norm)
        assert got.dtype == jnp.float32
        np.testing.assert_allclose(
            got, jaxce.expected_calibration_error(upcast, labels, norm=norm), rtol=1e-6
        )
    curve = jaxce.calibration_curve(half, labels)
    assert curve.confidence.dtype == curve.accuracy.dtype == jnp.float32
    t = jaxce.fit_temperature(half, labels)
    assert t.dtype == jnp.float32
    np.testing.assert_allclose(t, jaxce.fit_temperature(upcast, labels), rtol=1e-6)


def test_float64(x64):
    logits, labels = calibration_data(300, 5, seed=31)
    x = jnp.asarray(logits, jnp.float64)
    for norm in NORMS:
        got = jaxce.expected_calibration_error(x, labels, norm=norm)
        assert got.dtype == jnp.float64
        np.testing.assert_allclose(
            got, ref.expected_calibration_error(logits, labels, 15, norm), rtol=1e-12
        )
    t = jaxce.fit_temperature(x, labels)
    assert t.dtype == jnp.float64
    np.testing.assert_allclose(t, ref.fit_temperature(logits, labels), rtol=1e-7)


def test_masked_classes_and_extreme_logits():
    logits, labels = calibration_data(300, 5, seed=32)
    masked = np.concatenate([logits, np.full((300, 2), -np.inf, np.float32)], axis=1)
    for norm in NORMS:
        np.testing.assert_allclose(
            jaxce.expected_calibration_error(masked, labels, norm=norm),
            jaxce.expected_calibration_error(logits, labels, norm=norm),
            rtol=1e-6,
        )
    np.testing.assert_allclose(
        jaxce.fit_temperature(masked, labels), jaxce.fit_temperature(logits, labels), rtol=1e-5
    )
    huge = logits * 1e4
    assert np.isfinite(jaxce.expected_calibration_error(huge, labels))
    # The optimum, about 3e4, lies beyond the default bound: clamped, finite.
    assert jaxce.fit_temperature(huge, labels) == np.float32(1e3)
    t = jaxce.fit_temperature(huge, labels, max_temperature=1e6)
    np.testing.assert_allclose(t, 1e4 * jaxce.fit_temperature(logits, labels), rtol=1e-4)


def test_out_of_range_labels():
    logits, labels = calibration_data(20, 3, seed=33)
    bad = labels.copy()
    bad[4] = 3
    for norm in NORMS:
        assert np.isnan(jaxce.expected_calibration_error(logits, bad, norm=norm))
    curve = jaxce.calibration_curve(logits, bad, n_bins=5)
    conf, _ = ref.top_label(logits, labels)
    poisoned = min(int(conf[4] * 5), 4)
    assert np.isnan(curve.accuracy[poisoned]) and np.isnan(curve.confidence[poisoned])
    np.testing.assert_array_equal(
        curve.counts, jaxce.calibration_curve(logits, labels, n_bins=5).counts
    )
    assert np.isnan(jaxce.fit_temperature(logits, bad))
    err, _ = checkify.checkify(jaxce.expected_calibration_error)(logits, bad)
    with pytest.raises(checkify.JaxRuntimeError, match="got 3"):
        err.throw()
    # A masked bad label is not an error.
    where = np.arange(20) != 4
    err, ece = checkify.checkify(jaxce.expected_calibration_error)(logits, bad, where=where)
    err.throw()
    assert np.isfinite(ece)


# Temperature scaling.


@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_fit_temperature_matches_oracle(mode):
    logits, labels = calibration_data(300, 5, seed=40, scale=2.0, hit_rate=0.5)
    fn = jax.jit(jaxce.fit_temperature) if mode == "jit" else jaxce.fit_temperature
    got = fn(logits, labels)
    expected = ref.fit_temperature(logits, labels)
    assert got.dtype == jnp.float32 and got.shape == ()
    assert 1.2 < expected < 10  # an interior optimum
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_fit_temperature_is_stationary_for_the_library_loss():
    """d/dT of softmax_cross_entropy(logits / T) vanishes at the fitted T."""
    logits, labels = calibration_data(300, 5, seed=41, scale=2.5, hit_rate=0.7)
    t = jaxce.fit_temperature(logits, labels)

    def loss(temperature):
        return jaxce.softmax_cross_entropy(jnp.asarray(logits) / temperature, labels)

    slope = jax.grad(loss)(t)
    scale = jax.grad(loss)(t * 1.1)
    assert abs(slope) < 1e-3 * abs(scale)


def test_known_temperature_recovery(calibrated_20k):
    logits, labels = calibrated_20k
    np.testing.assert_allclose(jaxce.fit_temperature(logits, labels), 1.0, rtol=0.05)
    np.testing.assert_allclose(jaxce.fit_temperature(2.5 * logits, labels), 2.5, rtol=0.05)
    np.testing.assert_allclose(jaxce.fit_temperature(logits / 3.0, labels), 1 / 3.0, rtol=0.05)


def test_temperature_scaling_restores_calibration(calibrated_20k):
    logits, labels = calibrated_20k
    assert jaxce.expected_calibration_error(logits, labels) < 0.02
    over = 2.5 * logits
    before = jaxce.expected_calibration_error(over, labels)
    t = jaxce.fit_temperature(over, labels)
    after = jaxce.expected_calibration_error(over / t, labels)
    assert before > 0.1 and after < 0.02


def test_all_right_clamps_to_min_temperature():
    logits, labels = calibration_data(300, 5, seed=42, hit_rate=1.0)
    assert np.all(logits.argmax(-1) == labels)
    t = jaxce.fit_temperature(logits, labels)
    assert t == np.float32(1e-3)
    assert jaxce.fit_temperature(logits, labels, min_temperature=0.05) == np.float32(0.05)
    # The NLL really keeps falling towards the bound.
    assert _nll(logits, labels, 0.05) < _nll(logits, labels, 0.1) < _nll(logits, labels, 1.0)


def test_anti_correlated_clamps_to_max_temperature():
    logits, _ = calibration_data(300, 5, seed=43)
    labels = logits.argmin(-1).astype(np.int32)
    assert jaxce.fit_temperature(logits, labels) == np.float32(1e3)
    assert jaxce.fit_temperature(logits, labels, max_temperature=20.0) == np.float32(20.0)
    assert _nll(logits, labels, 1e3) < _nll(logits, labels, 5e2) < _nll(logits, labels, 1.0)


def test_all_wrong_gives_interior_temperature():
    """Every prediction wrong, label the runner-up: a finite T, the oracle's."""
    logits, _ = calibration_data(300, 5, seed=44)
    labels = np.argsort(logits, axis=-1)[:, -2].astype(np.int32)
    t = jaxce.fit_temperature(logits, labels)
    assert np.isfinite(t) and 1.0 < t < 1e3
    np.testing.assert_allclose(t, ref.fit_temperature(logits, labels), rtol=1e-4)


@pytest.mark.parametrize(
    "logits",
    [np.zeros((8, 5), np.float32), np.full((8, 5), 3.0, np.float32), np.ones((8, 1), np.float32)],
    ids=["zeros", "constant", "single_class"],
)
def test_uninformative_logits_give_one(logits):
    labels = np.arange(8, dtype=np.int32) % logits.shape[1]
    t = jaxce.fit_temperature(logits, labels)
    assert t == 1.0


def test_fit_temperature_where_equals_slicing():
    logits, labels = calibration_data(300, 5, seed=45, hit_rate=0.5)
    where = np.random.default_rng(2).random(300) < 0.5
    got = jaxce.fit_temperature(logits, labels, where=where)
    np.testing.assert_allclose(got, jaxce.fit_temperature(logits[where], labels[where]), rtol=1e-5)
    np.testing.assert_allclose(got, ref.fit_temperature(logits, labels, where), rtol=1e-4)


def test_fit_temperature_converged():
    logits, labels = calibration_data(300, 5, seed=46, hit_rate=0.8)
    t50 = jaxce.fit_temperature(logits, labels)
    t200 = jaxce.fit_temperature(logits, labels, num_iterations=200)
    np.testing.assert_allclose(t50, t200, rtol=1e-6)


def test_fit_temperature_no_gradient_leak():
    """The fitted T is a constant of the data: no gradient flows back to the logits."""
    logits, labels = calibration_data(40, 3, seed=47)
    grad = jax.grad(lambda x: jaxce.fit_temperature(x, labels))(logits)
    np.testing.assert_array_equal(grad, np.zeros_like(logits))


# Properties.


# One shape (rows masked out with `where`) keeps compilations to one per n_bins. No
# subnormals: XLA on CPU flushes them to zero, so their argmax ties where NumPy's does not.
_LOGITS = hnp.arrays(
    np.float32, (24, 4), elements=st.floats(-20, 20, width=32, allow_subnormal=False)
)


def _labels_and_mask(seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 4, 24).astype(np.int32), np.arange(24) < rng.integers(1, 25)


@settings(max_examples=30, deadline=None)
@given(logits=_LOGITS, n_bins=st.sampled_from([1, 2, 15]), seed=st.integers(0, 2**16))
def test_norms_ordered_and_bounded(logits, n_bins, seed):
    labels, where = _labels_and_mask(seed)
    l1, l2, mx = (
        float(jaxce.expected_calibration_error(logits, labels, n_bins=n_bins, norm=n, where=where))
        for n in NORMS
    )
    assert 0 <= l1 <= l2 + 1e-6 and l2 <= mx + 1e-6 and mx <= 1
    curve = jaxce.calibration_curve(logits, labels, n_bins=n_bins, where=where)
    assert int(curve.counts.sum()) == where.sum()
    # A confidence within rounding of a bin edge may land on either side in float32.
    scaled = ref.top_label(logits, labels)[0][where] * n_bins
    if np.all(np.abs(scaled - np.round(scaled)) > 1e-5) or n_bins == 1:
        expected = ref.expected_calibration_error(logits, labels, n_bins, "l1", where)
        np.testing.assert_allclose(l1, expected, atol=1e-5)


@settings(max_examples=20, deadline=None)
@given(logits=_LOGITS, seed=st.integers(0, 2**16))
def test_fitted_temperature_is_a_minimum(logits, seed):
    labels, where = _labels_and_mask(seed)
    t = float(jaxce.fit_temperature(logits, labels, where=where))
    assert np.isfinite(t) and 1e-3 * (1 - 1e-6) <= t <= 1e3 * (1 + 1e-6)
    best = _nll(logits, labels, t, where)
    for other in (1.0, t * 1.05, t / 1.05, 1e-3, 1e3):
        if 1e-3 <= other <= 1e3:
            assert best <= _nll(logits, labels, other, where) + 1e-6 * (1 + abs(best))


# Bad input.


def test_bad_inputs_name_the_argument():
    logits, labels = calibration_data(6, 3)
    ece, curve, fit = (
        jaxce.expected_calibration_error,
        jaxce.calibration_curve,
        jaxce.fit_temperature,
    )
    for fn in (ece, curve):
        with pytest.raises(ValueError, match="n_bins"):
            fn(logits, labels, n_bins=0)
        with pytest.raises(TypeError, match="n_bins"):
            fn(logits, labels, n_bins=2.5)
        with pytest.raises(TypeError, match="n_bins"):
            fn(logits, labels, n_bins=True)
    with pytest.raises(ValueError, match="norm"):
        ece(logits, labels, norm="l3")
    for fn in (ece, curve, fit):
        with pytest.raises(ValueError, match="labels"):
            fn(logits, labels[:5])
        with pytest.raises(TypeError, match="labels"):
            fn(logits, labels.astype(np.float32))
        with pytest.raises(TypeError, match="logits"):
            fn(labels[:, None] * np.ones((1, 3), np.int32), labels)
        with pytest.raises(TypeError, match="where"):
            fn(logits, labels, where=np.ones(6, np.int32))
        with pytest.raises(ValueError, match="where"):
            fn(logits, labels, where=np.ones(5, bool))
        with pytest.raises(ValueError, match="axis"):
            fn(logits, labels, axis=2)
        with pytest.raises(ValueError, match="logits"):
            fn(np.float32(1.0), labels)
    with pytest.raises(ValueError, match="min_temperature"):
        fit(logits, labels, min_temperature=0.0)
    with pytest.raises(ValueError, match="min_temperature"):
        fit(logits, labels, min_temperature=float("inf"))
    with pytest.raises(ValueError, match="max_temperature"):
        fit(logits, labels, min_temperature=2.0, max_temperature=1.0)
    with pytest.raises(ValueError, match="num_iterations"):
        fit(logits, labels, num_iterations=0)
    with pytest.raises(TypeError, match="num_iterations"):
        fit(logits, labels, num_iterations=1.5)


def test_errors_fire_under_jit():
    logits, labels = calibration_data(6, 3)
    with pytest.raises(ValueError, match="labels"):
        jax.jit(jaxce.expected_calibration_error)(logits, labels[:5])
    with pytest.raises(TypeError, match="logits"):
        jax.jit(jaxce.fit_temperature)(labels[:, None] * np.ones((1, 3), np.int32), labels)
