"""Binary cross-entropy from logits and probabilities: oracles, PyTorch parity, gradients."""

import dataclasses
import itertools

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxce
from tests import reference as ref
from tests.helpers import (
    assert_cached,
    assert_derivatives_match_differences,
    binary_data,
    torch_leaf,
)

bce = jaxce.sigmoid_binary_cross_entropy


# Golden values.


def test_golden_values():
    # x = 0 gives log 2 whatever the label; x = log 3 with y = 1 gives log(4/3).
    x = np.array([0.0, 0.0, np.log(3.0)], np.float32)
    y = np.array([0.0, 1.0, 1.0], np.float32)
    got = bce(x, y, reduction="none")
    np.testing.assert_allclose(got, [np.log(2), np.log(2), np.log(4 / 3)], rtol=1e-6)
    # pos_weight scales the positive term only.
    got = bce(x, y, pos_weight=np.float32(3.0), reduction="none")
    np.testing.assert_allclose(got, [np.log(2), 3 * np.log(2), 3 * np.log(4 / 3)], rtol=1e-6)
    np.testing.assert_allclose(
        jaxce.binary_cross_entropy(np.float32([0.25, 0.5]), np.float32([1, 0])),
        (np.log(4) + np.log(2)) / 2,
        rtol=1e-6,
    )


# Float64 oracle over option combinations, eager and jit.

# Each weights layout meets each reduction; pos_weight, smoothing and where vary across them.
OPTIONS = [
    (weights, "class" if i % 2 else None, 0.2 if i % 3 == 0 else 0.0, reduction, i % 4 < 2)
    for i, (weights, reduction) in enumerate(
        itertools.product([None, "full", "class", "row"], ["mean", "sum", "none"])
    )
]


def _options(shape, weights, pos_weight, use_where, seed=1):
    rng = np.random.default_rng(seed)
    n, k = shape
    w = {
        None: None,
        "full": rng.uniform(0.1, 2, shape),
        "class": rng.uniform(0.1, 2, (k,)),
        "row": rng.uniform(0.1, 2, (n, 1)),
    }[weights]
    p = None if pos_weight is None else rng.uniform(0.5, 4, (k,))
    where = rng.random(shape) > 0.3 if use_where else None
    return w, p, where


@pytest.mark.parametrize("weights,pos_weight,smoothing,reduction,use_where", OPTIONS)
def test_oracle(x64, weights, pos_weight, smoothing, reduction, use_where):
    logits, labels = binary_data((6, 4), seed=2, soft=True)
    w, p, where = _options((6, 4), weights, pos_weight, use_where)
    kwargs = dict(
        weights=w, pos_weight=p, label_smoothing=smoothing, where=where, reduction=reduction
    )
    expected = ref.sigmoid_binary_cross_entropy(logits, labels, **kwargs)
    x, y = logits.astype(np.float64), labels.astype(np.float64)
    got = bce(x, y, **kwargs)
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    if reduction == "sum":  # inlined into an enclosing jit
        jitted = jax.jit(
            lambda x, y, w, p, m: bce(
                x,
                y,
                weights=w,
                pos_weight=p,
                where=m,
                label_smoothing=smoothing,
                reduction=reduction,
            )
        )
        np.testing.assert_allclose(jitted(x, y, w, p, where), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_binary_cross_entropy_oracle(x64, reduction):
    rng = np.random.default_rng(3)
    probs = np.concatenate([rng.random(10), [0.0, 1.0, 0.0, 1.0]])
    labels = np.concatenate([rng.random(10), [0.0, 1.0, 1.0, 0.0]])
    weights = rng.uniform(0.5, 2.0, 14)
    where = rng.random(14) > 0.2
    kwargs = dict(weights=weights, where=where, reduction=reduction)
    got = jaxce.binary_cross_entropy(probs, labels, **kwargs)
    np.testing.assert_allclose(got, ref.binary_cross_entropy(probs, labels, **kwargs), rtol=1e-12)


# PyTorch parity: values and gradients for every floating input.

TORCH_OPTIONS = [
    (shape, use_weights, use_pos_weight, ["mean", "sum", "none"][i % 3])
    for i, (shape, use_weights, use_pos_weight) in enumerate(
        itertools.product([(7,), (5, 3), (2, 3, 4)], [False, True], [False, True])
    )
]


@pytest.mark.parametrize("case", range(len(TORCH_OPTIONS)))
def test_torch_parity_with_logits(x64, case):
    shape, use_weights, use_pos_weight, reduction = TORCH_OPTIONS[case]
    logits, labels = binary_data(shape, seed=case, soft=True)
    rng = np.random.default_rng(case)
    w = rng.uniform(0.1, 2, shape[-1:]) if use_weights else None
    p = rng.uniform(0.5, 4, shape[-1:]) if use_pos_weight else None
    cot = rng.normal(size=shape if reduction == "none" else ())
    names = [n for n, v in (("weights", w), ("pos_weight", p)) if v is not None]

    def ours(x, y, *extra):
        return bce(x, y, reduction=reduction, **dict(zip(names, extra, strict=True)))

    args = [logits.astype(np.float64), labels.astype(np.float64)]
    args += [a for a in (w, p) if a is not None]
    got, vjp = jax.vjp(ours, *args)
    grads = vjp(jnp.asarray(cot))

    targs = [torch_leaf(a) for a in args]
    tw = targs[2] if use_weights else None
    tp = targs[-1] if use_pos_weight else None
    # PyTorch differentiates logits and target only; weight and pos_weight gradients come
    # from its documented formula written out in torch ops.
    detached = [None if t is None else t.detach() for t in (tw, tp)]
    expected = F.binary_cross_entropy_with_logits(
        targs[0], targs[1], weight=detached[0], pos_weight=detached[1], reduction=reduction
    )
    expected_grads = torch.autograd.grad(expected, targs[:2], torch.tensor(cot))
    np.testing.assert_allclose(got, expected.detach().numpy(), rtol=1e-12, atol=1e-12)
    for g, e in zip(grads[:2], expected_grads, strict=True):
        np.testing.assert_allclose(g, e.numpy(), rtol=1e-10, atol=1e-12)
    if len(targs) > 2:
        x, y = targs[0].detach(), targs[1].detach()
        pw = 1 if tp is None else tp
        explicit = (1 - y) * x + (1 + (pw - 1) * y) * F.softplus(-x)
        explicit = explicit if tw is None else tw * explicit
        explicit = {"none": explicit, "sum": explicit.sum(), "mean": explicit.mean()}[reduction]
        np.testing.assert_allclose(explicit.detach().numpy(), expected.detach().numpy(), rtol=1e-12)
        extra = torch.autograd.grad(explicit, targs[2:], torch.tensor(cot))
        for g, e in zip(grads[2:], extra, strict=True):
            np.testing.assert_allclose(g, e.numpy(), rtol=1e-10, atol=1e-12)


def test_torch_parity_probabilities_including_saturated(x64):
    rng = np.random.default_rng(4)
    probs = np.concatenate([rng.random(8), [0.0, 1.0, 0.0, 1.0, 1e-50]])
    labels = np.concatenate([rng.integers(0, 2, 8), [0.0, 1.0, 1.0, 0.0, 1.0]])
    weights = rng.uniform(0.5, 2.0, 13)
    tp, tw = torch_leaf(probs), torch_leaf(weights)
    expected = F.binary_cross_entropy(tp, torch.tensor(labels), weight=tw.detach(), reduction="sum")
    (expected_dp,) = torch.autograd.grad(expected, (tp,))
    # The weight gradient is the unweighted loss (PyTorch does not differentiate weight).
    expected_dw = F.binary_cross_entropy(tp.detach(), torch.tensor(labels), reduction="none")
    expected_grads = (expected_dp, expected_dw)
    got, grads = jax.value_and_grad(
        lambda p, w: jaxce.binary_cross_entropy(p, labels, weights=w, reduction="sum"), (0, 1)
    )(probs, weights)
    np.testing.assert_allclose(got, expected.item(), rtol=1e-12)
    # PyTorch's backward: (p - y) / max(p (1 - p), 1e-12), so +-1e12 w at wrong saturation.
    np.testing.assert_allclose(grads[0], expected_grads[0].numpy(), rtol=1e-8)
    np.testing.assert_allclose(grads[0][10:12], 1e12 * weights[10:12] * [-1, 1], rtol=1e-10)
    np.testing.assert_allclose(grads[1], expected_grads[1].numpy(), rtol=1e-12)


def test_probabilities_label_gradient(x64):
    # Interior: matches PyTorch. At p in {0, 1}: the exact derivative of the clamped loss
    # (+-100), where PyTorch returns +-inf.
    probs = np.array([0.3, 0.8, 0.0, 1.0, 0.0, 1.0])
    labels = np.array([0.2, 0.9, 0.0, 1.0, 1.0, 0.0])
    grad = jax.grad(lambda y: jaxce.binary_cross_entropy(probs, y, reduction="sum"))(labels)
    ty = torch_leaf(labels[:2])
    torch_grad = torch.autograd.grad(
        F.binary_cross_entropy(torch.tensor(probs[:2]), ty, reduction="sum"), ty
    )[0]
    np.testing.assert_allclose(grad[:2], torch_grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(grad[2:], [100, -100, 100, -100], rtol=1e-12)


def test_probabilities_out_of_range_are_nan():
    got = jaxce.binary_cross_entropy(
        np.float32([-0.1, 0.5, 1.5]), np.float32([0, 1, 1]), reduction="none"
    )
    assert np.isnan(got[0]) and np.isfinite(got[1]) and np.isnan(got[2])


# Gradients.


def test_closed_form_gradients(x64):
    logits, labels = binary_data((5, 3), seed=5, soft=True)
    x, y = logits.astype(np.float64), labels.astype(np.float64)
    rng = np.random.default_rng(5)
    w, p = rng.uniform(0.1, 2, (5, 3)), rng.uniform(0.5, 3, (5, 3))
    grads = jax.grad(
        lambda *a: bce(*a[:2], weights=a[2], pos_weight=a[3], reduction="sum"), (0, 1, 2, 3)
    )(x, y, w, p)
    for got, expected in zip(
        grads, ref.sigmoid_binary_cross_entropy_grads(x, y, weights=w, pos_weight=p), strict=True
    ):
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    # Mean: sigma(x) - y over the element count.
    g = jax.grad(bce)(x, y)
    np.testing.assert_allclose(g, (1 / (1 + np.exp(-x)) - y) / x.size, rtol=1e-12)


def test_label_smoothing_gradient_through_labels(x64):
    logits, labels = binary_data((4, 2), seed=6, soft=True)
    x, y = logits.astype(np.float64), labels.astype(np.float64)
    got = jax.grad(lambda t: bce(x, t, label_smoothing=0.3, reduction="sum"))(y)
    smoothed = 0.7 * y + 0.15
    expected = 0.7 * ref.sigmoid_binary_cross_entropy_grads(x, smoothed)[1]
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_check_grads_order2_float64(x64):
    logits, labels = binary_data((3, 4), seed=8, soft=True)
    x, y = logits.astype(np.float64), labels.astype(np.float64)
    w, p = np.linspace(0.5, 1.5, 4), np.linspace(1.0, 3.0, 4)
    where = np.array([[True], [False], [True]])

    def f(x, y, w, p):
        return bce(x, y, weights=w, pos_weight=p, label_smoothing=0.2, where=where)

    assert_derivatives_match_differences(f, (x, y, w, p), order=2)
    assert_derivatives_match_differences(lambda x: bce(x, y, reduction="none"), (x,), order=2)
    probs = 1 / (1 + np.exp(-x / 4))  # away from 0 and 1, where finite differences are poor
    assert_derivatives_match_differences(
        lambda p, y, w: jaxce.binary_cross_entropy(p, y, weights=w),
        (probs, y, w),
        order=2,
    )


def test_hessian_is_sigmoid_derivative(x64):
    x = np.array([0.3, -1.2, 2.0])
    y = np.array([1.0, 0.0, 0.4])
    p = np.array([2.0, 1.0, 0.5])
    hess = jax.hessian(lambda x: bce(x, y, pos_weight=p, reduction="sum"))(x)
    s = 1 / (1 + np.exp(-x))
    np.testing.assert_allclose(
        hess, np.diag(s * (1 - s) * (1 + (p - 1) * y)), rtol=1e-12, atol=1e-15
    )


# Transformations and masks.


def test_vmap_equals_batched():
    logits, labels = binary_data((5, 3, 4), seed=9)
    per_batch = jax.vmap(bce)(logits, labels)
    expected = jnp.stack([bce(logits[i], labels[i]) for i in range(5)])
    np.testing.assert_allclose(per_batch, expected, rtol=1e-6)
    grads = jax.vmap(jax.grad(bce))(logits, labels)
    for i in range(5):
        np.testing.assert_allclose(grads[i], jax.grad(bce)(logits[i], labels[i]), rtol=1e-6)
    probs = jax.nn.sigmoid(logits)
    np.testing.assert_allclose(
        jax.vmap(jaxce.binary_cross_entropy)(probs, labels),
        [jaxce.binary_cross_entropy(probs[i], labels[i]) for i in range(5)],
        rtol=1e-6,
    )


@pytest.mark.parametrize("kind", ["logits", "probs"])
def test_where_equals_slicing_and_zero_gradient(kind):
    logits, labels = binary_data((12,), seed=10)
    where = np.array([1, 0, 1, 1, 0, 0, 1, 1, 1, 0, 1, 1], bool)
    x = logits if kind == "logits" else np.array(jax.nn.sigmoid(logits))
    x[~where] = np.nan  # garbage in masked elements must not leak
    f = bce if kind == "logits" else jaxce.binary_cross_entropy
    w = np.linspace(0.5, 2, 12).astype(np.float32)
    loss, grads = jax.value_and_grad(lambda x, w: f(x, labels, weights=w, where=where), (0, 1))(
        x, w
    )
    sliced, sliced_grads = jax.value_and_grad(lambda x, w: f(x, labels[where], weights=w), (0, 1))(
        x[where], w[where]
    )
    np.testing.assert_allclose(loss, sliced, rtol=1e-6)
    for g, s in zip(grads, sliced_grads, strict=True):
        assert np.all(np.asarray(g)[~where] == 0)
        np.testing.assert_allclose(np.asarray(g)[where], s, rtol=1e-6)


def test_where_broadcasts_and_mean_ignores_weights():
    logits, labels = binary_data((3, 4), seed=11)
    where = np.array([True, False, True, True])
    got = bce(logits, labels, where=where, reduction="none")
    assert np.all(np.asarray(got)[:, 1] == 0)
    w = np.float32(5.0)
    # Weights scale the mean; they do not enter its normaliser (PyTorch).
    np.testing.assert_allclose(
        bce(logits, labels, weights=w, where=where), 5 * bce(logits, labels, where=where), rtol=1e-6
    )


def test_all_masked_is_zero_with_zero_gradient():
    logits, labels = binary_data((4, 3), seed=12)
    where = np.zeros((4, 3), bool)
    for f, x in ((bce, logits), (jaxce.binary_cross_entropy, jax.nn.sigmoid(logits))):
        loss, grad = jax.value_and_grad(f)(x, labels, where=where)
        assert loss == 0 and np.all(np.asarray(grad) == 0)


def test_integer_and_boolean_labels():
    logits, labels = binary_data((6,), seed=13)
    expected = bce(logits, labels)
    np.testing.assert_allclose(bce(logits, labels.astype(np.int32)), expected, rtol=1e-6)
    np.testing.assert_allclose(bce(logits, labels.astype(bool)), expected, rtol=1e-6)


def test_cached_and_no_retrace():
    assert_cached(bce, [binary_data((4, 3), seed=seed) for seed in (14, 0, 1, 2)])


# Numerics.


@pytest.mark.parametrize("use_pos_weight", [False, True])
def test_saturated_and_infinite_logits(use_pos_weight):
    x = np.array([1e4, -1e4, 1e4, -1e4, np.inf, -np.inf], np.float32)
    y = np.array([1, 0, 0, 1, 1, 0], np.float32)
    p = np.float32(2.0) if use_pos_weight else None
    c = 2.0 if use_pos_weight else 1.0
    losses = bce(x, y, pos_weight=p, reduction="none")
    np.testing.assert_allclose(losses, [0, 0, 1e4, c * 1e4, 0, 0], rtol=1e-6)
    grad = jax.grad(lambda x: bce(x, y, pos_weight=p, reduction="sum"))(x)
    np.testing.assert_allclose(grad, [0, 0, 1, -c, 0, 0], atol=0)
    # A wrong prediction at +-inf has infinite loss but a finite gradient.
    x_wrong = np.array([np.inf, -np.inf], np.float32)
    y_wrong = np.array([0, 1], np.float32)
    assert np.all(np.isinf(bce(x_wrong, y_wrong, reduction="none")))
    grad = jax.grad(lambda x: bce(x, y_wrong, pos_weight=p, reduction="sum"))(x_wrong)
    np.testing.assert_allclose(grad, [1, -c])


def test_zero_weight_on_infinite_loss_contributes_nothing():
    x = np.array([np.inf, 0.0], np.float32)
    y = np.array([0.0, 1.0], np.float32)
    w = np.array([0.0, 1.0], np.float32)
    loss, grads = jax.value_and_grad(lambda x, w: bce(x, y, weights=w, reduction="sum"), (0, 1))(
        x, w
    )
    np.testing.assert_allclose(loss, np.log(2), rtol=1e-6)
    assert np.all(np.isfinite(grads[0]))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_dtype_contract(dtype):
    logits, labels = binary_data((16, 5), seed=15, soft=True)
    half, half_labels = jnp.asarray(logits, dtype), jnp.asarray(labels, dtype)
    w, p = jnp.ones(5, dtype), jnp.full(5, 2, dtype)

    def f(x, y, w, p):
        return bce(x, y, weights=w, pos_weight=p)

    loss, grads = jax.value_and_grad(f, (0, 1, 2, 3))(half, half_labels, w, p)
    assert loss.dtype == jnp.float32 and all(g.dtype == dtype for g in grads)
    exact = ref.sigmoid_binary_cross_entropy(
        np.asarray(half.astype(jnp.float32)),
        np.asarray(half_labels.astype(jnp.float32)),
        pos_weight=2.0,
    )
    np.testing.assert_allclose(loss, exact, rtol=1e-5)
    probs = jax.nn.sigmoid(half)
    loss, grad = jax.value_and_grad(jaxce.binary_cross_entropy)(probs, half_labels)
    assert loss.dtype == jnp.float32 and grad.dtype == dtype


# Bad input: clear errors at trace time, naming the argument.

X, Y = np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32)
BAD_CALLS = [
    (TypeError, "logits", lambda: bce(np.zeros((2, 3), int), Y)),
    (ValueError, "labels", lambda: bce(X, np.zeros((2, 4), np.float32))),
    (ValueError, "labels", lambda: bce(X, np.zeros((3,), np.float32))),
    (TypeError, "labels", lambda: bce(X, np.zeros((2, 3), complex))),
    (ValueError, "weights", lambda: bce(X, Y, weights=np.ones(4, np.float32))),
    (TypeError, "weights", lambda: bce(X, Y, weights=np.ones(3, int))),
    (ValueError, "pos_weight", lambda: bce(X, Y, pos_weight=np.ones(2, np.float32))),
    (TypeError, "pos_weight", lambda: bce(X, Y, pos_weight=np.ones(3, int))),
    (ValueError, "label_smoothing", lambda: bce(X, Y, label_smoothing=1.5)),
    (ValueError, "reduction", lambda: bce(X, Y, reduction="avg")),
    (TypeError, "where", lambda: bce(X, Y, where=np.ones(3))),
    (ValueError, "where", lambda: bce(X, Y, where=np.ones(2, bool))),
    (TypeError, "probs", lambda: jaxce.binary_cross_entropy(np.zeros(3, int), np.zeros(3))),
    (ValueError, "labels", lambda: jaxce.binary_cross_entropy(X, np.zeros(3, np.float32))),
    (
        ValueError,
        "weights",
        lambda: jaxce.binary_cross_entropy(X, Y, weights=np.ones(2, np.float32)),
    ),
    (ValueError, "reduction", lambda: jaxce.binary_cross_entropy(X, Y, reduction="max")),
    (ValueError, "reduction", lambda: jaxce.BCEWithLogitsLoss(reduction="avg")),
    (ValueError, "label_smoothing", lambda: jaxce.BCEWithLogitsLoss(label_smoothing=-1)),
    (TypeError, "pos_weight", lambda: jaxce.BCEWithLogitsLoss(pos_weight=["a"])),
]


@pytest.mark.parametrize("error,name,call", BAD_CALLS)
def test_bad_input_raises_naming_argument(error, name, call):
    with pytest.raises(error, match=name):
        call()


def test_errors_fire_under_jit():
    with pytest.raises(
        ValueError, match=r"pos_weight must be broadcastable to logits shape \(2, 3\)"
    ):
        jax.jit(lambda x, y, p: bce(x, y, pos_weight=p))(X, Y, np.ones(2, np.float32))


# The dataclass.


def test_bce_with_logits_loss_dataclass():
    logits, labels = binary_data((4, 3), seed=16)
    crit = jaxce.BCEWithLogitsLoss(weights=np.array([1.0, 2.0, 0.5]), pos_weight=[[1.0, 3.0, 2.0]])
    assert crit.weights == (1.0, 2.0, 0.5) and crit.pos_weight == ((1.0, 3.0, 2.0),)
    assert hash(crit) == hash(jaxce.BCEWithLogitsLoss(weights=(1, 2, 0.5), pos_weight=[[1, 3, 2]]))
    expected = bce(
        logits, labels, weights=np.float32([1, 2, 0.5]), pos_weight=np.float32([[1, 3, 2]])
    )
    np.testing.assert_allclose(crit(logits, labels), expected, rtol=1e-6)
    # Usable as a static argument.
    f = jax.jit(lambda c, x, y: c(x, y), static_argnums=0)
    np.testing.assert_allclose(f(crit, logits, labels), expected, rtol=1e-6)
    with pytest.raises(dataclasses.FrozenInstanceError):
        crit.reduction = "sum"  # type: ignore[misc]
    where = np.array([True, False, True, True])[:, None]
    np.testing.assert_allclose(
        jaxce.BCEWithLogitsLoss(reduction="sum")(logits, labels, where=where),
        bce(logits, labels, where=where, reduction="sum"),
        rtol=1e-6,
    )


# Property tests.


@settings(max_examples=10, deadline=None)
@given(
    data=st.data(),
    shape=st.sampled_from([(1,), (5,), (2, 3), (2, 1, 4)]),  # few shapes: few compilations
    smoothing=st.sampled_from([0.0, 0.1, 1.0]),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    magnitude=st.sampled_from([1.0, 30.0, 1e3]),
    use_pos_weight=st.booleans(),
)
def test_property_matches_oracle(data, shape, smoothing, reduction, magnitude, use_pos_weight):
    with jax.enable_x64(True):
        logits = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(-1, 1))) * magnitude
        labels = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(0, 1)))
        where = data.draw(hnp.arrays(np.bool_, shape))
        p = data.draw(hnp.arrays(np.float64, shape[-1:], elements=st.floats(0.1, 5)))
        p = p if use_pos_weight else None
        kwargs = dict(label_smoothing=smoothing, reduction=reduction, where=where, pos_weight=p)
        got, grad = jax.value_and_grad(lambda x: jnp.sum(bce(x, labels, **kwargs)))(logits)
        expected = np.sum(ref.sigmoid_binary_cross_entropy(logits, labels, **kwargs))
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
        assert np.all(np.isfinite(grad)) and np.all(np.asarray(grad)[~where] == 0)
        # |dl/dx| <= max(1, p) per element: the loss is Lipschitz in the logit.
        bound = 1.0 if p is None else np.maximum(1.0, p)
        scale = 1.0 if reduction != "mean" else max(1, where.sum())
        assert np.all(np.abs(grad) * scale <= bound * (1 + 1e-9))
