"""KL divergence, entropy and distillation: oracles, PyTorch parity, identities, gradients."""

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

import jaxce
from tests import reference as ref
from tests.helpers import assert_cached, assert_no_gather, torch_leaf

F = torch.nn.functional


def _logits(shape, seed=0, scale=2.0, dtype=np.float32):
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype(dtype)


def _probs(shape, axis=-1, seed=1, dtype=np.float32, zeros=False, floor=1e-3):
    """Random rows of probabilities; with `zeros`, about a quarter of the entries are 0."""
    rng = np.random.default_rng(seed)
    p = rng.random(shape) ** 2 + floor
    if zeros:
        p = np.where(rng.random(shape) < 0.25, 0.0, p)
        p = np.where(np.sum(p, axis=axis, keepdims=True) == 0, 1.0, p)
    return (p / p.sum(axis=axis, keepdims=True)).astype(dtype)


def _log(p):
    """log p with log 0 = -inf, without a warning."""
    with np.errstate(divide="ignore"):
        return np.log(p)


def _kl(x, t, **kwargs):
    return jaxce.kl_divergence(x, t, **kwargs)


def _distill(s, t, **kwargs):
    return jaxce.distillation_loss(s, t, **kwargs)


# Float64 oracles, eager and jitted.


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("log_targets", [False, True])
def test_kl_oracle(x64, reduction, log_targets):
    x = _logits((6, 5), seed=1, dtype=np.float64)
    p = _probs((6, 5), seed=2, dtype=np.float64, zeros=not log_targets)
    t = np.log(p) if log_targets else p
    where = np.array([True, False, True, True, False, True])
    kwargs = dict(log_targets=log_targets, where=where, reduction=reduction)
    expected = ref.kl_divergence(x, t, **kwargs)
    np.testing.assert_allclose(_kl(x, t, **kwargs), expected, rtol=1e-12, atol=1e-14)
    jitted = jax.jit(lambda a, b: _kl(a, b, **kwargs))
    np.testing.assert_allclose(jitted(x, t), expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_entropy_oracle(x64, reduction):
    x = _logits((7, 4), seed=3, dtype=np.float64)
    x[0, 1] = -np.inf
    where = np.array([True, True, False, True, True, True, False])
    expected = ref.entropy(x, where=where, reduction=reduction)
    np.testing.assert_allclose(
        jaxce.entropy(x, where=where, reduction=reduction), expected, rtol=1e-12, atol=1e-14
    )
    jitted = jax.jit(lambda a: jaxce.entropy(a, where=where, reduction=reduction))
    np.testing.assert_allclose(jitted(x), expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("temperature", [0.5, 3.0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_distillation_oracle(x64, temperature, reduction):
    s = _logits((5, 6), seed=4, dtype=np.float64)
    t = _logits((5, 6), seed=5, dtype=np.float64)
    kwargs = dict(temperature=temperature, reduction=reduction)
    expected = ref.distillation_loss(s, t, **kwargs)
    np.testing.assert_allclose(_distill(s, t, **kwargs), expected, rtol=1e-12, atol=1e-14)
    jitted = jax.jit(lambda a, b: _distill(a, b, **kwargs))
    np.testing.assert_allclose(jitted(s, t), expected, rtol=1e-12, atol=1e-14)


def test_closed_form_gradients(x64):
    x = _logits((4, 5), seed=6, dtype=np.float64)
    # Unnormalised targets with zeros: d/dx is (sum p) q - p, not q - p.
    p = 1.7 * _probs((4, 5), seed=7, dtype=np.float64, zeros=True)
    dx, dp = jax.grad(_kl, argnums=(0, 1))(x, p, reduction="sum")
    ex, ep = ref.kl_divergence_grads(x, p)
    np.testing.assert_allclose(dx, ex, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(dp, ep, rtol=1e-12, atol=1e-15)
    assert np.all(np.asarray(dp)[p == 0] == 0)
    lp = np.log(_probs((4, 5), seed=8, dtype=np.float64))
    dx, dlp = jax.grad(_kl, argnums=(0, 1))(x, lp, log_targets=True, reduction="sum")
    ex, elp = ref.kl_divergence_grads(x, lp, log_targets=True)
    np.testing.assert_allclose(dx, ex, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(dlp, elp, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(
        jax.grad(jaxce.entropy)(x, reduction="sum"), ref.entropy_grad(x), rtol=1e-12, atol=1e-15
    )
    t = _logits((4, 5), seed=9, dtype=np.float64)
    ds, dt = jax.grad(_distill, argnums=(0, 1))(t, x, temperature=2.5, reduction="sum")
    es, et = ref.distillation_grads(t, x, temperature=2.5)
    np.testing.assert_allclose(ds, es, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(dt, et, rtol=1e-12, atol=1e-15)


def test_entropy_gradient_derivation(x64):
    # dH/dx = -q (log q + H) against autodiff of the plain formula.
    x = _logits((3, 6), seed=10, dtype=np.float64)

    def plain(z):
        log_q = jax.nn.log_softmax(z)
        return -jnp.sum(jnp.exp(log_q) * log_q)

    np.testing.assert_allclose(
        jax.grad(jaxce.entropy)(x, reduction="sum"), jax.grad(plain)(x), rtol=1e-12, atol=1e-15
    )


# PyTorch parity (CPU, float64), values and gradients.


@pytest.mark.parametrize("shape", [(1, 2), (16, 11)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("log_targets", [False, True])
def test_kl_torch_parity(x64, shape, reduction, log_targets):
    seed = shape[0] * 100 + shape[1]
    x = _logits(shape, seed=seed, scale=3.0, dtype=np.float64)
    p = _probs(shape, seed=seed + 1, dtype=np.float64)
    t = np.log(p) if log_targets else p
    loss, (dx, dt) = jax.value_and_grad(
        lambda a, b: jnp.sum(_kl(a, b, log_targets=log_targets, reduction=reduction)),
        argnums=(0, 1),
    )(x, t)
    tx, tt = torch_leaf(x), torch_leaf(t)
    torch_reduction = {"mean": "batchmean", "sum": "sum", "none": "none"}[reduction]
    out = F.kl_div(F.log_softmax(tx, -1), tt, reduction=torch_reduction, log_target=log_targets)
    if reduction == "none":
        np.testing.assert_allclose(
            _kl(x, t, log_targets=log_targets, reduction="none"),
            out.detach().sum(-1).numpy(),
            rtol=1e-12,
            atol=1e-14,
        )
    out = out.sum()
    out.backward()
    np.testing.assert_allclose(loss, out.item(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(dt, tt.grad.numpy(), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 5.0])
def test_distillation_torch_parity(x64, temperature):
    s = _logits((8, 7), seed=11, scale=3.0, dtype=np.float64)
    t = _logits((8, 7), seed=12, scale=3.0, dtype=np.float64)
    loss, (ds, dt) = jax.value_and_grad(_distill, argnums=(0, 1))(s, t, temperature=temperature)
    ts, tt = torch_leaf(s), torch_leaf(t)
    out = temperature**2 * F.kl_div(
        F.log_softmax(ts / temperature, -1),
        F.softmax(tt / temperature, -1),
        reduction="batchmean",
    )
    out.backward()
    np.testing.assert_allclose(loss, out.item(), rtol=1e-12)
    np.testing.assert_allclose(ds, ts.grad.numpy(), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(dt, tt.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_torch_gives_nan_where_jaxce_is_finite(x64):
    # Documented differences: a zero target at a -inf logit, and a -inf log-target.
    x = np.array([[0.0, 5.0, -np.inf]])
    p = np.array([[0.5, 0.5, 0.0]])
    assert np.isnan(
        F.kl_div(F.log_softmax(torch_leaf(x), -1), torch_leaf(p), reduction="sum").item()
    )
    expected = 0.5 * np.log(0.5 / ref.softmax(x[:, :2])).sum()
    np.testing.assert_allclose(_kl(x, p, reduction="sum"), expected, rtol=1e-12)
    np.testing.assert_allclose(_kl(x, _log(p), log_targets=True), expected, rtol=1e-12)


# Identities.


def test_distillation_at_t1_equals_kl(x64):
    s = _logits((6, 5), seed=13, dtype=np.float64)
    t = _logits((6, 5), seed=14, dtype=np.float64)
    p = ref.softmax(t)
    np.testing.assert_allclose(_distill(s, t), _kl(s, p), rtol=1e-12)
    np.testing.assert_allclose(
        jax.grad(_distill)(s, t), jax.grad(_kl)(s, p), rtol=1e-10, atol=1e-15
    )
    # At temperature T it equals T^2 KL at logits / T.
    np.testing.assert_allclose(
        _distill(s, t, temperature=3.0), 9.0 * _kl(s / 3.0, ref.softmax(t / 3.0)), rtol=1e-12
    )


def test_kl_is_cross_entropy_minus_entropy(x64):
    x = _logits((7, 6), seed=15, dtype=np.float64)
    p = _probs((7, 6), seed=16, dtype=np.float64)
    ce = jaxce.softmax_cross_entropy(x, p, reduction="none")
    h = jaxce.entropy(np.log(p))  # softmax(log p) = p
    np.testing.assert_allclose(_kl(x, p, reduction="none"), ce - h, rtol=1e-10, atol=1e-13)
    # Same gradient w.r.t. the logits as the soft-label cross-entropy.
    np.testing.assert_allclose(
        jax.grad(_kl)(x, p), jax.grad(jaxce.softmax_cross_entropy)(x, p), rtol=1e-10, atol=1e-15
    )


@pytest.mark.parametrize("k", [1, 2, 7, 1000])
def test_entropy_of_uniform_is_log_k(k):
    for value in (0.0, -3.5, 1e4):
        h = jaxce.entropy(np.full((2, k), value, np.float32))
        np.testing.assert_allclose(h, np.full(2, np.log(k)), rtol=1e-5, atol=1e-6)


def test_kl_of_equal_distributions_is_zero(x64):
    x = _logits((5, 4), seed=17, dtype=np.float64)
    loss, grad = jax.value_and_grad(_kl)(x, ref.softmax(x))
    np.testing.assert_allclose(loss, 0.0, atol=1e-15)
    np.testing.assert_allclose(grad, 0.0, atol=1e-15)
    np.testing.assert_allclose(_distill(x, x + 3.0, temperature=2.0), 0.0, atol=1e-14)


# Gradients: check_grads (first order in float32, second order in float64).


def test_check_grads_float32():
    x = _logits((3, 5), seed=18, scale=1.0)
    p = _probs((3, 5), seed=19, floor=0.5)
    t = _logits((3, 5), seed=20, scale=1.0)
    opts = dict(order=1, modes=["rev"], atol=1e-2, rtol=1e-2)
    check_grads(_kl, (x, p), **opts)
    check_grads(lambda a, b: _kl(a, b, log_targets=True), (x, np.log(p)), **opts)
    check_grads(lambda a: jaxce.entropy(a, reduction="sum"), (x,), **opts)
    check_grads(lambda a, b: _distill(a, b, temperature=2.0), (x, t), **opts)


def test_check_grads_order2_float64(x64):
    x = _logits((3, 4), seed=21, dtype=np.float64)
    # Bounded away from 0: the curvature 1/p would swamp the finite differences.
    p = _probs((3, 4), seed=22, dtype=np.float64, floor=0.5)
    t = _logits((3, 4), seed=23, dtype=np.float64)
    where = np.array([True, False, True])
    opts = dict(order=2, modes=["rev"])
    # jit keeps the many perturbed evaluations compiled; the derivatives are the same.
    check_grads(jax.jit(lambda a, b: _kl(a, b, where=where)), (x, p), **opts)
    check_grads(
        jax.jit(lambda a, b: _kl(a, b, log_targets=True, reduction="none")), (x, np.log(p)), **opts
    )
    check_grads(jax.jit(lambda a: jaxce.entropy(a, where=where)), (x,), **opts)
    check_grads(jax.jit(lambda a, b: _distill(a, b, temperature=1.5, where=where)), (x, t), **opts)


def test_hessians(x64):
    # Hessian of KL w.r.t. the logits is the softmax Jacobian scaled by sum(p).
    x = np.array([0.3, -1.2, 2.0, 0.5])
    p = np.array([0.1, 0.2, 0.3, 0.2])  # sums to 0.8
    q = ref.softmax(x)
    hess = jax.hessian(_kl)(x, p, reduction="sum")
    np.testing.assert_allclose(hess, 0.8 * (np.diag(q) - np.outer(q, q)), rtol=1e-12, atol=1e-15)
    # W.r.t. the targets only sum p log p is curved: the Hessian is diag(1/p).
    hess_p = jax.hessian(_kl, argnums=1)(x, p, reduction="sum")
    np.testing.assert_allclose(hess_p, np.diag(1 / p), rtol=1e-12)
    # Distillation w.r.t. the student: T^2 * J_softmax(s/T) / T^2 = J(q).
    hess_s = jax.hessian(_distill)(x, -x, temperature=2.0, reduction="sum")
    q2 = ref.softmax(x / 2.0)
    np.testing.assert_allclose(hess_s, np.diag(q2) - np.outer(q2, q2), rtol=1e-12, atol=1e-15)


def test_second_order_with_masked_class_is_finite(x64):
    x = np.array([[0.0, -np.inf, 1.0], [2.0, 0.5, -np.inf]])
    p = np.array([[0.4, 0.0, 0.6], [0.5, 0.5, 0.0]])
    for f, args in (
        (lambda a, b: _kl(a, b), (x, p)),
        (lambda a, b: _kl(a, b, log_targets=True), (x, _log(p))),
        (lambda a, b: _distill(a, b, temperature=2.0), (x, x)),
    ):
        for argnum in (0, 1):
            first = jax.grad(f, argnums=argnum)
            g2 = jax.jit(jax.grad(lambda *a, first=first: jnp.sum(first(*a) ** 2)))(*args)
            assert np.all(np.isfinite(g2)), argnum
    g2 = jax.jit(jax.grad(lambda a: jnp.sum(jax.grad(jaxce.entropy)(a, reduction="sum") ** 2)))(x)
    assert np.all(np.isfinite(g2)) and np.all(np.asarray(g2)[np.isinf(x)] == 0)


# Transformations, axis and where.


def test_vmap_equals_batched():
    x = _logits((3, 4, 5), seed=24)
    p = _probs((3, 4, 5), seed=25)
    t = _logits((3, 4, 5), seed=26)
    batched = _kl(x, p, reduction="none")
    np.testing.assert_allclose(jax.vmap(lambda a, b: _kl(a, b, reduction="none"))(x, p), batched)
    np.testing.assert_allclose(jax.vmap(_kl)(x, p), jnp.mean(batched, axis=1), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(jax.vmap(jaxce.entropy)(x), jaxce.entropy(x), rtol=1e-6)
    np.testing.assert_allclose(
        jax.vmap(lambda a, b: _distill(a, b, temperature=2.0, reduction="none"))(x, t),
        _distill(x, t, temperature=2.0, reduction="none"),
        rtol=1e-6,
    )
    grads = jax.vmap(jax.grad(_kl, argnums=(0, 1)))(x, p)
    for i in range(3):
        expected = jax.grad(_kl, argnums=(0, 1))(x[i], p[i])
        for got, want in zip(grads, expected, strict=True):
            np.testing.assert_allclose(got[i], want, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("axis", [0, 1, -3])
def test_axis_equals_moveaxis(axis):
    shape = (4, 3, 5)
    x = _logits(shape, seed=27)
    p = _probs(shape, axis=axis, seed=28)
    t = _logits(shape, seed=29)

    def last(a):
        return np.moveaxis(a, axis, -1)

    np.testing.assert_allclose(
        _kl(x, p, axis=axis, reduction="none"), _kl(last(x), last(p), reduction="none"), rtol=1e-6
    )
    np.testing.assert_allclose(
        jaxce.entropy(x, axis=axis), jaxce.entropy(last(x)), rtol=1e-6, atol=1e-7
    )
    np.testing.assert_allclose(
        _distill(x, t, axis=axis, temperature=2.0, reduction="none"),
        _distill(last(x), last(t), temperature=2.0, reduction="none"),
        rtol=1e-6,
    )
    dx = jax.grad(_kl)(x, p, axis=axis)
    np.testing.assert_allclose(
        np.moveaxis(dx, axis, -1), jax.grad(_kl)(last(x), last(p)), rtol=1e-6, atol=1e-8
    )
    # PyTorch's spatial layout (N, K, d) with axis=1, against the oracle.
    expected = ref.kl_divergence(x, p, axis=axis, reduction="none")
    np.testing.assert_allclose(_kl(x, p, axis=axis, reduction="none"), expected, rtol=1e-5)


def test_where_equals_slicing_and_zero_gradient():
    x = _logits((6, 4), seed=30)
    p = _probs((6, 4), seed=31)
    t = _logits((6, 4), seed=32)
    where = np.array([True, False, True, False, True, True])
    cases = [
        (lambda a, b, **k: _kl(a, b, **k), (x, p)),
        (lambda a, b, **k: _kl(a, b, log_targets=True, **k), (x, np.log(p))),
        (lambda a, b, **k: _distill(a, b, temperature=2.0, **k), (x, t)),
        (lambda a, **k: jaxce.entropy(a, reduction="mean", **k), (x,)),
    ]
    for f, args in cases:
        kept = f(*(a[where] for a in args))
        np.testing.assert_allclose(f(*args, where=where), kept, rtol=1e-6)
        grads = jax.grad(lambda *a, f=f: f(*a, where=where), argnums=range(len(args)))(*args)
        for g in grads:
            assert np.all(np.asarray(g)[~where] == 0)
            assert np.all(np.asarray(g)[where] != 0)


def test_where_broadcasts_over_examples():
    x = _logits((2, 3, 4), seed=33)
    p = _probs((2, 3, 4), seed=34)
    where = np.array([True, False, True])
    full = np.broadcast_to(where, (2, 3))
    np.testing.assert_allclose(_kl(x, p, where=where), _kl(x, p, where=full))
    np.testing.assert_allclose(_kl(x, p, where=where), _kl(x[:, where], p[:, where]), rtol=1e-6)


def test_all_masked_is_zero_with_zero_gradient():
    x = _logits((3, 4), seed=35)
    p = _probs((3, 4), seed=36)
    none = np.zeros(3, bool)
    for f, args in (
        (_kl, (x, p)),
        (_distill, (x, x)),
        (lambda a, **k: jaxce.entropy(a, reduction="mean", **k), (x,)),
    ):
        loss, grads = jax.value_and_grad(
            lambda *a, f=f: f(*a, where=none), argnums=range(len(args))
        )(*args)
        assert loss == 0 and all(np.all(np.asarray(g) == 0) for g in grads)


def test_cached_and_no_retrace():
    p = _probs((4, 3), seed=38)
    xs = [_logits((4, 3), seed=seed) for seed in (37, 0, 1, 2)]
    assert_cached(jaxce.kl_divergence, [(x, p) for x in xs])
    assert_cached(jaxce.entropy, [(x,) for x in xs])
    size = assert_cached(jaxce.distillation_loss, [(x, x + 1) for x in xs], temperature=2.0)
    jaxce.distillation_loss(xs[0], xs[0], temperature=2)  # int and float T: one compilation
    assert jaxce.distillation_loss._cache_size() == size


# Numerics: -inf and extreme logits.


def test_neg_inf_logits_with_zero_targets():
    x = np.array([[0.0, -np.inf, 1.0, 2.0], [-np.inf, 3.0, -np.inf, 0.5]], np.float32)
    p = np.array([[0.2, 0.0, 0.3, 0.5], [0.0, 0.6, 0.0, 0.4]], np.float32)
    masked = np.isinf(x)
    for log_targets in (False, True):
        t = _log(p) if log_targets else p
        loss, (dx, dt) = jax.value_and_grad(_kl, argnums=(0, 1))(x, t, log_targets=log_targets)
        expected = ref.kl_divergence(x, t, log_targets=log_targets)
        np.testing.assert_allclose(loss, expected, rtol=1e-5)
        assert np.all(np.isfinite(dx)) and np.all(np.isfinite(dt))
        assert np.all(np.asarray(dx)[masked] == 0) and np.all(np.asarray(dt)[masked] == 0)
    # The masked class changes nothing: equal to dropping it.
    np.testing.assert_allclose(_kl(x[:1], p[:1]), _kl(x[:1, [0, 2, 3]], p[:1, [0, 2, 3]]))


def test_mass_on_neg_inf_logit_is_inf():
    x = np.array([[0.0, -np.inf]], np.float32)
    assert _kl(x, np.array([[0.5, 0.5]], np.float32)) == np.inf


def test_neg_inf_in_entropy_and_distillation():
    x = np.array([[0.0, -np.inf, 1.0, 2.0], [-np.inf, 3.0, -np.inf, 0.5]], np.float32)
    masked = np.isinf(x)
    h, dx = jax.value_and_grad(jaxce.entropy)(x, reduction="sum")
    np.testing.assert_allclose(h, np.sum(ref.entropy(x)), rtol=1e-6)
    assert np.all(np.isfinite(dx)) and np.all(np.asarray(dx)[masked] == 0)
    # Teacher and student share the masked classes.
    teacher = np.where(masked, -np.inf, _logits(x.shape, seed=39))
    loss, (ds, dt) = jax.value_and_grad(_distill, argnums=(0, 1))(x, teacher, temperature=2.0)
    np.testing.assert_allclose(loss, ref.distillation_loss(x, teacher, temperature=2.0), rtol=1e-5)
    assert np.all(np.isfinite(ds)) and np.all(np.isfinite(dt))
    assert np.all(np.asarray(ds)[masked] == 0) and np.all(np.asarray(dt)[masked] == 0)
    # A teacher-masked class alone still contributes nothing to the loss or the teacher gradient.
    loss, (ds, dt) = jax.value_and_grad(_distill, argnums=(0, 1))(
        _logits(x.shape, seed=40), teacher
    )
    assert np.isfinite(loss) and np.all(np.isfinite(ds)) and np.all(np.asarray(dt)[masked] == 0)


@pytest.mark.parametrize("scale", [1e4, -1e4])
def test_extreme_logits_finite(scale):
    x = np.sign(_logits((6, 5), seed=41)) * scale
    t = np.sign(_logits((6, 5), seed=42)) * scale
    p = _probs((6, 5), seed=43, zeros=True)
    for f, args in (
        (_kl, (x, p)),
        (lambda a, b: _kl(a, b, log_targets=True), (x, np.log(_probs((6, 5), seed=44)))),
        (lambda a, b: _distill(a, b, temperature=3.0), (x, t)),
        (lambda a: jaxce.entropy(a, reduction="sum"), (x,)),
    ):
        loss, grads = jax.value_and_grad(f, argnums=range(len(args)))(*args)
        assert np.isfinite(loss) and all(np.all(np.isfinite(g)) for g in grads)
    np.testing.assert_allclose(_kl(x, p), ref.kl_divergence(x, p), rtol=1e-6)
    np.testing.assert_allclose(
        _distill(x, t, temperature=3.0), ref.distillation_loss(x, t, temperature=3.0), rtol=1e-6
    )


# Dtype contract.


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_dtype_contract(dtype):
    x32 = _logits((8, 6), seed=45)
    x = jnp.asarray(x32, dtype)
    p = jnp.asarray(_probs((8, 6), seed=46), dtype)
    t = jnp.asarray(_logits((8, 6), seed=47), dtype)
    for f, args in (
        (_kl, (x, p)),
        (lambda a, b: _kl(a, b, log_targets=True), (x, jnp.log(p))),
        (lambda a, b: _distill(a, b, temperature=2.0), (x, t)),
        (lambda a: jaxce.entropy(a, reduction="mean"), (x,)),
    ):
        loss, grads = jax.value_and_grad(f, argnums=range(len(args)))(*args)
        assert loss.dtype == jnp.float32
        assert all(g.dtype == dtype for g in grads)
        # Computed in float32: matches the float64 oracle on the rounded inputs.
        assert np.isfinite(loss)
    expected = ref.kl_divergence(np.asarray(x, np.float64), np.asarray(p, np.float64))
    np.testing.assert_allclose(_kl(x, p), expected, rtol=1e-5)
    assert jaxce.entropy(x).dtype == jnp.float32
    # Mixed precision: float32 targets with half logits compute in float32.
    p32 = _probs((8, 6), seed=46)
    _, (dx, dp) = jax.value_and_grad(_kl, argnums=(0, 1))(x, p32)
    assert dx.dtype == dtype and dp.dtype == jnp.float32


def test_float64_stays_float64(x64):
    x = _logits((3, 4), seed=48, dtype=np.float64)
    assert _kl(x, ref.softmax(-x)).dtype == jnp.float64
    assert jaxce.entropy(x).dtype == jnp.float64
    assert _distill(x, -x).dtype == jnp.float64


# Bad input: clear errors at trace time, naming the argument.

X = np.ones((2, 3), np.float32)
P = X / 3

BAD_CALLS = [
    (TypeError, "logits", lambda: jaxce.kl_divergence(np.ones((2, 3), int), P)),
    (TypeError, "targets", lambda: jaxce.kl_divergence(X, np.ones((2, 3), int))),
    (ValueError, "targets", lambda: jaxce.kl_divergence(X, np.ones((2, 4), np.float32))),
    (ValueError, "targets", lambda: jaxce.kl_divergence(X, np.ones(3, np.float32))),
    (ValueError, "axis", lambda: jaxce.kl_divergence(X, P, axis=2)),
    (TypeError, "axis", lambda: jaxce.kl_divergence(X, P, axis=1.0)),
    (ValueError, "logits", lambda: jaxce.kl_divergence(np.float32(1.0), np.float32(1.0))),
    (TypeError, "log_targets", lambda: jaxce.kl_divergence(X, P, log_targets=1)),
    (ValueError, "reduction", lambda: jaxce.kl_divergence(X, P, reduction="batchmean")),
    (TypeError, "where", lambda: jaxce.kl_divergence(X, P, where=np.ones(2))),
    (ValueError, "where", lambda: jaxce.kl_divergence(X, P, where=np.ones(3, bool))),
    (TypeError, "logits", lambda: jaxce.entropy(np.ones((2, 3), int))),
    (ValueError, "logits", lambda: jaxce.entropy(np.float32(0.0))),
    (ValueError, "axis", lambda: jaxce.entropy(X, axis=-3)),
    (ValueError, "reduction", lambda: jaxce.entropy(X, reduction="avg")),
    (TypeError, "where", lambda: jaxce.entropy(X, where=np.ones(2, int))),
    (ValueError, "where", lambda: jaxce.entropy(X, where=np.ones((2, 2), bool))),
    (TypeError, "student_logits", lambda: jaxce.distillation_loss(np.ones((2, 3), int), X)),
    (TypeError, "teacher_logits", lambda: jaxce.distillation_loss(X, np.ones((2, 3), int))),
    (ValueError, "teacher_logits", lambda: jaxce.distillation_loss(X, np.ones((3, 2), np.float32))),
    (ValueError, "temperature", lambda: jaxce.distillation_loss(X, X, temperature=0.0)),
    (ValueError, "temperature", lambda: jaxce.distillation_loss(X, X, temperature=-2.0)),
    (ValueError, "temperature", lambda: jaxce.distillation_loss(X, X, temperature=np.inf)),
    (TypeError, "temperature", lambda: jaxce.distillation_loss(X, X, temperature="hot")),
    (TypeError, "temperature", lambda: jaxce.distillation_loss(X, X, temperature=None)),
    (ValueError, "axis", lambda: jaxce.distillation_loss(X, X, axis=3)),
    (ValueError, "reduction", lambda: jaxce.distillation_loss(X, X, reduction="batchmean")),
    (ValueError, "where", lambda: jaxce.distillation_loss(X, X, where=np.ones(5, bool))),
]


@pytest.mark.parametrize("error,name,call", BAD_CALLS)
def test_bad_input_raises_naming_argument(error, name, call):
    with pytest.raises(error, match=name):
        call()


def test_errors_fire_under_jit():
    with pytest.raises(ValueError, match=r"targets must have shape \(2, 3\) .*; got \(2, 4\)"):
        jax.jit(jaxce.kl_divergence)(X, np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match="temperature must be > 0; got -1.0"):
        jax.jit(lambda s, t: jaxce.distillation_loss(s, t, temperature=-1.0))(X, X)
    # A traced temperature is accepted and equals the Python number.
    traced = jax.jit(lambda s, t, temp: jaxce.distillation_loss(s, t, temperature=temp))
    np.testing.assert_allclose(
        traced(X, X + 1, 2.0), jaxce.distillation_loss(X, X + 1, temperature=2.0)
    )


def test_temperature_accepts_numpy_and_concrete_scalars():
    s, t = _logits((3, 4), seed=49), _logits((3, 4), seed=50)
    expected = _distill(s, t, temperature=2.0)
    for temperature in (2, np.float32(2.0), jnp.asarray(2.0)):
        np.testing.assert_allclose(_distill(s, t, temperature=temperature), expected)


# Property tests.


@settings(max_examples=20, deadline=None)
@given(
    data=st.data(),
    shape=st.sampled_from([(1, 1), (2, 3), (5, 8)]),  # few shapes: few compilations
    magnitude=st.sampled_from([1.0, 20.0, 1e3]),
)
def test_property_kl_nonnegative_and_zero_when_equal(data, shape, magnitude):
    with jax.enable_x64(True):
        _kl_properties(data, *shape, magnitude)


def _kl_properties(data, n, k, magnitude):
    floats = st.floats(-1, 1, allow_nan=False)
    x = data.draw(hnp.arrays(np.float64, (n, k), elements=floats)) * magnitude
    y = data.draw(hnp.arrays(np.float64, (n, k), elements=floats)) * magnitude
    # Normalised targets, some exactly zero.
    p = ref.softmax(y)
    p = np.where(data.draw(hnp.arrays(np.bool_, (n, k))), 0.0, p)
    p = np.where(p.sum(-1, keepdims=True) == 0, 1.0 / k, p)
    p = p / p.sum(-1, keepdims=True)
    masked_x = np.where((p == 0) & data.draw(hnp.arrays(np.bool_, (n, k))), -np.inf, x)
    losses = _kl(masked_x, p, reduction="none")
    assert np.all(np.asarray(losses) >= -1e-9 * max(1.0, magnitude))
    np.testing.assert_allclose(
        losses, ref.kl_divergence(masked_x, p, reduction="none"), rtol=1e-9, atol=1e-9 * magnitude
    )
    np.testing.assert_allclose(_kl(x, ref.softmax(x), reduction="none"), 0.0, atol=1e-9)
    temperature = data.draw(st.sampled_from([0.5, 4.0]))
    distill = _distill(x, y, temperature=temperature, reduction="none")
    assert np.all(np.asarray(distill) >= -1e-9 * magnitude**2)
    np.testing.assert_allclose(_distill(x, x, temperature=temperature), 0.0, atol=1e-9)
    # Entropy lies in [0, log k].
    h = np.asarray(jaxce.entropy(x))
    assert np.all(h >= -1e-12) and np.all(h <= np.log(k) + 1e-12)
    # Logit gradients of a normalised KL sum to zero (softmax is shift invariant).
    grad = jax.grad(_kl)(masked_x, p)
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(np.sum(grad, -1), 0.0, atol=1e-12 * max(1.0, magnitude))


@settings(max_examples=12, deadline=None)
@given(shape=hnp.array_shapes(min_dims=1, max_dims=4, max_side=4), data=st.data())
def test_property_any_axis_matches_oracle(shape, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    log_targets = data.draw(st.booleans())
    x = _logits(shape, seed=len(shape))
    p = _probs(shape, axis=axis, seed=len(shape) + 1)
    t = np.log(p) if log_targets else p
    got = _kl(x, t, axis=axis, log_targets=log_targets, reduction="none")
    expected = ref.kl_divergence(x, t, axis=axis, log_targets=log_targets, reduction="none")
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        jaxce.entropy(x, axis=axis), ref.entropy(x, axis=axis), rtol=1e-5, atol=1e-6
    )


# Compiled programs: no gather (sharding-safe), no N x K residuals beyond plain autodiff.


def _naive_kl(x, p):
    log_q = jax.nn.log_softmax(x)
    return jnp.sum(jnp.where(p > 0, p * (jnp.log(jnp.where(p > 0, p, 1)) - log_q), 0)) / x.shape[0]


MEMORY_CASES = [
    (lambda a, b: jaxce.kl_divergence(a, b), _naive_kl),
    (
        lambda a, b: jaxce.distillation_loss(a, b, temperature=2.0),
        lambda a, b: 4.0 * _naive_kl(a / 2.0, jax.nn.softmax(b / 2.0)),
    ),
    (
        lambda a, b: jaxce.entropy(a, reduction="sum"),
        lambda a, b: -jnp.sum(jax.nn.softmax(a) * jax.nn.log_softmax(a)),
    ),
]


@pytest.mark.parametrize("case", range(len(MEMORY_CASES)))
def test_compiled_memory_and_sharding_safe(case):
    n, k = 64, 512
    x = jax.ShapeDtypeStruct((n, k), jnp.float32)
    ours, naive = MEMORY_CASES[case]

    def compiled(f):
        return jax.jit(jax.value_and_grad(f)).lower(x, x).compile()

    program = compiled(ours)
    temp = program.memory_analysis().temp_size_in_bytes
    assert temp <= compiled(naive).memory_analysis().temp_size_in_bytes
    assert temp <= 2 * n * k * 4 + 16 * n  # at most two N x K buffers, plus O(N)
    text = program.as_text()
    assert_no_gather(text)
