"""Example weights (`example_weights=`) on every loss of `tests/registry.py`: the float64
oracle, exact gradients (every differentiable input and the example weights), weights of 1
and of 0, the normaliser, the `denominator`, dtypes and bad input.

Each loss compiles one float64 program here, shared by the tests that read it: the value and
gradients of every reduction, weighted and not, with broadcast weights and with a
denominator. The oracle tests compare it with `tests/reference.py`; the others run it on
weights of 1 or 0 and on garbage, and hold it to exact identities.
"""

import functools

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
from tests.helpers import (
    SHIPPED,
    assert_cached,
    assert_derivatives_match_differences,
    cache_size,
    central_difference,
    replaced,
)
from tests.registry import BY_NAME, LOSSES

N, K = 5, 4
REDUCTIONS = ("mean", "sum", "none")
NAMES = [loss.name for loss in LOSSES]


def _weights(rng, shape, low=0.2):
    return rng.uniform(low, 3.0, shape)


def _where(rng, shape):
    where = rng.random(shape) > 0.25
    where.flat[0] = True
    return where


def _f32(arrays):
    return tuple(
        jnp.asarray(a, jnp.float32) if a.dtype.kind == "f" else jnp.asarray(a) for a in arrays
    )


def _broadcast_shape(loss):
    """Weights that broadcast to the examples: one for all, or one per row of elements."""
    return (N, 1) if loss.elementwise else (1,)


# The float64 oracle: values and every gradient.


@functools.cache
def _program(name, shipped=False):
    """One float64 program per loss, shared by the tests of this file: for each reduction the
    value and the vector-Jacobian product, weighted and not; broadcast weights; a denominator.
    `shipped`: the reductions alone, compiled at XLA's default level as a user's program is
    (the last bit can depend on how the code is optimised)."""
    loss = BY_NAME[name]

    def program(arrays, v, v_row, where, cotangents, denominator):
        floats = tuple(arrays[i] for i in loss.differentiable)

        def value(floats, v, reduction, **kw):
            xs = replaced(arrays, loss.differentiable, floats)
            return loss(xs, example_weights=v, where=where, reduction=reduction, **kw)

        out = {}
        for r in REDUCTIONS:
            got, vjp = jax.vjp(functools.partial(value, reduction=r), floats, v)
            unweighted, unweighted_vjp = jax.vjp(lambda f, r=r: value(f, None, r), floats)
            out[r] = {
                "weighted": (got, vjp(cotangents[r])),
                "unweighted": (unweighted, unweighted_vjp(cotangents[r])[0]),
            }
        if shipped:
            return out
        out["broadcast"] = jax.value_and_grad(lambda v: value(floats, v, "mean"))(v_row)
        if loss.denominator:
            out["denominator"] = jax.value_and_grad(
                lambda v, d: value(floats, v, "mean", denominator=d), argnums=(0, 1)
            )(v, denominator)
        return out

    return jax.jit(program, compiler_options=SHIPPED if shipped else None)


def _run(name, arrays, v, where, shipped=False):
    """The program with unit cotangents (gradients of the sum) and unit broadcast weights."""
    loss = BY_NAME[name]
    shape = loss.example_shape(N, K)
    cotangents = {"mean": 1.0, "sum": 1.0, "none": np.ones(shape)}
    out = _program(name, shipped)(
        arrays, v, np.ones(_broadcast_shape(loss)), where, cotangents, 1.0
    )
    return jax.tree.map(np.asarray, out)


@functools.cache
def _oracle_case(name):
    """The float64 program's inputs and outputs, for the oracle tests that read them."""
    loss = BY_NAME[name]
    rng = np.random.default_rng(NAMES.index(name))
    data = loss.data(N, K, seed=NAMES.index(name))
    shape = loss.example_shape(N, K)
    v = _weights(rng, shape)
    if not loss.coupled:  # (a coupled loss jumps at 0: see test_all_zero_weights_...)
        v[2] = 0.0  # excluded from the value, and its derivative is still its loss term
    v_row = _weights(rng, _broadcast_shape(loss))
    where = _where(rng, shape)
    # Python floats, as `_run` gives them: the same compiled program serves both.
    cotangents = {"mean": float(rng.normal()), "sum": float(rng.normal())}
    cotangents["none"] = rng.normal(size=shape)
    out = _program(name)(data, v, v_row, where, cotangents, 7.0)
    return data, v, v_row, where, cotangents, jax.tree.map(np.asarray, out)


@pytest.mark.parametrize("name", NAMES)
def test_matches_oracle_value_and_gradients(x64, name):
    loss = BY_NAME[name]
    data, v, _, where, cotangents, out = _oracle_case(name)
    for r in REDUCTIONS:
        got, (d_floats, d_v) = out[r]["weighted"]

        def scalar(arrays=data, v=v, r=r):
            return np.sum(
                loss.reference(arrays, example_weights=v, where=where, reduction=r) * cotangents[r]
            )

        np.testing.assert_allclose(
            got,
            loss.reference(data, example_weights=v, where=where, reduction=r),
            rtol=1e-10,
            atol=1e-12,
        )
        for i, d in zip(loss.differentiable, d_floats, strict=True):
            want = central_difference(
                lambda x, i=i: scalar(arrays=replaced(data, [i], [x])), data[i]
            )
            np.testing.assert_allclose(d, want, rtol=1e-6, atol=1e-8, err_msg=f"{r}, input {i}")
        want = central_difference(lambda v: scalar(v=v), v)
        np.testing.assert_allclose(d_v, want, rtol=1e-6, atol=1e-8, err_msg=f"{r}, weights")


@pytest.mark.parametrize("name", NAMES)
def test_broadcast_weights_match_oracle_and_their_gradient_sums_back(x64, name):
    loss = BY_NAME[name]
    data, _, v_row, where, _, out = _oracle_case(name)
    got, d_v = out["broadcast"]

    def mean(v):
        return loss.reference(data, example_weights=v, where=where, reduction="mean")

    np.testing.assert_allclose(got, mean(v_row), rtol=1e-10, atol=1e-12)
    assert d_v.shape == v_row.shape
    np.testing.assert_allclose(d_v, central_difference(mean, v_row), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", [loss.name for loss in LOSSES if loss.denominator])
def test_denominator_replaces_weighted_normaliser(x64, name):
    loss = BY_NAME[name]
    data, v, _, where, _, out = _oracle_case(name)
    got, (d_v, d_denominator) = out["denominator"]
    total = loss.reference(data, example_weights=v, where=where, reduction="sum")
    np.testing.assert_allclose(got, total / 7.0, rtol=1e-12)
    np.testing.assert_allclose(d_denominator, -total / 49.0, rtol=1e-12)
    # With a fixed denominator the weights enter only the numerator: d/dv_i = l_i / d.
    unweighted = loss.reference(data, where=where, reduction="none")
    np.testing.assert_allclose(d_v, unweighted / 7.0, rtol=1e-12, atol=1e-15)


# Weights of 1 are no weights, bit for bit; a weight of 0 is where=False; no weight is 0.


# A known gap, an expected failure: the fused head's bias and class-weight gradients under
# "mean" differ by one ulp between weights of 1 and no weights.
UNIT_WEIGHT_GAPS = {"linear_softmax_cross_entropy", "linear_softmax_cross_entropy/vd"}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.xfail(strict=True, reason="one ulp apart"))
        if n in UNIT_WEIGHT_GAPS
        else n
        for n in NAMES
    ],
)
def test_unit_weights_equal_no_weights_exactly(x64, name):
    loss = BY_NAME[name]
    shape = loss.example_shape(N, K)
    where = _where(np.random.default_rng(3), shape)
    out = _run(name, loss.data(N, K, seed=2), np.ones(shape), where, shipped=True)
    for r in REDUCTIONS:
        value, (grads, _) = out[r]["weighted"]
        for got, want in zip(
            jax.tree.leaves((value, grads)), jax.tree.leaves(out[r]["unweighted"]), strict=True
        ):
            np.testing.assert_array_equal(got, want, err_msg=r)


# The fused head's kernel gradient sums h_i dz_i over the examples in its chunk loop, and
# 0 * NaN there is NaN: a masked example whose hidden state is not finite spoils it, with
# where=False as with a zero weight.
@pytest.mark.parametrize("name", NAMES)
def test_zero_weight_is_where_false_even_with_garbage(x64, name):
    # Example 2 holds inf and NaN (and an invalid label where there is one).
    loss = BY_NAME[name]
    shape = loss.example_shape(N, K)
    arrays = loss.data(N, K, seed=4, garbage=2)
    row = np.zeros(shape, bool)
    row[2] = True
    v = np.where(row, 0.0, _weights(np.random.default_rng(5), shape))
    by_weight = _run(name, arrays, v, np.ones(shape, bool))
    by_where = _run(name, arrays, np.where(row, 1.0, v), ~row)
    for r in REDUCTIONS:
        value, (grads, dv) = by_weight[r]["weighted"]
        want_value, (want_grads, _) = by_where[r]["weighted"]
        for got, want in zip(
            jax.tree.leaves((value, grads)), jax.tree.leaves((want_value, want_grads)), strict=True
        ):
            np.testing.assert_array_equal(got, want, err_msg=r)
        assert np.all(np.isfinite(value)), r
        assert all(np.all(np.isfinite(g)) for g in grads), f"{r}: a gradient is not finite"
        # The logits (or hidden states): exactly zero in that row.
        assert np.all(grads[0][2] == 0), r
        # Only the weight's own derivative reads the row: its loss term, here not finite.
        assert np.all(np.isfinite(np.delete(dv, 2, axis=0))) and not np.all(np.isfinite(dv[2])), r


@pytest.mark.parametrize("name", NAMES)
def test_all_zero_weights_are_zero_with_zero_gradient(x64, name):
    loss = BY_NAME[name]
    shape = loss.example_shape(N, K)
    data = loss.data(N, K, seed=7)
    out = _run(name, data, np.zeros(shape), np.ones(shape, bool))
    # The derivative of a sum with respect to a weight of 0 is the example's loss term with
    # the batch as it is, every other example excluded (where a loss couples its examples,
    # as a contrastive loss's negatives, that is its loss alone); a mean of nothing (S = 0)
    # is 0 with zero gradient.
    alone = np.eye(int(np.prod(shape)), dtype=bool).reshape(-1, *shape)
    terms = np.reshape([loss.reference(data, where=m, reduction="sum") for m in alone], shape)
    for r in REDUCTIONS:
        value, (grads, dv) = out[r]["weighted"]
        assert np.all(value == 0), r
        assert all(np.all(g == 0) for g in grads), r
        expected = np.zeros(shape) if r == "mean" else terms
        np.testing.assert_allclose(dv, expected, rtol=1e-10, atol=1e-12, err_msg=r)


def test_zero_weight_on_a_bad_label_is_not_an_error():
    logits = np.zeros((3, 4), np.float32)
    labels = np.array([0, 9, 1])
    v = np.array([1.0, 0.0, 1.0], np.float32)
    err, loss = checkify.checkify(jax.jit(jaxce.softmax_cross_entropy))(
        logits, labels, example_weights=v
    )
    err.throw()
    np.testing.assert_allclose(loss, np.log(4), rtol=1e-6)
    # With a nonzero weight the bad label is still NaN and a checkify error.
    err, loss = checkify.checkify(jax.jit(jaxce.softmax_cross_entropy))(
        logits, labels, example_weights=np.ones(3, np.float32)
    )
    assert np.isnan(loss)
    with pytest.raises(checkify.JaxRuntimeError, match="got 9"):
        err.throw()


def test_closed_form_gradients(x64):
    # d L / d x = m v w_y (P - Y) / S and d L / d v = m w_y (l - L) / S.
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(7, 5)) * 2
    labels = rng.integers(0, 5, 7)
    w = rng.uniform(0.5, 2, 5)
    v = _weights(rng, (7,))
    v[3] = 0.0
    where = np.array([1, 1, 0, 1, 1, 1, 1], bool)
    dx, dv = jax.grad(
        lambda x, v: jaxce.softmax_cross_entropy(
            x, labels, weights=w, where=where, example_weights=v
        ),
        argnums=(0, 1),
    )(logits, v)
    expected_dx = ref.softmax_cross_entropy_grad(
        logits, labels, weights=w, where=where, example_weights=v
    )
    expected_dv = ref.softmax_cross_entropy_example_weights_grad(
        logits, labels, v, weights=w, where=where
    )
    np.testing.assert_allclose(dx, expected_dx, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(dv, expected_dv, rtol=1e-12, atol=1e-15)


# Broadcasting and transformations.


def test_weights_broadcast_and_their_gradient_sums_back(x64):
    # (N, K, d) logits with axis=1: examples (N, d); one weight per row of d positions.
    rng = np.random.default_rng(8)
    logits = rng.normal(size=(3, 5, 4))
    labels = rng.integers(0, 5, (3, 4))
    v = rng.uniform(0.5, 2, (3, 1))

    def f(v):
        return jaxce.softmax_cross_entropy(logits, labels, axis=1, example_weights=v)

    loss, dv = jax.value_and_grad(f)(v)
    full = np.broadcast_to(v, (3, 4))
    moved = np.moveaxis(logits, 1, -1)
    np.testing.assert_allclose(loss, ref.softmax_cross_entropy(moved, labels, example_weights=full))
    full_dv = jax.grad(lambda v: jaxce.softmax_cross_entropy(moved, labels, example_weights=v))(
        jnp.asarray(full)
    )
    assert dv.shape == (3, 1)
    np.testing.assert_allclose(dv, np.sum(full_dv, axis=1, keepdims=True), rtol=1e-12)
    # A scalar weight changes nothing in the mean and scales the sum.
    for s in (0.5, 3.0):
        np.testing.assert_allclose(f(jnp.float64(s)), f(None), rtol=1e-14)
        np.testing.assert_allclose(
            jaxce.softmax_cross_entropy(logits, labels, axis=1, example_weights=s, reduction="sum"),
            s * jaxce.softmax_cross_entropy(logits, labels, axis=1, reduction="sum"),
            rtol=1e-14,
        )


def test_elementwise_weights_of_binary_losses_broadcast_per_row(x64):
    rng = np.random.default_rng(9)
    logits, labels = rng.normal(size=(4, 3)), rng.random((4, 3))
    v = rng.uniform(0.5, 2, (4, 1))  # one weight per row of (N, K) multi-label logits
    got = jaxce.sigmoid_binary_cross_entropy(logits, labels, example_weights=v)
    expected = ref.sigmoid_binary_cross_entropy(logits, labels, example_weights=v)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    # Unlike element `weights`, example weights enter the normaliser.
    by_weights = jaxce.sigmoid_binary_cross_entropy(logits, labels, weights=v)
    np.testing.assert_allclose(by_weights * 12 / np.sum(3 * v), got, rtol=1e-12)


def test_traced_weights_compile_once():
    rng = np.random.default_rng(11)
    logits = rng.normal(size=(6, 4)).astype(np.float32)
    labels = rng.integers(0, 4, 6).astype(np.int32)
    calls = [(logits, labels) for _ in range(3)]
    size = assert_cached(jaxce.softmax_cross_entropy, calls, example_weights=np.ones(6, np.float32))
    for seed in range(3):
        v = np.random.default_rng(seed).random(6).astype(np.float32)
        jaxce.softmax_cross_entropy(logits, labels, example_weights=v)
    assert cache_size(jaxce.softmax_cross_entropy) == size


def test_vmap_of_grad_and_second_order(x64):
    rng = np.random.default_rng(12)
    logits = rng.normal(size=(3, 4, 5))
    labels = rng.integers(0, 5, (3, 4))
    v = rng.uniform(0.5, 2, (3, 4))

    def loss(x, v, y):
        return jaxce.softmax_cross_entropy(x, y, example_weights=v, label_smoothing=0.1)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    grads = jax.jit(jax.vmap(grad))(logits, v, labels)
    for i in range(3):
        for got, want in zip(grads, grad(logits[i], v[i], labels[i]), strict=True):
            np.testing.assert_allclose(got[i], want, rtol=1e-12)
    assert_derivatives_match_differences(
        lambda x, v: loss(x, v, labels[0]), (logits[0], v[0]), order=2
    )
    assert_derivatives_match_differences(
        lambda x, v: jaxce.sigmoid_focal_loss(x, (labels[0] > 2) * 1.0, example_weights=v),
        (logits[0, :, 0], v[0]),
        order=2,
    )


def test_learned_example_weights_gradient_matches_finite_difference(x64):
    # A reweighting function of parameters: the gradient flows through the weights.
    rng = np.random.default_rng(13)
    logits = rng.normal(size=(8, 3))
    labels = rng.integers(0, 3, 8)
    feature = rng.normal(size=(8,))

    def loss(theta):
        return jaxce.softmax_cross_entropy(
            logits, labels, example_weights=jax.nn.softplus(theta * feature)
        )

    assert_derivatives_match_differences(loss, (0.7,), order=2)


# Dtypes and bad input.


def test_dtypes_follow_the_inputs():
    rng = np.random.default_rng(14)
    logits = jnp.asarray(rng.normal(size=(4, 3)), jnp.bfloat16)
    labels = np.array([0, 1, 2, 1])
    v = jnp.asarray([1.0, 2.0, 0.0, 0.5], jnp.bfloat16)
    loss, (dx, dv) = jax.value_and_grad(
        lambda x, v: jaxce.softmax_cross_entropy(x, labels, example_weights=v), argnums=(0, 1)
    )(logits, v)
    assert loss.dtype == jnp.float32 and dx.dtype == jnp.bfloat16 and dv.dtype == jnp.bfloat16
    with jax.enable_x64(True):
        # A float64 weight is not rounded to the float32 logits' type: the loss is float64.
        v64 = jnp.asarray([1.0, 2.0, 0.0, 1 / 3], jnp.float64)
        x32 = jnp.asarray(logits, jnp.float32)
        loss, (dx, dv) = jax.value_and_grad(
            lambda x, v: jaxce.softmax_cross_entropy(x, labels, example_weights=v), argnums=(0, 1)
        )(x32, v64)
        assert loss.dtype == jnp.float64 and dx.dtype == jnp.float32 and dv.dtype == jnp.float64
        for entry in LOSSES:
            arrays = _f32(entry.data(3, 4))
            v = jnp.ones(entry.example_shape(3, 4), jnp.float64)
            value = jax.eval_shape(
                lambda arrays, v, entry=entry: entry(arrays, example_weights=v), arrays, v
            )
            assert value.dtype == jnp.float64, entry.name


def test_negative_and_non_finite_weights_are_used_as_given(x64):
    rng = np.random.default_rng(15)
    logits = rng.normal(size=(4, 3))
    labels = np.array([0, 1, 2, 1])
    v = np.array([1.0, -0.5, 2.0, 1.0])  # a negative weight: gradient ascent on that example
    for reduction in ("mean", "sum", "none"):
        got = jaxce.softmax_cross_entropy(logits, labels, example_weights=v, reduction=reduction)
        expected = ref.softmax_cross_entropy(logits, labels, example_weights=v, reduction=reduction)
        np.testing.assert_allclose(got, expected, rtol=1e-12)
    dx = jax.grad(jaxce.softmax_cross_entropy)(logits, labels, example_weights=v, reduction="sum")
    np.testing.assert_allclose(dx[1], -0.5 * (ref.softmax(logits[1]) - np.eye(3)[1]), rtol=1e-12)
    # Weights that cancel: S = 0, and the mean is 0 rather than NaN.
    zero_sum = np.array([1.0, -1.0, 0.0, 0.0])
    assert jaxce.softmax_cross_entropy(logits, labels, example_weights=zero_sum) == 0
    # NaN and inf are not dropped: the loss shows them.
    for bad in (np.nan, np.inf):
        v_bad = np.array([1.0, bad, 1.0, 1.0])
        assert not np.isfinite(jaxce.softmax_cross_entropy(logits, labels, example_weights=v_bad))
        losses = jaxce.sigmoid_focal_loss(
            logits, np.ones_like(logits), example_weights=v_bad[:, None], reduction="none"
        )
        losses = np.asarray(losses)
        assert not np.all(np.isfinite(losses[1])) and np.all(np.isfinite(losses[[0, 2, 3]]))


BAD_WEIGHTS = [
    (TypeError, "example_weights must be a floating array", np.ones(N, np.int32)),
    (TypeError, "example_weights must be a floating array", np.ones(N, bool)),
    (ValueError, r"example_weights must be broadcastable to the examples' shape", np.ones(7)),
]


@pytest.mark.parametrize("name", NAMES)
def test_bad_weights_raise_naming_the_argument(name):
    loss = BY_NAME[name]
    arrays = _f32(loss.data(N, K, seed=16))
    for error, message, v in BAD_WEIGHTS:
        with pytest.raises(error, match=message):
            jax.eval_shape(lambda arrays, v=v: loss(arrays, example_weights=v), arrays)


def test_bad_weights_raise_under_jit():
    f = jax.jit(lambda x, v: jaxce.softmax_cross_entropy(x, np.zeros(2, int), example_weights=v))
    with pytest.raises(ValueError, match=r"shape \(2,\); got \(3,\)"):
        f(np.ones((2, 3), np.float32), np.ones(3, np.float32))


# Property tests: masks and weights (zeros included) against the oracle, through the
# program the oracle tests compiled (the shapes are the other tests').


@settings(max_examples=25, deadline=None)
@given(data=st.data(), name=st.sampled_from(NAMES))
def test_property_matches_oracle(data, name):
    loss = BY_NAME[name]
    shape = loss.example_shape(N, K)
    with jax.enable_x64(True):
        arrays = loss.data(N, K, seed=NAMES.index(name))
        where = data.draw(hnp.arrays(np.bool_, shape))
        weight = st.sampled_from([0.0, 0.25, 1.0, 2.5]) | st.floats(1e-3, 4.0)
        v = data.draw(hnp.arrays(np.float64, shape, elements=weight))
        ones = np.ones(_broadcast_shape(loss))
        cotangents = {"mean": 1.0, "sum": 1.0, "none": np.ones(shape)}
        out = _program(name)(arrays, v, ones, where, cotangents, 1.0)
        counted = where & (v != 0)
        for r in REDUCTIONS:
            got, (d_floats, dv) = out[r]["weighted"]
            expected = loss.reference(arrays, example_weights=v, where=where, reduction=r)
            np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
            assert np.all(np.isfinite(dv))
            # An example that does not count gets exactly zero gradient.
            assert np.all(np.asarray(d_floats[0])[~counted] == 0)
