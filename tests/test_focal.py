"""Sigmoid and softmax focal losses and Poly-1: oracles, PyTorch parity, identities, gradients."""

import dataclasses

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.experimental import checkify

import jaxce
from tests import reference as ref
from tests.helpers import (
    assert_derivatives_match_differences,
    binary_data,
    class_data,
    probabilities,
    torch_leaf,
)

sfl = jaxce.sigmoid_focal_loss
mfl = jaxce.softmax_focal_loss
poly = jaxce.poly1_cross_entropy


def _torch_reduce(losses, reduction, norm=None):
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    return losses.sum() / (losses.numel() if norm is None else norm)


# Sigmoid focal loss.


@pytest.mark.parametrize(
    "alpha,gamma,reduction",
    [(0.25, 2.0, "mean"), (None, 0.5, "sum"), (0.7, 0.0, "none"), (None, 1.0, "mean")],
)
def test_sigmoid_focal_oracle_and_torch(x64, alpha, gamma, reduction):
    logits, labels = binary_data((6, 3), seed=1, soft=True)
    labels[0] = [0, 1, 1]
    x, y = logits.astype(np.float64), labels.astype(np.float64)
    kwargs = dict(alpha=alpha, gamma=gamma, reduction=reduction)
    got, vjp = jax.vjp(lambda x, y: sfl(x, y, **kwargs), x, y)
    np.testing.assert_allclose(got, ref.sigmoid_focal_loss(x, y, **kwargs), rtol=1e-12)
    # torchvision.ops.sigmoid_focal_loss, written out in torch ops.
    tx, ty = torch_leaf(x), torch_leaf(y)
    p = torch.sigmoid(tx)
    ce = F.binary_cross_entropy_with_logits(tx, ty, reduction="none")
    p_t = p * ty + (1 - p) * (1 - ty)
    loss = ce * (1 - p_t) ** gamma
    if alpha is not None:
        loss = (alpha * ty + (1 - alpha) * (1 - ty)) * loss
    loss = _torch_reduce(loss, reduction)
    np.testing.assert_allclose(got, loss.detach().numpy(), rtol=1e-12)
    cot = np.random.default_rng(2).normal(size=np.shape(got))
    grads = vjp(jnp.asarray(cot))
    expected = torch.autograd.grad(loss, (tx, ty), torch.tensor(cot))
    for g, e in zip(grads, expected, strict=True):
        np.testing.assert_allclose(g, e.numpy(), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("soft", [False, True])
def test_sigmoid_focal_gamma0_no_alpha_is_bce(soft):
    logits, labels = binary_data((5, 4), seed=3, soft=soft)
    where = np.random.default_rng(3).random((5, 4)) > 0.3
    f = lambda x, y: sfl(x, y, alpha=None, gamma=0.0, where=where)  # noqa: E731
    g = lambda x, y: jaxce.sigmoid_binary_cross_entropy(x, y, where=where)  # noqa: E731
    got, expected = (
        jax.value_and_grad(f, (0, 1))(logits, labels),
        jax.value_and_grad(g, (0, 1))(logits, labels),
    )
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-6)
    for a, b in zip(got[1], expected[1], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("scale", [1000.0, np.inf])
def test_sigmoid_focal_saturated_logits(gamma, scale):
    alpha = 0.25
    x = np.array([scale, -scale, scale, -scale], np.float32)
    y = np.array([1, 0, 0, 1], np.float32)
    f = lambda x: sfl(x, y, alpha=alpha, gamma=gamma, reduction="none")  # noqa: E731
    losses = f(x)
    grad = jax.grad(lambda x: f(x).sum())(x)
    # Right and saturated: 0 loss, 0 gradient. Wrong: alpha_t |x|, gradient +-alpha_t.
    np.testing.assert_allclose(losses, [0, 0, (1 - alpha) * scale, alpha * scale], rtol=1e-6)
    np.testing.assert_allclose(grad, [0, 0, 1 - alpha, -alpha], rtol=1e-6)
    # Soft labels at +-1000 (infinite logits make a soft-label loss infinite).
    xs = np.array([1000.0, -1000.0], np.float32)
    ys = np.array([0.9, 0.2], np.float32)
    loss, grads = jax.value_and_grad(lambda x, y: sfl(x, y, gamma=gamma), (0, 1))(xs, ys)
    assert np.isfinite(loss) and all(np.all(np.isfinite(g)) for g in grads)


def test_sigmoid_focal_derivatives_match_differences():
    # Second order in float64 (which checks the first order too).
    logits, labels = binary_data((3, 4), seed=4, scale=1.0, soft=True)
    labels = 0.1 + 0.8 * labels
    with jax.enable_x64(True):
        x, y = logits.astype(np.float64) * 3, labels.astype(np.float64)
        where = np.array([[True], [False], [True]])
        for alpha, gamma in ((0.25, 0.5), (None, 2.0)):
            f = lambda x, y: sfl(x, y, alpha=alpha, gamma=gamma, where=where)  # noqa: E731, B023
            assert_derivatives_match_differences(f, (x, y), order=2)


# Softmax focal loss.


@pytest.mark.parametrize(
    "gamma,use_weights,ignore_index,reduction,use_where",
    [
        (2.0, False, None, "mean", False),
        (0.5, True, None, "sum", True),
        (1.0, True, 2, "mean", True),
        (3.0, False, 2, "none", False),
        (0.0, True, None, "mean", False),
    ],
)
def test_softmax_focal_oracle_and_torch(
    x64, gamma, use_weights, ignore_index, reduction, use_where
):
    logits, labels = class_data((8, 4), 4, seed=5)
    labels[[1, 6]] = 2
    rng = np.random.default_rng(5)
    x = logits.astype(np.float64)
    w = rng.uniform(0.2, 2.0, 4) if use_weights else None
    where = rng.random(8) > 0.3 if use_where else None
    kw = dict(gamma=gamma, ignore_index=ignore_index, where=where, reduction=reduction)
    got, vjp = jax.vjp(lambda x, w: mfl(x, labels, weights=w, **kw), x, w)
    np.testing.assert_allclose(got, ref.softmax_focal_loss(x, labels, weights=w, **kw), rtol=1e-12)
    # The formula in torch ops.
    tx = torch_leaf(x)
    tw = torch_leaf(w) if use_weights else torch.ones(4, dtype=torch.float64)
    ty = torch.tensor(labels, dtype=torch.long)
    m = torch.ones(8, dtype=torch.bool) if where is None else torch.tensor(where)
    if ignore_index is not None:
        m = m & (ty != ignore_index)
    log_q = F.log_softmax(tx, -1).gather(-1, ty[:, None])[:, 0]
    w_y = tw[ty] * m
    loss = _torch_reduce(-w_y * (1 - log_q.exp()) ** gamma * log_q, reduction, w_y.sum())
    np.testing.assert_allclose(got, loss.detach().numpy(), rtol=1e-12, atol=1e-15)
    cot = rng.normal(size=np.shape(got))
    grads = vjp(jnp.asarray(cot))
    inputs = (tx, tw) if use_weights else (tx,)
    expected = torch.autograd.grad(loss, inputs, torch.tensor(cot))
    for g, e in zip(grads, expected, strict=False):
        np.testing.assert_allclose(g, e.numpy(), rtol=1e-10, atol=1e-14)


def test_softmax_focal_gamma0_is_cross_entropy():
    logits, labels = class_data((9, 5), 5, seed=6)
    labels[3] = -100
    w = np.linspace(0.5, 2.0, 5).astype(np.float32)
    where = np.random.default_rng(6).random(9) > 0.2
    kw = dict(weights=w, ignore_index=-100, where=where)
    ours = jax.value_and_grad(
        lambda x, w: mfl(x, labels, gamma=0.0, **(kw | {"weights": w})), (0, 1)
    )
    ce = jax.value_and_grad(
        lambda x, w: jaxce.softmax_cross_entropy(x, labels, **(kw | {"weights": w})), (0, 1)
    )
    (a, ga), (b, gb) = ours(logits, w), ce(logits, w)
    np.testing.assert_allclose(a, b, rtol=1e-6)
    for x, y in zip(ga, gb, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)


def test_softmax_focal_closed_form_gradient(x64):
    # -(1 - q)^g [g log q (R - P) + Y - P], R the softmax over the other classes.
    x = np.array([[0.3, -1.2, 2.0, 0.5], [1.0, 0.0, -1.0, 4.0]])
    labels = np.array([2, 0])
    gamma = 1.5
    grad = jax.grad(lambda x: mfl(x, labels, gamma=gamma, reduction="sum"))(x)
    p = ref.softmax(x)
    onehot = np.eye(4)[labels]
    q = np.sum(p * onehot, -1, keepdims=True)
    r = np.where(onehot == 1, 0, p) / (1 - q)
    expected = -((1 - q) ** gamma) * (gamma * np.log(q) * (r - p) + onehot - p)
    np.testing.assert_allclose(grad, expected, rtol=1e-12)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_softmax_focal_extreme_and_masked_logits(gamma):
    logits = np.array(
        [[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0], [0.0, -np.inf, 2.0], [100.0, 0.0, -np.inf]],
        np.float32,
    )
    labels = np.array([0, 0, 2, 0])
    loss, grad = jax.value_and_grad(lambda x: mfl(x, labels, gamma=gamma, reduction="none").sum())(
        logits
    )
    per = mfl(logits, labels, gamma=gamma, reduction="none")
    np.testing.assert_allclose(per[:2], [0, 2e4], rtol=1e-6)
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    assert np.all(np.asarray(grad)[np.isinf(logits)] == 0)
    # Row 1 is confidently wrong: the gradient is CE's, P - Y.
    np.testing.assert_allclose(grad[1], [-1, 1, 0], atol=1e-6)


def test_softmax_focal_derivatives_match_differences():
    logits, labels = class_data((4, 5), 5, seed=7, scale=1.0)
    w = np.linspace(0.5, 1.5, 5).astype(np.float32)
    with jax.enable_x64(True):  # second order in float64, which checks the first order too
        where = np.array([True, False, True, True])
        g = lambda x, w: mfl(x, labels, gamma=0.5, weights=w, where=where)  # noqa: E731
        assert_derivatives_match_differences(
            g, (logits.astype(np.float64) * 2, w.astype(np.float64)), order=2
        )


def test_softmax_focal_out_of_range_labels_nan_and_checkified():
    logits, labels = class_data((4, 3), 3, seed=8)
    labels[2] = 3
    losses = mfl(logits, labels, reduction="none")
    assert np.isnan(losses[2]) and np.all(np.isfinite(np.asarray(losses)[[0, 1, 3]]))
    err, _ = checkify.checkify(jax.jit(mfl))(logits, labels)
    with pytest.raises(checkify.JaxRuntimeError, match="got 3"):
        err.throw()


# Poly-1.


@pytest.mark.parametrize(
    "epsilon,use_weights,ignore_index,smoothing,reduction,use_where",
    [
        (1.0, False, None, 0.0, "mean", False),
        (2.0, True, None, 0.2, "mean", True),
        (-1.0, True, 1, 0.0, "sum", False),
        (0.5, False, 1, 0.3, "none", True),
    ],
)
def test_poly1_oracle_and_torch(
    x64, epsilon, use_weights, ignore_index, smoothing, reduction, use_where
):
    logits, labels = class_data((7, 4), 4, seed=9)
    labels[4] = 1
    rng = np.random.default_rng(9)
    x = logits.astype(np.float64)
    w = rng.uniform(0.2, 2.0, 4) if use_weights else None
    where = rng.random(7) > 0.3 if use_where else None
    kw = dict(
        epsilon=epsilon,
        ignore_index=ignore_index,
        label_smoothing=smoothing,
        where=where,
        reduction=reduction,
    )
    got, vjp = jax.vjp(lambda x, w: poly(x, labels, weights=w, **kw), x, w)
    np.testing.assert_allclose(got, ref.poly1_cross_entropy(x, labels, weights=w, **kw), rtol=1e-12)
    # PyTorch's cross_entropy plus the paper's poly term (smoothed targets).
    tx = torch_leaf(x)
    tw = torch_leaf(w) if use_weights else torch.ones(4, dtype=torch.float64)
    ty = torch.tensor(labels, dtype=torch.long)
    m = torch.ones(7, dtype=torch.bool) if where is None else torch.tensor(where)
    ce_kw = dict(label_smoothing=smoothing, reduction="none")
    if ignore_index is not None:
        m = m & (ty != ignore_index)
        ce_kw["ignore_index"] = ignore_index
    ce = F.cross_entropy(tx, ty, weight=tw.detach(), **ce_kw)
    target = (1 - smoothing) * F.one_hot(ty, 4).double() + smoothing / 4
    # PyTorch does not differentiate its `weight`: the same CE in torch ops for that gradient.
    ce_explicit = -(tw * target * F.log_softmax(tx, -1)).sum(-1)
    np.testing.assert_allclose(
        (ce * m).detach().numpy(), (ce_explicit * m).detach().numpy(), rtol=1e-12
    )
    per = (ce_explicit + epsilon * (tw * target * (1 - F.softmax(tx, -1))).sum(-1)) * m
    loss = _torch_reduce(per, reduction, (tw[ty] * m).sum())
    np.testing.assert_allclose(got, loss.detach().numpy(), rtol=1e-12, atol=1e-15)
    cot = rng.normal(size=np.shape(got))
    grads = vjp(jnp.asarray(cot))
    inputs = (tx, tw) if use_weights else (tx,)
    expected = torch.autograd.grad(loss, inputs, torch.tensor(cot))
    for g, e in zip(grads, expected, strict=False):
        np.testing.assert_allclose(g, e.numpy(), rtol=1e-10, atol=1e-14)


def test_poly1_probability_labels(x64):
    logits, _ = class_data((5, 4), 4, seed=10)
    x = logits.astype(np.float64)
    probs = probabilities((5, 4)).astype(np.float64)
    w = np.linspace(0.5, 2, 4)
    kw = dict(epsilon=1.5, label_smoothing=0.1)
    got, grads = jax.value_and_grad(lambda x, p, w: poly(x, p, weights=w, **kw), (0, 1, 2))(
        x, probs, w
    )
    np.testing.assert_allclose(got, ref.poly1_cross_entropy(x, probs, weights=w, **kw), rtol=1e-12)
    tx, tp, tw = torch_leaf(x), torch_leaf(probs), torch_leaf(w)
    target = 0.9 * tp + 0.1 / 4
    q = F.softmax(tx, -1)
    per = -(tw * target * q.log()).sum(-1) + 1.5 * (tw * target * (1 - q)).sum(-1)
    expected = torch.autograd.grad(per.mean(), (tx, tp, tw))
    for g, e in zip(grads, expected, strict=True):
        np.testing.assert_allclose(g, e.numpy(), rtol=1e-10, atol=1e-14)
    # One-hot probability labels equal integer labels.
    labels = np.array([0, 3, 1, 1, 2])
    np.testing.assert_allclose(
        poly(x, np.eye(4)[labels], label_smoothing=0.2),
        poly(x, labels, label_smoothing=0.2),
        rtol=1e-12,
    )


@pytest.mark.parametrize("kind", ["int", "prob"])
def test_poly1_epsilon0_is_cross_entropy(kind):
    logits, labels = class_data((6, 5), 5, seed=11)
    if kind == "prob":
        labels = probabilities((6, 5))
    w = np.linspace(0.5, 2.0, 5).astype(np.float32)
    kw = dict(label_smoothing=0.1, where=np.array([1, 1, 0, 1, 1, 1], bool))
    a = jax.value_and_grad(lambda x, w: poly(x, labels, epsilon=0.0, weights=w, **kw), (0, 1))(
        logits, w
    )
    b = jax.value_and_grad(
        lambda x, w: jaxce.softmax_cross_entropy(x, labels, weights=w, **kw), (0, 1)
    )(logits, w)
    np.testing.assert_allclose(a[0], b[0], rtol=1e-6)
    for x, y in zip(a[1], b[1], strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)


def test_poly1_closed_form_gradient(x64):
    # CE gradient P - Y plus epsilon q_c (q_y - Y_c) for the poly term.
    x = np.array([[0.3, -1.2, 2.0], [1.0, 0.0, -1.0]])
    labels = np.array([2, 0])
    grad = jax.grad(lambda x: poly(x, labels, epsilon=2.0, reduction="sum"))(x)
    p = ref.softmax(x)
    onehot = np.eye(3)[labels]
    q_y = np.sum(p * onehot, -1, keepdims=True)
    np.testing.assert_allclose(grad, p - onehot + 2.0 * p * (q_y - onehot), rtol=1e-12)


def test_poly1_derivatives_match_differences():
    logits, labels = class_data((4, 5), 5, seed=12, scale=1.0)
    w = np.linspace(0.5, 1.5, 5).astype(np.float32)
    with jax.enable_x64(True):  # second order in float64, which checks the first order too
        x, w64 = logits.astype(np.float64) * 2, w.astype(np.float64)
        probs = probabilities((4, 5)).astype(np.float64)
        g = lambda x, p, w: poly(x, p, weights=w, epsilon=-0.5, label_smoothing=0.2)  # noqa: E731
        assert_derivatives_match_differences(g, (x, probs, w64), order=2)
        h = lambda x, w: poly(x, labels, weights=w, epsilon=3.0, where=labels != 1)  # noqa: E731
        assert_derivatives_match_differences(h, (x, w64), order=2)


def test_poly1_neg_inf_and_extreme_logits():
    logits = np.array([[0.0, -np.inf, 1.0], [1e4, -1e4, 0.0], [-1e4, 1e4, 0.0]], np.float32)
    labels = np.array([2, 0, 0])
    for kw in ({}, {"label_smoothing": 0.2}):
        loss, grad = jax.value_and_grad(lambda x: poly(x, labels, **kw))(logits)  # noqa: B023
        assert np.isfinite(loss) and np.all(np.isfinite(grad))
        assert grad[0, 1] == 0


# Shared: transformations, masks, dtypes, errors, the dataclass.

LOSSES = {
    "sigmoid_focal": (lambda x, y, **kw: sfl(x, y, **kw), "binary"),
    "softmax_focal": (lambda x, y, **kw: mfl(x, y, **kw), "multi"),
    "poly1": (lambda x, y, **kw: poly(x, y, **kw), "multi"),
}


def _inputs(kind, batch, seed):
    if kind == "binary":
        return binary_data(batch + (3,), seed=seed)
    return class_data(batch + (3,), 3, seed=seed)


@pytest.mark.parametrize("name", list(LOSSES))
def test_vmap_equals_batched(name):
    f, kind = LOSSES[name]
    logits, labels = _inputs(kind, (4, 5), seed=13)
    per_batch = jax.vmap(f)(logits, labels)
    np.testing.assert_allclose(per_batch, [f(logits[i], labels[i]) for i in range(4)], rtol=1e-6)
    grads = jax.vmap(jax.grad(f))(logits, labels)
    for i in range(4):
        np.testing.assert_allclose(
            grads[i], jax.grad(f)(logits[i], labels[i]), rtol=1e-5, atol=1e-8
        )


@pytest.mark.parametrize("name", ["softmax_focal", "poly1"])
def test_axis_equals_moveaxis(name):
    f, _ = LOSSES[name]
    logits, labels = class_data((3, 2, 4), 4, seed=14)
    moved = np.moveaxis(logits, -1, 1)
    kw = dict(reduction="none", weights=np.linspace(1, 2, 4).astype(np.float32))
    np.testing.assert_allclose(f(moved, labels, axis=1, **kw), f(logits, labels, **kw), rtol=1e-6)
    grad = jax.grad(lambda x: f(x, labels, axis=1, **kw).sum())(moved)
    expected = jax.grad(lambda x: f(x, labels, **kw).sum())(logits)
    np.testing.assert_allclose(grad, np.moveaxis(expected, -1, 1), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("name", list(LOSSES))
def test_where_equals_slicing_and_zero_gradient(name):
    f, kind = LOSSES[name]
    logits, labels = _inputs(kind, (8,), seed=15)
    where = np.array([1, 0, 1, 1, 0, 0, 1, 1], bool)
    if kind == "binary":
        where = np.broadcast_to(where[:, None], logits.shape)
    logits = logits.copy()
    logits[~where] = np.nan
    loss, grad = jax.value_and_grad(lambda x: f(x, labels, where=where))(logits)
    if kind == "binary":
        sliced = f(logits[where], labels[where])
        expected_grad = jax.grad(f)(logits[where], labels[where])
    else:
        sliced = f(logits[where], labels[where])
        expected_grad = jax.grad(f)(logits[where], labels[where])
    np.testing.assert_allclose(loss, sliced, rtol=1e-6)
    assert np.all(np.asarray(grad)[~where] == 0)
    np.testing.assert_allclose(np.asarray(grad)[where], expected_grad, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("name", list(LOSSES))
def test_all_masked_is_zero_with_zero_gradient(name):
    f, kind = LOSSES[name]
    logits, labels = _inputs(kind, (4,), seed=16)
    where = np.zeros(logits.shape if kind == "binary" else (4,), bool)
    loss, grad = jax.value_and_grad(lambda x: f(x, labels, where=where))(logits)
    assert loss == 0 and np.all(np.asarray(grad) == 0)


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_dtype_contract(name, dtype):
    f, kind = LOSSES[name]
    logits, labels = _inputs(kind, (16,), seed=17)
    half = jnp.asarray(logits, dtype)
    loss, grad = jax.value_and_grad(f)(half, labels)
    assert loss.dtype == jnp.float32 and grad.dtype == dtype
    np.testing.assert_allclose(loss, f(half.astype(jnp.float32), labels), rtol=1e-6)
    assert f(half, labels, reduction="none").dtype == jnp.float32


def test_float64_stays_float64(x64):
    logits, labels = class_data((3, 4), 4, seed=18)
    x = logits.astype(np.float64)
    assert mfl(x, labels).dtype == poly(x, labels).dtype == jnp.float64
    assert sfl(x, np.eye(4)[labels]).dtype == jnp.float64


X2, Y2 = np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32)
L2 = np.zeros(2, np.int32)
BAD_CALLS = [
    (TypeError, "logits", lambda: sfl(np.zeros((2, 3), int), Y2)),
    (ValueError, "labels", lambda: sfl(X2, np.zeros((2, 4), np.float32))),
    (ValueError, "gamma", lambda: sfl(X2, Y2, gamma=-1.0)),
    (ValueError, "alpha", lambda: sfl(X2, Y2, alpha=1.5)),
    (ValueError, "alpha", lambda: sfl(X2, Y2, alpha=-0.25)),
    (ValueError, "reduction", lambda: sfl(X2, Y2, reduction="avg")),
    (TypeError, "where", lambda: sfl(X2, Y2, where=np.ones(3))),
    (ValueError, "where", lambda: sfl(X2, Y2, where=np.ones(2, bool))),
    (TypeError, "logits", lambda: mfl(np.zeros((2, 3), int), L2)),
    (ValueError, "labels", lambda: mfl(X2, np.zeros(3, np.int32))),
    (TypeError, "labels", lambda: mfl(X2, Y2)),
    (ValueError, "gamma", lambda: mfl(X2, L2, gamma=-0.5)),
    (ValueError, "weights", lambda: mfl(X2, L2, weights=np.ones(4, np.float32))),
    (ValueError, "reduction", lambda: mfl(X2, L2, reduction="mean_")),
    (ValueError, "axis", lambda: mfl(X2, L2, axis=3)),
    (TypeError, "ignore_index", lambda: mfl(X2, L2, ignore_index=0.5)),
    (TypeError, "logits", lambda: poly(np.zeros((2, 3), int), L2)),
    (ValueError, "labels", lambda: poly(X2, np.zeros(3, np.int32))),
    (ValueError, "epsilon", lambda: poly(X2, L2, epsilon=-1.5)),
    (ValueError, "epsilon", lambda: poly(X2, L2, epsilon=float("inf"))),
    (ValueError, "label_smoothing", lambda: poly(X2, L2, label_smoothing=2.0)),
    (ValueError, "weights", lambda: poly(X2, L2, weights=np.ones(2, np.float32))),
    (ValueError, "ignore_index", lambda: poly(X2, Y2, ignore_index=-100)),
    (ValueError, "reduction", lambda: poly(X2, L2, reduction="avg")),
    (ValueError, "gamma", lambda: jaxce.FocalLoss(gamma=-1.0)),
    (ValueError, "reduction", lambda: jaxce.FocalLoss(reduction="avg")),
    (ValueError, "weights", lambda: jaxce.FocalLoss(weights=[[1.0]])),
]


@pytest.mark.parametrize("error,name,call", BAD_CALLS)
def test_bad_input_raises_naming_argument(error, name, call):
    with pytest.raises(error, match=name):
        call()


def test_errors_fire_under_jit():
    with pytest.raises(ValueError, match="gamma must be >= 0; got -1.0"):
        jax.jit(lambda x, y: mfl(x, y, gamma=-1.0))(X2, L2)
    with pytest.raises(ValueError, match="epsilon must be >= -1"):
        jax.jit(lambda x, y: poly(x, y, epsilon=-2.0))(X2, L2)


def test_focal_loss_dataclass():
    logits, labels = class_data((5, 3), 3, seed=19)
    crit = jaxce.FocalLoss(gamma=1.0, weights=np.array([1.0, 2.0, 0.5]), ignore_index=1)
    assert crit.weights == (1.0, 2.0, 0.5)
    assert hash(crit) == hash(jaxce.FocalLoss(gamma=1.0, weights=[1, 2, 0.5], ignore_index=1))
    expected = mfl(logits, labels, gamma=1.0, weights=np.float32([1, 2, 0.5]), ignore_index=1)
    np.testing.assert_allclose(crit(logits, labels), expected, rtol=1e-6)
    f = jax.jit(lambda c, x, y: c(x, y), static_argnums=0)
    np.testing.assert_allclose(f(crit, logits, labels), expected, rtol=1e-6)
    with pytest.raises(dataclasses.FrozenInstanceError):
        crit.gamma = 0.0  # type: ignore[misc]


# Property tests.


@settings(max_examples=6, deadline=None)
@given(
    data=st.data(),
    n=st.sampled_from([1, 5]),  # few shapes: few compilations
    k=st.sampled_from([1, 4, 6]),
    gamma=st.sampled_from([0.0, 0.5, 2.0]),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    magnitude=st.sampled_from([1.0, 30.0]),
)
def test_property_softmax_focal_matches_oracle(data, n, k, gamma, reduction, magnitude):
    with jax.enable_x64(True):
        logits = data.draw(hnp.arrays(np.float64, (n, k), elements=st.floats(-1, 1))) * magnitude
        labels = data.draw(hnp.arrays(np.int32, (n,), elements=st.integers(0, k - 1)))
        where = data.draw(hnp.arrays(np.bool_, (n,)))
        weights = data.draw(hnp.arrays(np.float64, (k,), elements=st.floats(0.1, 5.0)))
        kw = dict(gamma=gamma, reduction=reduction, where=where, weights=weights)
        got, grad = jax.value_and_grad(lambda x: jnp.sum(mfl(x, labels, **kw)))(logits)
        expected = np.sum(ref.softmax_focal_loss(logits, labels, **kw))
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
        assert np.all(np.isfinite(grad)) and np.all(np.asarray(grad)[~where] == 0)
        # Focal loss is at most cross-entropy, and its gradient rows sum to zero.
        ce = np.sum(
            ref.softmax_cross_entropy(
                logits, labels, weights=weights, where=where, reduction=reduction
            )
        )
        assert got <= ce + 1e-9
        np.testing.assert_allclose(np.sum(grad, -1), 0, atol=1e-9 * magnitude)


@settings(max_examples=6, deadline=None)
@given(
    data=st.data(),
    shape=st.sampled_from([(1,), (4,), (2, 3), (2, 2, 3)]),  # few shapes: few compilations
    alpha=st.sampled_from([None, 0.0, 0.25, 1.0]),
    gamma=st.sampled_from([0.0, 0.5, 2.0]),
    magnitude=st.sampled_from([1.0, 30.0, 1e3]),
)
def test_property_sigmoid_focal_matches_oracle(data, shape, alpha, gamma, magnitude):
    with jax.enable_x64(True):
        logits = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(-1, 1))) * magnitude
        labels = data.draw(hnp.arrays(np.float64, shape, elements=st.sampled_from([0.0, 1.0])))
        kw = dict(alpha=alpha, gamma=gamma, reduction="sum")
        got, grad = jax.value_and_grad(lambda x: sfl(x, labels, **kw))(logits)
        with np.errstate(over="ignore"):  # the oracle's literal sigmoid overflows to 0 or 1
            expected = ref.sigmoid_focal_loss(logits, labels, **kw)
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
        # |dl/dx| <= 1 + 0.37 gamma: the focal factor's slope times BCE is at most 0.37.
        assert np.all(np.isfinite(grad)) and np.all(np.abs(grad) <= 1 + 0.37 * gamma)


@settings(max_examples=6, deadline=None)
@given(
    data=st.data(),
    n=st.sampled_from([1, 5]),  # few shapes: few compilations
    k=st.sampled_from([2, 6]),
    epsilon=st.sampled_from([-1.0, 0.0, 1.0, 3.0]),
    smoothing=st.sampled_from([0.0, 0.1]),
)
def test_property_poly1_matches_oracle_and_is_monotone(data, n, k, epsilon, smoothing):
    with jax.enable_x64(True):
        logits = data.draw(hnp.arrays(np.float64, (n, k), elements=st.floats(-5, 5)))
        labels = data.draw(hnp.arrays(np.int32, (n,), elements=st.integers(0, k - 1)))
        kw = dict(epsilon=epsilon, label_smoothing=smoothing)
        got, grad = jax.value_and_grad(lambda x: poly(x, labels, **kw))(logits)
        # At epsilon = -1 the loss is CE - (1 - p_t), two terms that cancel to about
        # (1 - p_t)^2 / 2 for a confident prediction: both sides are then exact only to the
        # terms' last bits (logits in [-5, 5], at most 6 classes: terms below 12), hence
        # the absolute 1e-14.
        expected = ref.poly1_cross_entropy(logits, labels, **kw)
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-14)
        # For epsilon >= -1 and no smoothing, raising the target logit never increases the loss.
        if smoothing == 0:
            assert np.all(grad[np.arange(n), labels] <= 1e-12)
