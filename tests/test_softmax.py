"""Softmax cross-entropy, NLL, label smoothing and softmax: oracles, PyTorch parity, gradients."""

import itertools
import re

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.experimental import checkify

import jaxce
from tests import reference as ref
from tests.helpers import (
    assert_cached,
    assert_derivatives_match_differences,
    central_difference,
    class_data,
    probabilities,
)

# Golden values printed in the tutorials.


def test_golden_two_examples():
    logits = jnp.array([[2.0, 1.0, 0.1], [0.0, 5.0, 0.2]])
    labels = jnp.array([0, 1])
    loss, grad = jax.value_and_grad(jaxce.softmax_cross_entropy)(logits, labels)
    np.testing.assert_allclose(loss, 0.2159, atol=5e-5)
    np.testing.assert_allclose(
        grad,
        [[-0.17049944, 0.12121648, 0.04928295], [0.00331929, -0.00737348, 0.00405419]],
        atol=1e-7,
    )


def test_golden_weighted():
    logits = jnp.array([[2.0, 1.0], [2.0, 1.0]])
    labels = jnp.array([1, 1])
    weights = jnp.array([1.0, 10.0])
    loss, grad = jax.value_and_grad(jaxce.softmax_cross_entropy)(logits, labels, weights=weights)
    np.testing.assert_allclose(loss, 1.3133, atol=5e-5)
    np.testing.assert_allclose(grad, [[0.3655293, -0.3655293], [0.3655293, -0.3655293]], atol=1e-7)


def test_golden_probability_labels():
    # Q = softmax(log Q); true class 1 gives -ln 0.5, as integer or one-hot label.
    logits = jnp.log(jnp.array([0.2, 0.5, 0.3]))
    expected = -np.log(0.5)
    np.testing.assert_allclose(jaxce.softmax_cross_entropy(logits, jnp.array(1)), expected, 1e-6)
    onehot = jnp.array([0.0, 1.0, 0.0])
    np.testing.assert_allclose(jaxce.softmax_cross_entropy(logits, onehot), expected, 1e-6)


# Float64 oracle over option combinations, eager and jit.

OPTIONS = list(
    itertools.product(
        [None, "weights"],  # weights
        [None, 2],  # ignore_index
        [0.0, 0.2],  # label_smoothing
        ["mean", "sum", "none"],
        [False, True],  # where
    )
)


@pytest.mark.parametrize("weights,ignore_index,smoothing,reduction,use_where", OPTIONS)
def test_oracle_integer_labels(x64, weights, ignore_index, smoothing, reduction, use_where):
    logits, labels = class_data((6, 5), 5, seed=3)
    logits = logits.astype(np.float64)
    w = np.linspace(0.5, 2.0, 5) if weights else None
    where = np.array([True, False, True, True, False, True]) if use_where else None
    kwargs = dict(
        weights=w,
        ignore_index=ignore_index,
        label_smoothing=smoothing,
        reduction=reduction,
        where=where,
    )
    expected = ref.softmax_cross_entropy(logits, labels, **kwargs)
    got = jaxce.softmax_cross_entropy(logits, labels, **kwargs)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("weights", [None, "weights"])
@pytest.mark.parametrize("smoothing", [0.0, 0.3])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_oracle_probability_labels(x64, weights, smoothing, reduction):
    logits, _ = class_data((4, 3, 7), 7, seed=4)
    logits = logits.astype(np.float64)
    probs = probabilities((4, 3, 7)).astype(np.float64)
    w = np.linspace(2.0, 0.5, 7) if weights else None
    kwargs = dict(weights=w, label_smoothing=smoothing, reduction=reduction)
    expected = ref.softmax_cross_entropy(logits, probs, **kwargs)
    np.testing.assert_allclose(
        jaxce.softmax_cross_entropy(logits, probs, **kwargs), expected, rtol=1e-12, atol=1e-12
    )


def test_oracle_z_loss(x64):
    logits, labels = class_data((5, 4), 4, seed=5)
    logits = logits.astype(np.float64)
    for labels_ in (labels, probabilities((5, 4)).astype(np.float64)):
        expected = ref.softmax_cross_entropy(logits, labels_, z_loss=1e-2, label_smoothing=0.1)
        got = jaxce.softmax_cross_entropy(logits, labels_, z_loss=1e-2, label_smoothing=0.1)
        np.testing.assert_allclose(got, expected, rtol=1e-12)
        assert_derivatives_match_differences(
            lambda x, y=labels_: jaxce.softmax_cross_entropy(x, y, z_loss=1e-2), (logits,), order=2
        )


def test_closed_form_gradient(x64):
    logits, labels = class_data((7, 6), 6, seed=6)
    logits = logits.astype(np.float64)
    w = np.linspace(0.1, 3.0, 6)
    where = np.array([1, 1, 0, 1, 1, 0, 1], bool)
    grad = jax.grad(jaxce.softmax_cross_entropy)(logits, labels, weights=w, where=where)
    expected = ref.softmax_cross_entropy_grad(logits, labels, weights=w, where=where)
    np.testing.assert_allclose(grad, expected, rtol=1e-12, atol=1e-15)


# PyTorch parity, values and gradients, float64.

# Spot checks: every option value meets every other at least once (the float64 oracle above
# runs the whole product). ignore_index with probability labels is an error, tested with the
# other bad inputs.
TORCH_OPTIONS = [
    # weights, ignore_index, label_smoothing, reduction, labels, spatial dims (N, C, d1, d2)
    (False, None, 0.0, "mean", "int", False),
    (True, 1, 0.1, "mean", "int", True),
    (True, None, 0.1, "sum", "prob", False),
    (False, 1, 0.0, "sum", "int", True),
    (True, 1, 0.0, "none", "int", False),
    (False, None, 0.1, "none", "prob", True),
    (True, None, 0.0, "mean", "prob", True),
    (False, 1, 0.1, "sum", "int", False),
    (True, None, 0.0, "none", "int", True),
]


def _numerical_grad(f, w, eps=1e-6):
    """Central differences of a float64 NumPy function."""
    grad = np.zeros_like(w)
    for i in range(w.size):
        step = np.zeros_like(w)
        step.flat[i] = eps
        grad.flat[i] = (f(w + step) - f(w - step)) / (2 * eps)
    return grad


@pytest.mark.parametrize("use_weights,ignore_index,smoothing,reduction,kind,spatial", TORCH_OPTIONS)
def test_torch_parity(x64, use_weights, ignore_index, smoothing, reduction, kind, spatial):
    k = 5
    shape = (4, k, 3, 2) if spatial else (8, k)
    rng = np.random.default_rng(7)
    logits = rng.normal(size=shape) * 2
    if kind == "int":
        labels = rng.integers(0, k, size=shape[:1] + shape[2:])
        labels.flat[0] = (ignore_index or 0) if ignore_index is not None else labels.flat[0]
    else:
        labels = rng.random(shape) ** 2
        labels /= labels.sum(axis=1, keepdims=True)
    weights = rng.random(k) + 0.5 if use_weights else None

    x_t = torch.tensor(logits, requires_grad=True)
    y_t = torch.tensor(labels)
    w_t = torch.tensor(weights) if use_weights else None
    loss_t = torch.nn.functional.cross_entropy(
        x_t,
        y_t,
        weight=w_t,
        ignore_index=-100 if ignore_index is None else ignore_index,
        reduction=reduction,
        label_smoothing=smoothing,
    )
    cot = rng.normal(size=loss_t.shape)
    (grad_t,) = torch.autograd.grad(loss_t, x_t, torch.tensor(cot))

    def f(x, w):
        return jaxce.softmax_cross_entropy(
            x,
            labels,
            axis=1,
            weights=w,
            ignore_index=ignore_index,
            label_smoothing=smoothing,
            reduction=reduction,
        )

    loss, vjp = jax.vjp(f, logits, weights)
    np.testing.assert_allclose(loss, loss_t.detach().numpy(), rtol=1e-10, atol=1e-12)
    dx, dw = vjp(jnp.asarray(cot))
    np.testing.assert_allclose(dx, grad_t.numpy(), rtol=1e-9, atol=1e-12)
    if use_weights:
        # PyTorch does not differentiate its class weights; the float64 oracle does.
        def oracle(w):
            loss = ref.softmax_cross_entropy(
                logits,
                labels,
                axis=1,
                weights=w,
                ignore_index=ignore_index,
                label_smoothing=smoothing,
                reduction=reduction,
            )
            return np.sum(loss * cot)

        np.testing.assert_allclose(dw, _numerical_grad(oracle, weights), rtol=1e-6, atol=1e-9)


def test_torch_parity_probability_label_gradient(x64):
    rng = np.random.default_rng(8)
    logits = rng.normal(size=(6, 4))
    probs = rng.random((6, 4))
    weights = rng.random(4) + 0.5
    tensors = [torch.tensor(a, requires_grad=True) for a in (logits, probs, weights)]
    loss_t = torch.nn.functional.cross_entropy(
        tensors[0], tensors[1], weight=tensors[2], label_smoothing=0.2
    )
    grads_t = torch.autograd.grad(loss_t, tensors)
    loss, grads = jax.value_and_grad(
        lambda x, p, w: jaxce.softmax_cross_entropy(x, p, weights=w, label_smoothing=0.2),
        argnums=(0, 1, 2),
    )(logits, probs, weights)
    np.testing.assert_allclose(loss, loss_t.item(), rtol=1e-12)
    for got, want in zip(grads, grads_t, strict=True):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-10, atol=1e-14)


def test_nll_loss_matches_torch(x64):
    rng = np.random.default_rng(9)
    log_probs = ref.log_softmax(rng.normal(size=(5, 4, 3)), axis=1)
    labels = rng.integers(0, 4, size=(5, 3))
    labels[0, 0] = 2
    weights = rng.random(4) + 0.2
    for reduction in ("mean", "sum", "none"):
        x_t = torch.tensor(log_probs, requires_grad=True)
        loss_t = torch.nn.functional.nll_loss(
            x_t,
            torch.tensor(labels),
            weight=torch.tensor(weights),
            ignore_index=2,
            reduction=reduction,
        )
        cot = rng.normal(size=loss_t.shape)
        (grad_t,) = torch.autograd.grad(loss_t, x_t, torch.tensor(cot))
        loss, vjp = jax.vjp(
            lambda lp, r=reduction: jaxce.nll_loss(
                lp, labels, axis=1, weights=weights, ignore_index=2, reduction=r
            ),
            log_probs,
        )
        np.testing.assert_allclose(loss, loss_t.detach().numpy(), rtol=1e-12)
        np.testing.assert_allclose(vjp(jnp.asarray(cot))[0], grad_t.numpy(), rtol=1e-12)


def test_nll_equals_cross_entropy_of_log_softmax():
    logits, labels = class_data((6, 5), 5, seed=10)
    np.testing.assert_allclose(
        jaxce.nll_loss(jaxce.log_softmax(logits), labels),
        jaxce.softmax_cross_entropy(logits, labels),
        rtol=1e-6,
    )


# Gradients: against central differences, higher order, exactness for every floating input.


@pytest.mark.parametrize("smoothing", [0.0, 0.25])
def test_check_grads_order2_float64(x64, smoothing):
    logits, labels = class_data((3, 5), 5, seed=12)
    logits = logits.astype(np.float64)
    probs = probabilities((3, 5)).astype(np.float64)
    weights = np.linspace(0.5, 1.5, 5)
    where = np.array([True, False, True])

    def int_loss(x, w):
        return jaxce.softmax_cross_entropy(
            x, labels, weights=w, label_smoothing=smoothing, where=where
        )

    def prob_loss(x, p, w):
        return jaxce.softmax_cross_entropy(x, p, weights=w, label_smoothing=smoothing)

    assert_derivatives_match_differences(int_loss, (logits, weights), order=2)
    assert_derivatives_match_differences(prob_loss, (logits, probs, weights), order=2)
    assert_derivatives_match_differences(
        lambda x: jaxce.softmax_cross_entropy(x, labels, reduction="none"), (logits,), order=2
    )


def test_hessian_is_softmax_jacobian(x64):
    logits = np.array([0.3, -1.2, 2.0, 0.5])
    hess = jax.hessian(jaxce.softmax_cross_entropy)(logits, jnp.array(2))
    p = ref.softmax(logits)
    np.testing.assert_allclose(hess, np.diag(p) - np.outer(p, p), rtol=1e-12, atol=1e-15)


def test_grad_of_grad_through_weights(x64):
    logits, labels = class_data((4, 3), 3, seed=13)
    logits = logits.astype(np.float64)

    def inner(w):
        g = jax.grad(jaxce.softmax_cross_entropy)(logits, labels, weights=w)
        return jnp.sum(g**2)

    assert_derivatives_match_differences(inner, (np.array([0.5, 1.0, 2.0]),))


def test_denominator(x64):
    logits, labels = class_data((6, 4), 4, seed=14)
    logits = logits.astype(np.float64)
    total = ref.softmax_cross_entropy(logits, labels, reduction="sum")
    loss, (dx, dd) = jax.value_and_grad(
        lambda x, d: jaxce.softmax_cross_entropy(x, labels, denominator=d), argnums=(0, 1)
    )(logits, 17.0)
    np.testing.assert_allclose(loss, total / 17.0, rtol=1e-12)
    np.testing.assert_allclose(dd, -total / 17.0**2, rtol=1e-12)
    np.testing.assert_allclose(
        dx,
        jax.grad(jaxce.softmax_cross_entropy)(logits, labels, reduction="sum") / 17.0,
        rtol=1e-12,
    )
    # Micro-batches with a shared denominator add up to the full-batch mean.
    parts = [
        jaxce.softmax_cross_entropy(logits[i : i + 2], labels[i : i + 2], denominator=6)
        for i in range(0, 6, 2)
    ]
    np.testing.assert_allclose(sum(parts), ref.softmax_cross_entropy(logits, labels), 1e-12)
    assert jaxce.softmax_cross_entropy(logits, labels, denominator=0) == 0


# Transformations.


def test_vmap_equals_batched():
    logits, labels = class_data((5, 3, 4), 4, seed=15)
    per_batch = jax.vmap(jaxce.softmax_cross_entropy)(logits, labels)
    expected = jnp.stack([jaxce.softmax_cross_entropy(logits[i], labels[i]) for i in range(5)])
    np.testing.assert_allclose(per_batch, expected, rtol=1e-6)
    grads = jax.vmap(jax.grad(jaxce.softmax_cross_entropy))(logits, labels)
    for i in range(5):
        np.testing.assert_allclose(
            grads[i], jax.grad(jaxce.softmax_cross_entropy)(logits[i], labels[i]), rtol=1e-6
        )


@pytest.mark.parametrize("kind", ["int", "prob"])
def test_axis_equals_moveaxis(kind):
    logits, labels = class_data((3, 5, 4, 2), 5, axis=1, seed=16)
    if kind == "prob":
        labels = probabilities(logits.shape, axis=1)
    w = np.linspace(1, 2, 5).astype(np.float32)
    moved_labels = labels if kind == "int" else np.moveaxis(labels, 1, -1)
    kw = dict(weights=w, label_smoothing=0.1, reduction="none")
    got, grad = (
        jax.value_and_grad(lambda x: jaxce.softmax_cross_entropy(x, labels, axis=1, **kw).sum())(
            logits
        ),
        jax.grad(lambda x: jaxce.softmax_cross_entropy(x, labels, axis=1, **kw).sum())(logits),
    )
    moved = np.moveaxis(logits, 1, -1)
    expected = jaxce.softmax_cross_entropy(moved, moved_labels, **kw).sum()
    expected_grad = jax.grad(lambda x: jaxce.softmax_cross_entropy(x, moved_labels, **kw).sum())(
        moved
    )
    np.testing.assert_allclose(got[0], expected, rtol=1e-6)
    np.testing.assert_allclose(grad, np.moveaxis(expected_grad, -1, 1), rtol=1e-5, atol=1e-7)
    assert jaxce.softmax_cross_entropy(logits, labels, axis=-3).shape == ()


def test_where_equals_slicing_and_zero_gradient():
    logits, labels = class_data((8, 5), 5, seed=17)
    where = np.array([1, 0, 1, 1, 0, 0, 1, 1], bool)
    logits[~where] = np.nan  # garbage in masked rows must not leak
    loss, grad = jax.value_and_grad(jaxce.softmax_cross_entropy)(logits, labels, where=where)
    sliced = jaxce.softmax_cross_entropy(logits[where], labels[where])
    np.testing.assert_allclose(loss, sliced, rtol=1e-6)
    assert np.all(np.asarray(grad)[~where] == 0)
    np.testing.assert_allclose(
        np.asarray(grad)[where],
        jax.grad(jaxce.softmax_cross_entropy)(logits[where], labels[where]),
        rtol=1e-6,
    )


def test_where_broadcasts_over_examples():
    logits, labels = class_data((2, 3, 4), 4, seed=18)
    where = np.array([True, False, True])
    got = jaxce.softmax_cross_entropy(logits, labels, where=where, reduction="none")
    assert np.all(np.asarray(got)[:, 1] == 0) and np.all(np.asarray(got)[:, [0, 2]] > 0)


def test_ignore_index_equals_where():
    logits, labels = class_data((9, 4), 4, seed=19)
    labels[[1, 5]] = -100
    by_index = jax.value_and_grad(jaxce.softmax_cross_entropy)(logits, labels, ignore_index=-100)
    by_where = jax.value_and_grad(jaxce.softmax_cross_entropy)(
        logits, np.where(labels < 0, 0, labels), where=labels >= 0
    )
    for a, b in zip(by_index, by_where, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_all_ignored_is_zero_with_zero_gradient():
    logits, _ = class_data((4, 3), 3, seed=20)
    ignored = np.full(4, 7)
    for labels, kwargs in (
        (ignored, dict(ignore_index=7)),
        (ignored, dict(ignore_index=7, label_smoothing=0.3, z_loss=0.1)),
        (ignored % 3, dict(where=np.zeros(4, bool))),
        (ignored, dict(where=np.zeros(4, bool), weights=np.ones(3, np.float32))),
    ):
        loss, grad = jax.value_and_grad(jaxce.softmax_cross_entropy)(logits, labels, **kwargs)
        assert loss == 0 and np.all(np.asarray(grad) == 0)
    probs = probabilities((4, 3))
    loss, grad = jax.value_and_grad(jaxce.softmax_cross_entropy)(
        logits, probs, where=np.zeros(4, bool)
    )
    assert loss == 0 and np.all(np.asarray(grad) == 0)


def test_cached_and_no_retrace():
    calls = [class_data((4, 3), 3, seed=seed) for seed in (21, 0, 1, 2)]
    assert_cached(jaxce.softmax_cross_entropy, calls)


# Numerics.


def test_neg_inf_logits_finite_with_zero_gradient():
    logits = np.array([[0.0, -np.inf, 1.0, 2.0], [-np.inf, 3.0, -np.inf, 0.5]], np.float32)
    labels = np.array([2, 1])
    for kwargs in ({}, {"label_smoothing": 0.2}, {"weights": np.ones(4, np.float32) * 2}):
        loss, grad = jax.value_and_grad(jaxce.softmax_cross_entropy)(logits, labels, **kwargs)
        assert np.isfinite(loss) and np.all(np.isfinite(grad))
        assert np.all(np.asarray(grad)[np.isinf(logits)] == 0)
    # Smoothing mass goes to the finite classes only: equals smoothing over the kept classes.
    smoothed = jaxce.softmax_cross_entropy(logits[:1], labels[:1], label_smoothing=0.2)
    kept = jaxce.softmax_cross_entropy(logits[:1, [0, 2, 3]], np.array([1]), label_smoothing=0.2)
    np.testing.assert_allclose(smoothed, kept, rtol=1e-6)


def test_zero_log_zero_probability_labels():
    logits = np.array([[0.0, -np.inf, 1.0]], np.float32)
    probs = np.array([[0.25, 0.0, 0.75]], np.float32)
    loss, (dx, dp) = jax.value_and_grad(jaxce.softmax_cross_entropy, argnums=(0, 1))(logits, probs)
    expected = ref.softmax_cross_entropy(logits, probs)
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    assert np.all(np.isfinite(dx)) and dx[0, 1] == 0
    assert np.isfinite(dp[0, 0]) and np.isfinite(dp[0, 2])


@pytest.mark.parametrize("scale", [1e4, -1e4])
def test_extreme_logits_finite(scale):
    logits, labels = class_data((6, 5), 5, seed=22)
    logits = logits * scale
    for labels_ in (labels, probabilities(logits.shape)):
        loss, grad = jax.value_and_grad(jaxce.softmax_cross_entropy)(
            logits, labels_, label_smoothing=0.1, z_loss=1e-4
        )
        assert np.isfinite(loss) and np.all(np.isfinite(grad))
    expected = ref.softmax_cross_entropy(logits, labels)
    np.testing.assert_allclose(jaxce.softmax_cross_entropy(logits, labels), expected, rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_dtype_contract(dtype):
    logits, labels = class_data((16, 10), 10, seed=23)
    half = jnp.asarray(logits, dtype)
    loss, grad = jax.value_and_grad(jaxce.softmax_cross_entropy)(half, labels)
    assert loss.dtype == jnp.float32 and grad.dtype == dtype
    exact = ref.softmax_cross_entropy(np.asarray(half.astype(jnp.float32)), labels)
    np.testing.assert_allclose(loss, exact, rtol=1e-6)
    per_example = jaxce.softmax_cross_entropy(half, labels, reduction="none")
    assert per_example.dtype == jnp.float32
    probs = jnp.asarray(probabilities((16, 10)), dtype)
    loss_p, grads = jax.value_and_grad(jaxce.softmax_cross_entropy, argnums=(0, 1))(half, probs)
    assert loss_p.dtype == jnp.float32 and grads[0].dtype == dtype and grads[1].dtype == dtype


def test_float64_stays_float64(x64):
    logits, labels = class_data((3, 4), 4, seed=24)
    loss = jaxce.softmax_cross_entropy(logits.astype(np.float64), labels)
    assert loss.dtype == jnp.float64


def test_out_of_range_labels_are_nan_and_checkified():
    logits, labels = class_data((4, 3), 3, seed=25)
    for bad in (3, -1, -100):
        labels_ = labels.copy()
        labels_[2] = bad
        losses = jaxce.softmax_cross_entropy(logits, labels_, reduction="none")
        assert np.isnan(losses[2]) and np.all(np.isfinite(np.asarray(losses)[[0, 1, 3]]))
        loss, grad = jax.value_and_grad(jaxce.softmax_cross_entropy)(logits, labels_)
        assert np.isnan(loss) and np.all(np.isnan(np.asarray(grad)[2]))
        err, _ = checkify.checkify(jax.jit(jaxce.softmax_cross_entropy))(logits, labels_)
        with pytest.raises(checkify.JaxRuntimeError, match=f"got {bad}"):
            err.throw()
    # A masked bad label is not an error.
    labels_ = labels.copy()
    labels_[2] = 9
    where = np.array([True, True, False, True])
    err, loss = checkify.checkify(jaxce.softmax_cross_entropy)(logits, labels_, where=where)
    err.throw()
    assert np.isfinite(loss)


def test_unsigned_labels_with_negative_ignore_index():
    logits, labels = class_data((4, 3), 3, seed=26)
    got = jaxce.softmax_cross_entropy(logits, labels.astype(np.uint8), ignore_index=-100)
    np.testing.assert_allclose(got, jaxce.softmax_cross_entropy(logits, labels), rtol=1e-6)


@pytest.mark.parametrize(
    "loss",
    [
        lambda x, y: jaxce.softmax_cross_entropy(x, y, z_loss=1e-3),
        lambda x, y: jaxce.softmax_cross_entropy(x, y, label_smoothing=0.1),
        lambda x, y: jaxce.nll_loss(x, y),
        lambda x, y: jaxce.softmax_focal_loss(x, y),
        lambda x, y: jaxce.poly1_cross_entropy(x, y),
    ],
)
def test_target_logit_is_gathered_on_one_device(loss):
    # The target logits are one gather of N values, not a pass over the N x K logits
    # (on a mesh whose class axis is split the pick is local: tests/sharding_checks.py).
    n, k = 8, 16
    logits, labels = class_data((n, k), k, seed=27)
    text = jax.jit(jax.value_and_grad(loss)).lower(logits, labels).compile().as_text()
    gathered = re.findall(r"= \w+\[([\d,]*)\][^ ]* gather\(", text)
    assert gathered, "no gather of the target logits"
    assert all(np.prod([int(d) for d in shape.split(",")]) == n for shape in gathered), gathered
    assert not re.search(rf"\[{n},{k}\][^ ]* minimum\(", text), "a gather-free pick over N x K"


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_nll_gradient_is_a_select(dtype):
    # The pick's gradient compares with the class index in one pass writing the
    # logits' dtype: no scatter-add into zeros, which XLA widens to float32 for
    # bfloat16 (an N x K float32 temporary).
    n, k = 1024, 32768  # compiled only
    args = (jax.ShapeDtypeStruct((n, k), dtype), jax.ShapeDtypeStruct((n,), jnp.int32))
    step = jax.value_and_grad(lambda x, y: jaxce.nll_loss(x, y))  # as a training step calls it
    compiled = jax.jit(step).lower(*args).compile()
    assert " scatter(" not in compiled.as_text()
    assert compiled.memory_analysis().temp_size_in_bytes < n * k // 8


# Logit soft-capping: the loss sees c tanh(x / c).


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"label_smoothing": 0.2, "z_loss": 1e-2},
        {"weights": np.linspace(0.5, 2.0, 7), "label_smoothing": 0.1, "ignore_index": 2},
        {"reduction": "sum"},
        {"probs": True, "label_smoothing": 0.1},
    ],
)
def test_logit_softcap_matches_float64_oracle(options, x64):
    options = dict(options)
    logits, labels = class_data((5, 7), 7, seed=41)
    logits = 4 * logits
    if options.pop("probs", False):
        labels = probabilities((5, 7), seed=42)

    def oracle(x, c):
        return ref.softmax_cross_entropy(c * np.tanh(x / c), labels, **options)

    def loss(x, c):
        return jaxce.softmax_cross_entropy(x, labels, logit_softcap=c, **options)

    x64_logits, cap = np.asarray(logits, np.float64), 2.5
    value, (dx, dc) = jax.value_and_grad(loss, argnums=(0, 1))(x64_logits, cap)
    np.testing.assert_allclose(value, oracle(x64_logits, cap), rtol=1e-12)
    np.testing.assert_allclose(
        dx, central_difference(lambda x: oracle(x, cap), x64_logits), rtol=1e-6, atol=1e-8
    )
    want_dc = central_difference(lambda c: oracle(x64_logits, c[()]), np.array(cap))
    np.testing.assert_allclose(dc, want_dc, rtol=1e-6)


@settings(max_examples=6, deadline=None)
@given(
    shape=st.sampled_from([(1,), (6,), (3, 4), (2, 3, 5)]),  # few shapes: few compilations
    cap=st.floats(0.3, 20.0),
    seed=st.integers(0, 1000),
)
def test_property_logit_softcap_is_the_capped_loss(shape, cap, seed):
    k = shape[-1]
    logits, labels = class_data(shape, k, seed=seed)
    where = np.random.default_rng(seed).random(shape[:-1]) < 0.7

    def fused(x):
        return jaxce.softmax_cross_entropy(x, labels, logit_softcap=cap, where=where)

    def composed(x):
        return jaxce.softmax_cross_entropy(cap * jnp.tanh(x / cap), labels, where=where)

    got, want = jax.value_and_grad(fused)(logits), jax.value_and_grad(composed)(logits)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-4, atol=1e-6)


# Bad input: clear errors at trace time, naming the argument.

BAD_CALLS = [
    (
        TypeError,
        "logits",
        lambda: jaxce.softmax_cross_entropy(np.ones((2, 3), int), np.zeros(2, int)),
    ),
    (ValueError, "labels", lambda: jaxce.softmax_cross_entropy(np.ones((2, 3)), np.zeros(3, int))),
    (ValueError, "labels", lambda: jaxce.softmax_cross_entropy(np.ones((2, 3)), np.ones((2, 4)))),
    (TypeError, "labels", lambda: jaxce.softmax_cross_entropy(np.ones((2, 3)), np.zeros(2, bool))),
    (
        ValueError,
        "reduction",
        lambda: jaxce.softmax_cross_entropy(np.ones((2, 3)), np.zeros(2, int), reduction="avg"),
    ),
    (
        ValueError,
        "label_smoothing",
        lambda: jaxce.softmax_cross_entropy(np.ones((2, 3)), np.zeros(2, int), label_smoothing=1.5),
    ),
    (
        ValueError,
        "label_smoothing",
        lambda: jaxce.softmax_cross_entropy(
            np.ones((2, 3)), np.zeros(2, int), label_smoothing=-0.1
        ),
    ),
    (
        ValueError,
        "z_loss",
        lambda: jaxce.softmax_cross_entropy(np.ones((2, 3)), np.zeros(2, int), z_loss=-1.0),
    ),
    (
        ValueError,
        "weights",
        lambda: jaxce.softmax_cross_entropy(np.ones((2, 3)), np.zeros(2, int), weights=np.ones(4)),
    ),
    (
        TypeError,
        "weights",
        lambda: jaxce.softmax_cross_entropy(
            np.ones((2, 3)), np.zeros(2, int), weights=np.ones(3, int)
        ),
    ),
    (
        ValueError,
        "ignore_index",
        lambda: jaxce.softmax_cross_entropy(
            np.ones((2, 3)), np.ones((2, 3)) / 3, ignore_index=-100
        ),
    ),
    (
        TypeError,
        "ignore_index",
        lambda: jaxce.softmax_cross_entropy(np.ones((2, 3)), np.zeros(2, int), ignore_index=1.5),
    ),
    (
        ValueError,
        "axis",
        lambda: jaxce.softmax_cross_entropy(np.ones((2, 3)), np.zeros(2, int), axis=2),
    ),
    (ValueError, "logits", lambda: jaxce.softmax_cross_entropy(np.float32(1.0), np.zeros((), int))),
    (
        TypeError,
        "where",
        lambda: jaxce.softmax_cross_entropy(np.ones((2, 3)), np.zeros(2, int), where=np.ones(2)),
    ),
    (
        ValueError,
        "where",
        lambda: jaxce.softmax_cross_entropy(
            np.ones((2, 3)), np.zeros(2, int), where=np.ones(3, bool)
        ),
    ),
    (
        ValueError,
        "denominator",
        lambda: jaxce.softmax_cross_entropy(
            np.ones((2, 3)), np.zeros(2, int), denominator=np.ones(2)
        ),
    ),
    (TypeError, "log_probs", lambda: jaxce.nll_loss(np.ones((2, 3), int), np.zeros(2, int))),
    (TypeError, "labels", lambda: jaxce.nll_loss(np.ones((2, 3)), np.ones((2, 3)))),
    (ValueError, "epsilon", lambda: jaxce.smooth_labels(np.zeros(2, int), 2.0, num_classes=3)),
    (ValueError, "num_classes", lambda: jaxce.smooth_labels(np.zeros(2, int), 0.1)),
    (ValueError, "num_classes", lambda: jaxce.smooth_labels(np.ones((2, 3)), 0.1, num_classes=4)),
    (ValueError, "temperature", lambda: jaxce.softmax(np.ones(3), temperature=0.0)),
    (ValueError, "temperature", lambda: jaxce.log_softmax(np.ones(3), temperature=-1.0)),
    (ValueError, "reduction", lambda: jaxce.CrossEntropyLoss(reduction="avg")),
    (ValueError, "weights", lambda: jaxce.CrossEntropyLoss(weights=[[1.0]])),
]


@pytest.mark.parametrize("error,name,call", BAD_CALLS)
def test_bad_input_raises_naming_argument(error, name, call):
    with pytest.raises(error, match=name):
        call()


def test_errors_fire_under_jit():
    f = jax.jit(lambda x, y: jaxce.softmax_cross_entropy(x, y, label_smoothing=2.0))
    with pytest.raises(ValueError, match="label_smoothing must be in \\[0, 1\\]; got 2.0"):
        f(np.ones((2, 3)), np.zeros(2, int))
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\) .*; got \(3,\)"):
        jax.jit(jaxce.softmax_cross_entropy)(np.ones((2, 3)), np.zeros(3, int))


# Utilities and the dataclass.


def test_smooth_labels():
    got = jaxce.smooth_labels(np.array([0, 2]), 0.3, num_classes=4)
    expected = np.eye(4)[[0, 2]] * 0.7 + 0.3 / 4
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    np.testing.assert_allclose(
        jaxce.smooth_labels(np.eye(4, dtype=np.float32)[[0, 2]], 0.3), expected, 1e-6
    )
    moved = jaxce.smooth_labels(np.array([[0, 2]]), 0.3, num_classes=4, axis=1)
    np.testing.assert_allclose(moved[0], expected.T, rtol=1e-6)
    assert np.all(np.isnan(jaxce.smooth_labels(np.array([5]), 0.1, num_classes=4)))
    # CE with smoothed one-hot targets equals CE with label_smoothing (no -inf logits).
    logits, labels = class_data((5, 4), 4, seed=28)
    np.testing.assert_allclose(
        jaxce.softmax_cross_entropy(logits, jaxce.smooth_labels(labels, 0.2, num_classes=4)),
        jaxce.softmax_cross_entropy(logits, labels, label_smoothing=0.2),
        rtol=1e-6,
    )


def test_softmax_and_log_softmax_with_temperature(x64):
    x = np.array([[1000.0, 1001.0, 1002.0], [2.0, 1.0, 0.1]])
    for t in (0.5, 1.0, 4.0):
        np.testing.assert_allclose(
            jaxce.log_softmax(x, temperature=t), ref.log_softmax(x / t), 1e-12
        )
        np.testing.assert_allclose(jaxce.softmax(x, temperature=t), ref.softmax(x / t), 1e-12)
    where = np.array([True, False, True])
    masked = jaxce.softmax(x, where=where)
    np.testing.assert_allclose(masked[:, 1], 0)
    np.testing.assert_allclose(masked[:, [0, 2]], ref.softmax(x[:, [0, 2]]), 1e-12)
    assert np.all(jaxce.log_softmax(x, where=where)[:, 1] == -np.inf)
    # Temperature is differentiable (it can be fitted).
    grad_t = jax.grad(lambda t: jaxce.log_softmax(x[1], temperature=t)[0])(2.0)
    eps = 1e-6
    fd = (ref.log_softmax(x[1] / (2 + eps))[0] - ref.log_softmax(x[1] / (2 - eps))[0]) / (2 * eps)
    np.testing.assert_allclose(grad_t, fd, rtol=1e-6)
    half = jaxce.softmax(jnp.asarray(x, jnp.bfloat16))
    assert half.dtype == jnp.bfloat16


def test_cross_entropy_loss_dataclass():
    criterion = jaxce.CrossEntropyLoss(weights=np.array([1.0, 2.0, 3.0]), label_smoothing=0.1)
    assert criterion == jaxce.CrossEntropyLoss(weights=[1.0, 2.0, 3.0], label_smoothing=0.1)
    assert hash(criterion) == hash(jaxce.CrossEntropyLoss(weights=(1, 2, 3), label_smoothing=0.1))
    logits, labels = class_data((5, 3), 3, seed=29)
    expected = jaxce.softmax_cross_entropy(
        logits, labels, weights=np.array([1.0, 2.0, 3.0], np.float32), label_smoothing=0.1
    )
    np.testing.assert_allclose(criterion(logits, labels), expected, rtol=1e-6)

    @jax.jit
    def step(x, y):
        return jax.grad(lambda x: criterion(x, y))(x)

    jitted = jax.jit(lambda c, x, y: c(x, y), static_argnums=0)
    np.testing.assert_allclose(jitted(criterion, logits, labels), expected, rtol=1e-6)
    assert step(logits, labels).shape == logits.shape
    with pytest.raises(dataclasses_frozen_error()):
        criterion.reduction = "sum"


def dataclasses_frozen_error():
    import dataclasses

    return dataclasses.FrozenInstanceError


# Property tests.


@settings(max_examples=10, deadline=None)
@given(
    data=st.data(),
    n=st.sampled_from([1, 6]),  # few shapes: few compilations
    k=st.sampled_from([1, 2, 7]),
    smoothing=st.sampled_from([0.0, 0.1, 1.0]),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    magnitude=st.sampled_from([1.0, 30.0, 1e3]),
)
def test_property_matches_oracle(data, n, k, smoothing, reduction, magnitude):
    with jax.enable_x64(True):
        _check_against_oracle(data, n, k, smoothing, reduction, magnitude)


def _check_against_oracle(data, n, k, smoothing, reduction, magnitude):
    logits = (
        data.draw(hnp.arrays(np.float64, (n, k), elements=st.floats(-1, 1, allow_nan=False)))
        * magnitude
    )
    labels = data.draw(hnp.arrays(np.int32, (n,), elements=st.integers(0, k - 1)))
    where = data.draw(hnp.arrays(np.bool_, (n,)))
    weights = data.draw(hnp.arrays(np.float64, (k,), elements=st.floats(0.1, 5.0)))
    kwargs = dict(label_smoothing=smoothing, reduction=reduction, where=where, weights=weights)
    got, grad = jax.value_and_grad(
        lambda x: jnp.sum(jaxce.softmax_cross_entropy(x, labels, **kwargs))
    )(logits)
    expected = np.sum(ref.softmax_cross_entropy(logits, labels, **kwargs))
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
    assert np.all(np.isfinite(grad)) and np.all(np.asarray(grad)[~where] == 0)
    # Each row of the gradient sums to zero: softmax is shift invariant.
    np.testing.assert_allclose(np.sum(grad, axis=-1), 0, atol=1e-9 * max(1.0, magnitude))


@settings(max_examples=8, deadline=None)
@given(
    shape=st.sampled_from([(3,), (2, 4), (2, 1, 3), (2, 3, 1, 2)]),  # few shapes: few compilations
    data=st.data(),
)
def test_property_any_axis_probability_labels(shape, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    rng = np.random.default_rng(len(shape))
    logits = rng.normal(size=shape).astype(np.float32)
    probs = probabilities(shape, axis=axis)
    got = jaxce.softmax_cross_entropy(logits, probs, axis=axis, reduction="none")
    expected = ref.softmax_cross_entropy(logits, probs, axis=axis, reduction="none")
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-5)
    # Cross-entropy is at least the entropy of the targets (Gibbs' inequality).
    entropy = -np.sum(np.where(probs > 0, probs * np.log(np.maximum(probs, 1e-30)), 0), axis=axis)
    assert np.all(np.asarray(got) >= entropy - 1e-4)


@pytest.mark.parametrize("offset", [0.0, 1e4, -1e4])
def test_large_offsets_lose_no_precision(offset):
    # Small losses on logits far from 0: lse - x_y would lose |x| * eps to rounding;
    # the loss keeps full precision.
    base = np.array([[0.0, -1.0, -3.0, -0.5], [-2.0, 0.0, -7.0, -1.0]])
    logits = (base + offset).astype(np.float32)
    labels = np.array([1, 1])
    probs = probabilities((2, 4), seed=30)
    for labels_ in (labels, probs):
        loss, grad = jax.value_and_grad(jaxce.softmax_cross_entropy)(logits, labels_)
        np.testing.assert_allclose(loss, ref.softmax_cross_entropy(base, labels_), rtol=2e-6)
        expected_grad = jax.grad(jaxce.softmax_cross_entropy)(base.astype(np.float32), labels_)
        # The gradient may carry the rounding of lse, |lse| * eps: no more than rounding
        # the logits to float32 already does.
        rtol = 2 * max(1.0, abs(offset)) * np.finfo(np.float32).eps
        np.testing.assert_allclose(grad, expected_grad, rtol=rtol, atol=1e-7)


def test_probability_label_gradient_is_zero_at_masked_classes():
    logits = np.array([[0.5, -np.inf, 1.0]], np.float32)
    probs = np.array([[0.4, 0.0, 0.6]], np.float32)
    dp = jax.grad(jaxce.softmax_cross_entropy, argnums=1)(logits, probs, label_smoothing=0.1)
    assert dp[0, 1] == 0 and np.all(np.isfinite(dp))
    # Elsewhere it is (1 - eps) (lse - x_c) / N.
    lse = np.log(np.exp(0.5) + np.exp(1.0))
    np.testing.assert_allclose(dp[0, [0, 2]], 0.9 * (lse - np.array([0.5, 1.0])), rtol=1e-6)
