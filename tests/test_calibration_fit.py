"""Vector scaling against a brute-force search; both fits on empty and masked batches."""

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxce
from tests import reference as ref


def _miscalibrated(n, k, seed, scale=3.0, bias=None):
    """Labels drawn from softmax(z + bias); the model reports `scale * z` (no bias)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k))
    shift = np.zeros(k) if bias is None else np.asarray(bias)
    labels = np.argmax(z + shift + rng.gumbel(size=(n, k)), axis=-1).astype(np.int32)
    return (scale * z).astype(np.float32), labels


def _nll(logits, labels, scale, bias, where=None):
    return ref.vector_scaling_nll(logits, labels, np.asarray(scale), np.asarray(bias), where)


@pytest.mark.parametrize(("k", "grid"), [(2, 13), (3, 7)])
def test_no_worse_than_brute_force_search(k, grid):
    logits, labels = _miscalibrated(150, k, seed=k, bias=np.linspace(-1, 1, k))
    scale, bias = jaxce.fit_vector_scaling(logits, labels)
    best, best_scale, best_bias = ref.vector_scaling_search(logits, labels, grid=grid)
    got = _nll(logits, labels, scale, bias)
    assert got <= best + 1e-6
    # The search converges to the same optimum (the objective is convex).
    assert best - got < 1e-4


def test_fitted_point_is_stationary():
    """Central differences of the float64 NLL vanish at the fitted (scale, bias)."""
    logits, labels = _miscalibrated(400, 4, seed=5, scale=2.5, bias=[0.5, 0.0, -0.5, 0.2])
    scale, bias = (np.asarray(a, np.float64) for a in jaxce.fit_vector_scaling(logits, labels))
    h = 1e-4
    for params, index in [(scale, i) for i in range(4)] + [(bias, i) for i in range(4)]:
        up, down = params.copy(), params.copy()
        up[index] += h
        down[index] -= h
        args = (up, bias) if params is scale else (scale, up)
        args_down = (down, bias) if params is scale else (scale, down)
        slope = (_nll(logits, labels, *args) - _nll(logits, labels, *args_down)) / (2 * h)
        assert abs(slope) < 2e-4, (params is scale, index, slope)


def test_recovers_a_known_scale_and_bias():
    true_bias = np.array([0.6, 0.0, -0.4, -0.2])
    logits, labels = _miscalibrated(20_000, 4, seed=6, scale=3.0, bias=true_bias)
    scale, bias = jaxce.fit_vector_scaling(logits, labels)
    np.testing.assert_allclose(scale, np.full(4, 1 / 3), atol=0.02)
    np.testing.assert_allclose(bias, true_bias - true_bias.mean(), atol=0.05)
    np.testing.assert_allclose(np.sum(bias), 0.0, atol=1e-5)  # centred


_LOGITS = hnp.arrays(
    np.float32, (30, 3), elements=st.floats(-15, 15, width=32, allow_subnormal=False)
)


@settings(max_examples=20, deadline=None)
@given(logits=_LOGITS, seed=st.integers(0, 2**16), masked_class=st.booleans())
def test_never_worse_than_the_identity(logits, seed, masked_class):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, 30).astype(np.int32)
    where = np.arange(30) < rng.integers(0, 31)
    if masked_class:  # class 2 masked with -inf, never a label
        logits = logits.copy()
        logits[:, 2] = -np.inf
        labels = labels % 2
    scale, bias = jaxce.fit_vector_scaling(logits, labels, where=where)
    assert np.all(np.isfinite(scale)) and np.all(np.isfinite(bias))
    before = _nll(logits, labels, np.ones(3), np.zeros(3), where)
    after = _nll(logits, labels, scale, bias, where)
    assert after <= before + 1e-6 * (1 + before)


def test_where_equals_slicing():
    logits, labels = _miscalibrated(300, 3, seed=7)
    where = np.random.default_rng(8).random(300) < 0.5
    poisoned = np.where(where[:, None], logits, np.nan).astype(np.float32)  # never read
    got = jaxce.fit_vector_scaling(poisoned, labels, where=where)
    expected = jaxce.fit_vector_scaling(logits[where], labels[where])
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_masked_class_keeps_the_identity():
    logits, labels = _miscalibrated(300, 3, seed=9)
    masked = np.concatenate([logits, np.full((300, 1), -np.inf, np.float32)], axis=1)
    scale, bias = jaxce.fit_vector_scaling(masked, labels)
    assert scale[3] == 1 and bias[3] == 0
    expected = jaxce.fit_vector_scaling(logits, labels)
    # A float32 NLL is flat to its last bit within about sqrt(eps) = 3e-4 of its minimum, so
    # two fits that sum in another order agree to that, not to float32's 1e-7.
    np.testing.assert_allclose(scale[:3], expected[0], rtol=1e-3)
    np.testing.assert_allclose(bias[:3], expected[1], atol=1e-3)


def test_axis_vmap_and_no_gradient():
    logits, labels = _miscalibrated(100, 3, seed=10)
    expected = jaxce.fit_vector_scaling(logits, labels)
    transposed = jaxce.fit_vector_scaling(logits.T, labels, axis=0)
    for a, b in zip(transposed, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    stacked = np.stack([logits, 2 * logits])
    scales, _ = jax.vmap(jaxce.fit_vector_scaling, in_axes=(0, None))(stacked, labels)
    np.testing.assert_allclose(scales[1], expected[0] / 2, rtol=1e-3, atol=1e-4)
    grad = jax.grad(lambda x: jnp.sum(jaxce.fit_vector_scaling(x, labels)[0]))(logits)
    np.testing.assert_array_equal(grad, np.zeros_like(logits))


def test_dtypes(x64):
    logits, labels = _miscalibrated(120, 2, seed=11)
    with jax.enable_x64(False):
        half = jaxce.fit_vector_scaling(jnp.asarray(logits, jnp.bfloat16), labels)
    assert half[0].dtype == jnp.float32
    scale, bias = jaxce.fit_vector_scaling(jnp.asarray(logits, jnp.float64), labels)
    assert scale.dtype == jnp.float64
    best, _, _ = ref.vector_scaling_search(logits, labels, grid=9, sweeps=80)
    assert _nll(logits, labels, scale, bias) <= best + 1e-9


def test_nothing_counted_gives_the_identity():
    logits, labels = _miscalibrated(10, 3, seed=12)
    cases = [
        (logits, labels, np.zeros(10, bool)),
        (np.zeros((0, 3), np.float32), np.zeros(0, np.int32), None),
    ]
    for x, y, where in cases:
        scale, bias = jaxce.fit_vector_scaling(x, y, where=where)
        np.testing.assert_array_equal(scale, np.ones(3))
        np.testing.assert_array_equal(bias, np.zeros(3))
        assert jaxce.fit_temperature(x, y, where=where) == 1.0


def test_bad_labels_and_arguments():
    logits, labels = _miscalibrated(10, 3, seed=13)
    bad = labels.copy()
    bad[2] = 5
    scale, bias = jaxce.fit_vector_scaling(logits, bad)
    assert np.all(np.isnan(scale)) and np.all(np.isnan(bias))
    with pytest.raises(ValueError, match="num_iterations"):
        jaxce.fit_vector_scaling(logits, labels, num_iterations=0)
    with pytest.raises(TypeError, match="num_iterations"):
        jaxce.fit_vector_scaling(logits, labels, num_iterations=2.0)
    with pytest.raises(ValueError, match="labels"):
        jaxce.fit_vector_scaling(logits, labels[:4])
    with pytest.raises(TypeError, match="where"):
        jaxce.fit_vector_scaling(logits, labels, where=np.ones(10))
