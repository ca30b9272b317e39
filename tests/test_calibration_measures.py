"""Binned calibration errors (both bin rules, classwise, debiased), sigmoid form, Brier scores.

Each measure is compared with the float64 oracles in tests/reference.py on random
data and on adversarial inputs: every confidence in one bin, empty bins, ties on
bin edges, a class that never occurs, every example masked, an empty batch.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify
from sklearn.metrics import brier_score_loss

import jaxce
from tests import reference as ref
from tests.helpers import calibration_data

NORMS = ("l1", "l2", "max")
BINNINGS = ("width", "mass")
# (norm, debiased) pairs that exist: debiasing is defined for the squared L2 error.
ESTIMATORS = [("l1", False), ("l2", False), ("max", False), ("l2", True)]


def _options(norm, debiased, binning, classwise, n_bins=10):
    return dict(n_bins=n_bins, norm=norm, debiased=debiased, binning=binning, classwise=classwise)


def _adversarial():
    """(name, logits, labels, where): inputs that stress the bin rules and the averages."""
    rng = np.random.default_rng(3)
    cases = []
    # Identical rows: one confidence, one bin, every example tied.
    logits = np.tile(np.float32([[1.0, 0.0, 0.0]]), (40, 1))
    cases.append(("one_bin_tied", logits, rng.integers(0, 3, 40).astype(np.int32), None))
    # Distinct confidences that all fall in one equal-width bin, in any class.
    top = rng.uniform(1.0, 1.1, 40).astype(np.float32)
    logits = np.zeros((40, 3), np.float32)
    logits[np.arange(40), rng.integers(0, 3, 40)] = top
    cases.append(("one_bin", logits, rng.integers(0, 3, 40).astype(np.int32), None))
    # Fewer examples than bins: most bins empty (and n < B for equal-mass bins).
    logits, labels = calibration_data(7, 4, seed=4)
    cases.append(("empty_bins", logits, labels, None))
    # Confidences exactly on bin edges: 1/4 and 1/2 are edges of 4 and 10 bins alike.
    logits = np.concatenate(
        [np.zeros((10, 4), np.float32), np.tile([[0.0, 0.0, -np.inf, -np.inf]], (10, 1))]
    ).astype(np.float32)
    cases.append(("edge_ties", logits, rng.integers(0, 2, 20).astype(np.int32), None))
    # Class 3 never occurs as a label (it is still predicted sometimes).
    logits, labels = calibration_data(60, 4, seed=5)
    cases.append(("class_absent", logits, np.where(labels == 3, 0, labels).astype(np.int32), None))
    # Every example masked.
    logits, labels = calibration_data(12, 3, seed=6)
    cases.append(("all_masked", logits, labels, np.zeros(12, bool)))
    # Exactly one counted example.
    cases.append(("one_counted", logits, labels, np.arange(12) == 5))
    # No examples at all.
    cases.append(("empty", np.zeros((0, 3), np.float32), np.zeros(0, np.int32), None))
    return cases


ADVERSARIAL = _adversarial()


# The calibration error against the oracle.


@pytest.mark.parametrize("classwise", [False, True], ids=["top", "classwise"])
@pytest.mark.parametrize("binning", BINNINGS)
@pytest.mark.parametrize(("norm", "debiased"), ESTIMATORS, ids=["l1", "l2", "max", "debiased"])
def test_ece_matches_oracle(norm, debiased, binning, classwise):
    logits, labels = calibration_data(300, 5, seed=1)
    where = np.random.default_rng(2).random(300) < 0.8
    options = _options(norm, debiased, binning, classwise)
    got = jaxce.expected_calibration_error(logits, labels, where=where, **options)
    expected = ref.calibration_error(logits, labels, where=where, **options)
    assert got.dtype == jnp.float32 and got.shape == ()
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-6)


# Every estimator once, and every pair of bin rule and form (top-label or classwise):
# one compilation per combination and input shape keeps the adversarial cases cheap.
COMBINATIONS = [
    ("l1", False, "mass", False),
    ("max", False, "width", True),
    ("l2", True, "mass", True),
    ("l2", False, "width", False),
]


@pytest.mark.parametrize(
    ("logits", "labels", "where"),
    [case[1:] for case in ADVERSARIAL],
    ids=[case[0] for case in ADVERSARIAL],
)
def test_ece_adversarial_matches_oracle(logits, labels, where):
    for combination in COMBINATIONS:
        options = _options(*combination, n_bins=4)
        got = jaxce.expected_calibration_error(logits, labels, where=where, **options)
        expected = ref.calibration_error(logits, labels, where=where, **options)
        assert np.isfinite(got), options
        np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-6, err_msg=str(options))


def test_nothing_counted_gives_zero():
    """All-masked and empty batches give 0 (never NaN) with every option."""
    for name, logits, labels, where in ADVERSARIAL:
        if name not in ("all_masked", "empty"):
            continue
        for combination in COMBINATIONS:
            options = _options(*combination)
            got = jaxce.expected_calibration_error(logits, labels, where=where, **options)
            assert got == 0, (name, options)
        mask = None if where is None else where.reshape(-1, 1) * np.ones((1, 3), bool)
        assert jaxce.sigmoid_calibration_error(logits, logits > 0, where=mask) == 0
        assert jaxce.brier_score(logits, labels, where=where) == 0
        assert jaxce.sigmoid_brier_score(logits, logits > 0, where=mask) == 0
        for binning in BINNINGS:
            curve = jaxce.calibration_curve(logits, labels, n_bins=4, binning=binning, where=where)
            np.testing.assert_array_equal(curve.counts, np.zeros(4, np.int32))


# The bin rules.


def test_mass_bins_hold_floor_or_ceil_of_n_over_b():
    logits, labels = calibration_data(103, 6, seed=7)
    curve = jaxce.calibration_curve(logits, labels, n_bins=10, binning="mass")
    # numpy.array_split: the first 103 % 10 = 3 runs hold 11, the other 7 hold 10.
    np.testing.assert_array_equal(curve.counts, [11, 11, 11] + [10] * 7)
    # Runs of the sorted confidences: every bin's mean lies above the previous one.
    assert np.all(np.diff(np.asarray(curve.confidence)) > 0)


@pytest.mark.parametrize("binning", BINNINGS)
def test_curve_matches_oracle(binning):
    logits, labels = calibration_data(250, 5, seed=8, scale=1.5)
    where = np.random.default_rng(9).random(250) < 0.7
    curve = jaxce.calibration_curve(logits, labels, n_bins=12, binning=binning, where=where)
    conf, acc, count = ref.binned_curve(logits, labels, 12, binning, where)
    np.testing.assert_array_equal(curve.counts, count)
    np.testing.assert_allclose(curve.confidence, conf, rtol=1e-5, equal_nan=True)
    np.testing.assert_allclose(curve.accuracy, acc, rtol=1e-6, equal_nan=True)


def test_mass_bins_split_ties_in_batch_order():
    """Equal confidences fill the bins in batch order, right ones first here."""
    logits = np.zeros((6, 2), np.float32)  # every confidence is 1/2
    labels = np.array([0, 0, 0, 1, 1, 1], np.int32)  # argmax 0: right, right, right, wrong...
    curve = jaxce.calibration_curve(logits, labels, n_bins=2, binning="mass")
    np.testing.assert_array_equal(curve.counts, [3, 3])
    np.testing.assert_array_equal(curve.accuracy, [1.0, 0.0])
    np.testing.assert_allclose(
        jaxce.expected_calibration_error(logits, labels, n_bins=2, binning="mass"), 0.5
    )
    # Equal-width bins keep the ties together: accuracy 1/2 at confidence 1/2.
    assert jaxce.expected_calibration_error(logits, labels, n_bins=2) == 0


def test_mass_and_width_agree_when_runs_match():
    """With one example per distinct confidence and B = N both rules give one example per bin."""
    logits = np.array([[0.0, 0.1], [0.0, 0.8], [0.0, 1.6], [0.0, 2.9]], np.float32)
    labels = np.array([1, 0, 1, 1], np.int32)
    width = jaxce.expected_calibration_error(logits, labels, n_bins=4, norm="max")
    mass = jaxce.expected_calibration_error(logits, labels, n_bins=4, norm="max", binning="mass")
    # Confidences 0.525, 0.69, 0.83, 0.95 sit in width bins 2, 2, 3, 3: fewer, wider bins.
    assert mass > width
    expected = np.max(np.abs(ref.top_label(logits, labels)[1] - ref.top_label(logits, labels)[0]))
    np.testing.assert_allclose(mass, expected, rtol=1e-6)


# Classwise and debiased forms.


def test_classwise_with_two_classes_is_the_sigmoid_error_of_the_margin():
    """Class 1's one-vs-rest problem is sigmoid(x1 - x0) against y; class 0's mirrors it."""
    logits, labels = calibration_data(200, 2, seed=10)
    margin = logits[:, 1] - logits[:, 0]
    for norm in NORMS:
        classwise = jaxce.expected_calibration_error(
            logits, labels, n_bins=10, norm=norm, classwise=True
        )
        expected = ref.calibration_error(logits, labels, n_bins=10, norm=norm, classwise=True)
        np.testing.assert_allclose(classwise, expected, rtol=1e-5)
        sigmoid = jaxce.sigmoid_calibration_error(margin, labels, n_bins=10, norm=norm)
        np.testing.assert_allclose(classwise, sigmoid, rtol=1e-5)


def test_debiased_is_close_to_zero_for_a_calibrated_model():
    """The plug-in RMS error of a calibrated model is pure noise; the debiased one is near 0."""
    rng = np.random.default_rng(11)
    logits = rng.normal(size=(4000, 4)) * 2.0
    labels = np.argmax(logits + rng.gumbel(size=logits.shape), axis=-1).astype(np.int32)
    logits = logits.astype(np.float32)
    plug_in = jaxce.expected_calibration_error(logits, labels, norm="l2")
    debiased = jaxce.expected_calibration_error(logits, labels, norm="l2", debiased=True)
    assert debiased < 0.5 * plug_in
    over = 3.0 * logits  # miscalibrated: the debiased estimate stays large
    np.testing.assert_allclose(
        jaxce.expected_calibration_error(over, labels, norm="l2", debiased=True),
        jaxce.expected_calibration_error(over, labels, norm="l2"),
        rtol=0.05,
    )


def test_debiased_clips_at_zero():
    """Accuracy 1/2 in a bin of confidence 1/2: plug-in 0, variance term positive: clipped."""
    logits = np.zeros((4, 2), np.float32)
    labels = np.array([0, 1, 0, 1], np.int32)
    assert jaxce.expected_calibration_error(logits, labels, norm="l2", debiased=True) == 0
    assert ref.calibration_error(logits, labels, norm="l2", debiased=True) == 0


# The sigmoid form.


@pytest.mark.parametrize("binning", BINNINGS)
@pytest.mark.parametrize("norm", NORMS)
def test_sigmoid_matches_oracle(norm, binning):
    rng = np.random.default_rng(12)
    logits = (rng.normal(size=(40, 6)) * 3).astype(np.float32)
    labels = (rng.random((40, 6)) < 1 / (1 + np.exp(-logits / 2))).astype(np.int32)
    where = rng.random((40, 1)) < 0.8
    got = jaxce.sigmoid_calibration_error(
        logits, labels, n_bins=10, norm=norm, binning=binning, where=where
    )
    expected = ref.sigmoid_calibration_error(
        logits, labels, n_bins=10, norm=norm, binning=binning, where=where
    )
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("norm", NORMS)
def test_sigmoid_matches_torchmetrics_binary_formula(norm):
    """torchmetrics' BinaryCalibrationError: confidence = sigmoid(x), accuracy = the label."""
    rng = np.random.default_rng(13)
    logits = (rng.normal(size=500) * 2).astype(np.float32)
    labels = (rng.random(500) < 0.5).astype(np.int32)
    probs = 1 / (1 + np.exp(-logits.astype(np.float64)))
    expected = ref.torchmetrics_calibration_error(probs, labels, 15, norm)
    np.testing.assert_allclose(
        jaxce.sigmoid_calibration_error(logits, labels, norm=norm), expected, rtol=1e-5, atol=1e-6
    )


def test_sigmoid_label_dtypes_agree():
    logits, _ = calibration_data(30, 4, seed=14)
    labels = logits + np.random.default_rng(15).normal(size=logits.shape) > 0
    expected = jaxce.sigmoid_calibration_error(logits, labels)
    for dtype in (np.int32, np.float32, np.uint8):
        np.testing.assert_array_equal(
            jaxce.sigmoid_calibration_error(logits, labels.astype(dtype)), expected
        )


def test_sigmoid_saturated_logits_go_to_the_last_bin():
    logits = np.array([40.0, -40.0, 100.0], np.float32)
    labels = np.array([1, 0, 0], np.int32)
    # Bins: 1.0 -> last bin (with 1.0), 0.0 -> first bin; MCE = |0.5 - 1.0|.
    assert jaxce.sigmoid_calibration_error(logits, labels, n_bins=4, norm="max") == 0.5


# Brier scores.


def test_brier_matches_oracle_and_sklearn():
    logits, labels = calibration_data(200, 6, seed=16)
    where = np.random.default_rng(17).random(200) < 0.7
    got = jaxce.brier_score(logits, labels, where=where)
    np.testing.assert_allclose(got, ref.brier_score(logits, labels, where), rtol=1e-6)
    probs = ref.softmax(logits)
    sklearn = brier_score_loss(labels[where], probs[where], labels=list(range(6)))
    np.testing.assert_allclose(got, sklearn, rtol=1e-6)


def test_sigmoid_brier_equals_sklearn():
    rng = np.random.default_rng(18)
    logits = (rng.normal(size=300) * 3).astype(np.float32)
    labels = (rng.random(300) < 0.4).astype(np.int32)
    expected = brier_score_loss(labels, 1 / (1 + np.exp(-logits.astype(np.float64))))
    np.testing.assert_allclose(jaxce.sigmoid_brier_score(logits, labels), expected, rtol=1e-6)
    where = rng.random(300) < 0.5
    sliced = brier_score_loss(labels[where], 1 / (1 + np.exp(-logits[where].astype(np.float64))))
    np.testing.assert_allclose(
        jaxce.sigmoid_brier_score(logits, labels, where=where), sliced, rtol=1e-6
    )
    np.testing.assert_allclose(
        jaxce.sigmoid_brier_score(logits, labels, where=where),
        ref.sigmoid_brier_score(logits, labels, where),
        rtol=1e-6,
    )


def test_brier_keeps_precision_for_confident_predictions():
    """1 - p_y is summed from the other classes, not rounded from p_y."""
    logits = np.array([[30.0, 0.0, 0.0], [0.0, 20.0, 5.0]], np.float32)
    labels = np.array([0, 1], np.int32)
    got = jaxce.brier_score(logits, labels, reduction="none")
    # The float64 reference in the same stable form: (p - 1)^2 would round 1 - p_y there too.
    x = logits.astype(np.float64)
    e = np.exp(x - x[np.arange(2), labels][:, None])
    q = np.where(np.eye(3)[labels] > 0, 0, e / e.sum(-1, keepdims=True))
    expected = q.sum(-1) ** 2 + (q**2).sum(-1)
    assert np.all(np.asarray(got) > 0)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    x, y = np.float32([20.0, -25.0]), np.float32([1, 0])
    binary = jaxce.sigmoid_brier_score(x, y, reduction="none")
    expected = [ref.sigmoid_brier_score(x[i : i + 1], y[i : i + 1]) for i in range(2)]
    assert np.all(np.asarray(binary) > 0)
    np.testing.assert_allclose(binary, expected, rtol=1e-5)


def test_brier_reductions_and_axis():
    logits, labels = calibration_data(24, 5, seed=19)
    per_example = jaxce.brier_score(logits, labels, reduction="none")
    assert per_example.shape == (24,)
    np.testing.assert_allclose(
        jaxce.brier_score(logits, labels, reduction="sum"), per_example.sum(), rtol=1e-6
    )
    np.testing.assert_allclose(jaxce.brier_score(logits, labels), per_example.mean(), rtol=1e-6)
    nchw = np.moveaxis(logits.reshape(2, 3, 4, 5), -1, 1)
    got = jaxce.brier_score(nchw, labels.reshape(2, 3, 4), axis=1, reduction="none")
    np.testing.assert_allclose(got, per_example.reshape(2, 3, 4), rtol=1e-6)
    where = np.arange(24) % 3 == 0
    masked = jaxce.brier_score(logits, labels, where=where, reduction="none")
    np.testing.assert_array_equal(masked, np.where(where, per_example, 0))
    empty = jaxce.brier_score(np.zeros((0, 5), np.float32), np.zeros(0, np.int32), reduction="none")
    assert empty.shape == (0,)


def test_brier_gradient_is_the_closed_form():
    """d/dx sum_k (p_k - y_k)^2 = 2 (diag p - p p^T)(p - y), averaged over examples."""
    logits, labels = calibration_data(8, 4, seed=20)
    grad = jax.grad(jaxce.brier_score)(logits, labels)
    p = ref.softmax(logits)
    r = p - np.eye(4)[labels]
    expected = 2 * (p * r - p * np.sum(p * r, axis=-1, keepdims=True)) / 8
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-7)


# Masks, transformations, dtypes, bad labels.


def test_where_equals_slicing():
    # The data and mask of test_ece_matches_oracle: the masked calls reuse its compilations.
    logits, labels = calibration_data(300, 5, seed=1)
    where = np.random.default_rng(2).random(300) < 0.8
    for combination in COMBINATIONS:
        options = _options(*combination)
        np.testing.assert_allclose(
            jaxce.expected_calibration_error(logits, labels, where=where, **options),
            jaxce.expected_calibration_error(logits[where], labels[where], **options),
            rtol=1e-6,
            atol=1e-7,
        )


def test_jit_and_vmap():
    data = [calibration_data(100, 4, seed=30 + i) for i in range(3)]
    logits = np.stack([d[0] for d in data])
    labels = np.stack([d[1] for d in data])

    def measures(x, y):
        return jnp.stack(
            [
                jaxce.expected_calibration_error(x, y, binning="mass", norm="l2", debiased=True),
                jaxce.expected_calibration_error(x, y, classwise=True),
                jaxce.sigmoid_calibration_error(x, y[:, None] == jnp.arange(4)[None, :]),
                jaxce.brier_score(x, y),
                jaxce.sigmoid_brier_score(x, y[:, None] == jnp.arange(4)[None, :]),
            ]
        )

    batched = jax.vmap(measures)(logits, labels)
    for i, (x, y) in enumerate(data):
        np.testing.assert_allclose(batched[i], measures(x, y), rtol=1e-6)
        np.testing.assert_allclose(jax.jit(measures)(x, y), measures(x, y), rtol=1e-6)


def _all_measures(x, labels):
    binary = labels[:, None] == jnp.arange(x.shape[-1])[None, :]
    return [
        jaxce.expected_calibration_error(x, labels, binning="mass"),
        jaxce.expected_calibration_error(x, labels, classwise=True, norm="l2", debiased=True),
        jaxce.sigmoid_calibration_error(x, binary),
        jaxce.brier_score(x, labels),
        jaxce.sigmoid_brier_score(x, binary),
    ]


def test_half_precision_gives_float32():
    logits, labels = calibration_data(100, 4, seed=23)
    half = jnp.asarray(logits, jnp.bfloat16)
    measures = jax.jit(_all_measures)
    got, expected = measures(half, labels), measures(half.astype(jnp.float32), labels)
    for a, b in zip(got, expected, strict=True):
        assert a.dtype == jnp.float32
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_float64(x64):
    logits, labels = calibration_data(150, 4, seed=24)
    x = jnp.asarray(logits, jnp.float64)
    for norm, debiased in [("max", False), ("l2", True)]:
        options = _options(norm, debiased, "mass", True)
        got = jaxce.expected_calibration_error(x, labels, **options)
        assert got.dtype == jnp.float64
        np.testing.assert_allclose(
            got, ref.calibration_error(logits, labels, **options), rtol=1e-12, atol=1e-15
        )
    np.testing.assert_allclose(
        jaxce.brier_score(x, labels), ref.brier_score(logits, labels), rtol=1e-12
    )


def test_out_of_range_labels_give_nan_and_a_checkify_error():
    logits, labels = calibration_data(20, 3, seed=25)
    bad = labels.copy()
    bad[4] = 3
    for classwise in (False, True):
        for binning in BINNINGS:
            got = jaxce.expected_calibration_error(
                logits, bad, classwise=classwise, binning=binning
            )
            assert np.isnan(got)
    assert np.isnan(jaxce.brier_score(logits, bad))
    assert np.isnan(jaxce.brier_score(logits, bad, reduction="none")[4])
    binary = (logits > 0).astype(np.float32)
    binary[2, 1] = 2.0
    assert np.isnan(jaxce.sigmoid_calibration_error(logits, binary))
    assert np.isnan(jaxce.sigmoid_brier_score(logits, binary))
    err, _ = checkify.checkify(jaxce.sigmoid_brier_score)(logits, binary)
    with pytest.raises(checkify.JaxRuntimeError, match=r"got 2\.0"):
        err.throw()
    err, _ = checkify.checkify(jaxce.brier_score)(logits, bad)
    with pytest.raises(checkify.JaxRuntimeError, match="got 3"):
        err.throw()
    where = np.ones_like(binary, bool)
    where[2, 1] = False
    assert np.isfinite(jaxce.sigmoid_calibration_error(logits, binary, where=where))


def test_bad_options_name_the_argument():
    logits, labels = calibration_data(6, 3)
    ece = jaxce.expected_calibration_error
    with pytest.raises(ValueError, match="binning"):
        ece(logits, labels, binning="quantile")
    with pytest.raises(ValueError, match="debiased"):
        ece(logits, labels, debiased=True)
    with pytest.raises(TypeError, match="classwise"):
        ece(logits, labels, classwise=1)
    with pytest.raises(TypeError, match="debiased"):
        ece(logits, labels, norm="l2", debiased="yes")
    with pytest.raises(TypeError, match="n_bins"):
        jax.jit(lambda b: ece(logits, labels, n_bins=b))(3)
    with pytest.raises(ValueError, match="binning"):
        jaxce.calibration_curve(logits, labels, binning="mass ")
    sigmoid = jaxce.sigmoid_calibration_error
    with pytest.raises(ValueError, match="labels"):
        sigmoid(logits, labels)
    with pytest.raises(TypeError, match="labels"):
        sigmoid(logits, np.zeros(logits.shape, np.complex64))
    with pytest.raises(TypeError, match="logits"):
        sigmoid(labels, labels)
    with pytest.raises(ValueError, match="norm"):
        sigmoid(logits, logits > 0, norm="l3")
    with pytest.raises(ValueError, match="where"):
        sigmoid(logits, logits > 0, where=np.ones(4, bool))
    with pytest.raises(ValueError, match="reduction"):
        jaxce.brier_score(logits, labels, reduction="avg")
    with pytest.raises(ValueError, match="reduction"):
        jaxce.sigmoid_brier_score(logits, logits > 0, reduction="avg")
    with pytest.raises(TypeError, match="labels"):
        jaxce.brier_score(logits, labels.astype(np.float32))
    with pytest.raises(ValueError, match="axis"):
        jaxce.brier_score(logits, labels, axis=3)
