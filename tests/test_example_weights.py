"""Example weights (`example_weights=`) on every loss: the float64 oracle, exact gradients
(logits, example weights, class weights), weights of 1 and of 0, the normaliser, the
`denominator`, empty batches, the option classes, dtypes and bad input."""

import dataclasses
import functools
from typing import Any, NamedTuple

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.experimental import checkify
from jax.sharding import PartitionSpec as P
from jax.test_util import check_grads

import jaxce
from tests import reference as ref
from tests.helpers import assert_cached, central_difference

IGNORE = -100


class Case(NamedTuple):
    """One loss: its differentiable inputs (the logits first), the jaxce call and its oracle.

    `call(inputs, v, w, **kw)` and `oracle(inputs, v, w, **kw)` take the example
    weights `v` and the class (or element) weights `w`, either None.
    """

    inputs: tuple
    call: Any
    oracle: Any
    example_shape: tuple
    w: Any = None  # the loss's own weights, when it has them
    denominator: bool = False  # takes `denominator=`


def _spoil_labels(labels, row, bad):
    labels = labels.copy()
    if row is not None:
        labels[row] = bad
    return labels


def _spoil(x, row, values=(np.inf, np.nan, -np.inf)):
    """Row `row` of `x` filled with inf and NaN: garbage that must not leak."""
    x = np.array(x, np.float64)
    if row is not None:
        x[row] = np.resize(np.array(values), x[row].shape)
    return x


def _jnp(a):
    return None if a is None else jnp.asarray(a)


def _vocab_parallel(x, y, v, **kw):
    """`vocab_parallel_softmax_cross_entropy` inside `shard_map` on a one-device mesh."""
    mesh = jax.make_mesh((1,), ("vocab",), axis_types=(jax.sharding.AxisType.Auto,))
    out_spec = P(None) if kw.get("reduction", "mean") == "none" else P()

    def local(x, y, *v):
        return jaxce.vocab_parallel_softmax_cross_entropy(
            x, y, axis_name="vocab", example_weights=v[0] if v else None, **kw
        )

    args = (x, y) + (() if v is None else (v,))
    specs = (P(None, "vocab"), P(None)) + (() if v is None else (P(*(None,) * np.ndim(v)),))
    return jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=out_spec)(*args)


def _class_data(rng, n, k, spoil):
    x = _spoil(rng.normal(size=(n, k)) * 2, spoil)
    y = rng.integers(0, k, n)
    if n > 1:
        y[1] = IGNORE
    return x, _spoil_labels(y, spoil, k + 3)


def _probs(rng, n, k, spoil):
    p = rng.random((n, k)) ** 2
    return _spoil(p / p.sum(-1, keepdims=True), spoil, (np.nan,))


def _softmax_ce(rng, n, k, spoil=None):
    x, y = _class_data(rng, n, k, spoil)
    opts = dict(ignore_index=IGNORE, label_smoothing=0.1, z_loss=0.01)
    return Case(
        (x,),
        lambda xs, v, w, **kw: jaxce.softmax_cross_entropy(
            xs[0], y, weights=w, example_weights=v, **opts, **kw
        ),
        lambda xs, v, w, **kw: ref.softmax_cross_entropy(
            xs[0], y, weights=w, example_weights=v, **opts, **kw
        ),
        (n,),
        rng.uniform(0.5, 2, k),
        denominator=True,
    )


def _softmax_ce_probs(rng, n, k, spoil=None):
    x = _spoil(rng.normal(size=(n, k)) * 2, spoil)
    p = _probs(rng, n, k, spoil)
    opts = dict(label_smoothing=0.2)
    return Case(
        (x,),
        lambda xs, v, w, **kw: jaxce.softmax_cross_entropy(
            xs[0], p, weights=w, example_weights=v, **opts, **kw
        ),
        lambda xs, v, w, **kw: ref.softmax_cross_entropy(
            xs[0], p, weights=w, example_weights=v, **opts, **kw
        ),
        (n,),
        rng.uniform(0.5, 2, k),
        denominator=True,
    )


def _nll(rng, n, k, spoil=None):
    x, y = _class_data(rng, n, k, None)
    lp = _spoil(ref.log_softmax(x), spoil)
    y = _spoil_labels(y, spoil, k + 3)
    return Case(
        (lp,),
        lambda xs, v, w, **kw: jaxce.nll_loss(
            xs[0], y, weights=w, ignore_index=IGNORE, example_weights=v, **kw
        ),
        lambda xs, v, w, **kw: ref.nll_loss(
            xs[0], y, weights=w, ignore_index=IGNORE, example_weights=v, **kw
        ),
        (n,),
        rng.uniform(0.5, 2, k),
        denominator=True,
    )


def _softmax_focal(rng, n, k, spoil=None):
    x, y = _class_data(rng, n, k, spoil)
    return Case(
        (x,),
        lambda xs, v, w, **kw: jaxce.softmax_focal_loss(
            xs[0], y, gamma=1.5, weights=w, ignore_index=IGNORE, example_weights=v, **kw
        ),
        lambda xs, v, w, **kw: ref.softmax_focal_loss(
            xs[0], y, gamma=1.5, weights=w, ignore_index=IGNORE, example_weights=v, **kw
        ),
        (n,),
        rng.uniform(0.5, 2, k),
    )


def _poly1(rng, n, k, spoil=None, probs=False):
    x, y = _class_data(rng, n, k, spoil)
    opts: dict[str, Any] = dict(epsilon=2.0, label_smoothing=0.1)
    if probs:
        y = _probs(rng, n, k, spoil)
    else:
        opts["ignore_index"] = IGNORE
    return Case(
        (x,),
        lambda xs, v, w, **kw: jaxce.poly1_cross_entropy(
            xs[0], y, weights=w, example_weights=v, **opts, **kw
        ),
        lambda xs, v, w, **kw: ref.poly1_cross_entropy(
            xs[0], y, weights=w, example_weights=v, **opts, **kw
        ),
        (n,),
        rng.uniform(0.5, 2, k),
    )


def _kl(rng, n, k, spoil=None):
    x = _spoil(rng.normal(size=(n, k)) * 2, spoil)
    p = _probs(rng, n, k, spoil)
    return Case(
        (x,),
        lambda xs, v, w, **kw: jaxce.kl_divergence(xs[0], p, example_weights=v, **kw),
        lambda xs, v, w, **kw: ref.kl_divergence(xs[0], p, example_weights=v, **kw),
        (n,),
    )


def _entropy(rng, n, k, spoil=None):
    x = _spoil(rng.normal(size=(n, k)) * 2, spoil)
    return Case(
        (x,),
        lambda xs, v, w, **kw: jaxce.entropy(xs[0], example_weights=v, **kw),
        lambda xs, v, w, **kw: ref.entropy(xs[0], example_weights=v, **kw),
        (n,),
    )


def _pair(rng, n, k, spoil, loss, oracle, **opts):
    """A loss of student and teacher logits (both differentiable)."""
    s = _spoil(rng.normal(size=(n, k)) * 2, spoil)
    t = _spoil(rng.normal(size=(n, k)) * 2, spoil)
    return Case(
        (s, t),
        lambda xs, v, w, **kw: loss(*xs, example_weights=v, **opts, **kw),
        lambda xs, v, w, **kw: oracle(*xs, example_weights=v, **opts, **kw),
        (n,),
    )


def _distillation(rng, n, k, spoil=None):
    kd, kd_ref = jaxce.distillation_loss, ref.distillation_loss
    return _pair(rng, n, k, spoil, kd, kd_ref, temperature=2.0)


def _jensen_shannon(rng, n, k, spoil=None, beta=0.3):
    js, js_ref = jaxce.jensen_shannon_divergence, ref.jensen_shannon_divergence
    return _pair(rng, n, k, spoil, js, js_ref, beta=beta, temperature=2.0)


def _reverse_kl(rng, n, k, spoil=None):
    rkl, rkl_ref = jaxce.reverse_kl_divergence, ref.reverse_kl_divergence
    return _pair(rng, n, k, spoil, rkl, rkl_ref, temperature=2.0)


def _linear(rng, n, k, spoil=None):
    d = 3
    h = _spoil(rng.normal(size=(n, d)), spoil)
    kernel = rng.normal(size=(d, k))
    bias = np.linspace(-1, 1, k)
    _, y = _class_data(rng, n, k, spoil)
    opts = dict(ignore_index=IGNORE, label_smoothing=0.1, z_loss=0.01)

    def call(xs, v, w, **kw):
        return jaxce.linear_softmax_cross_entropy(
            xs[0], xs[1], y, bias=bias, chunk_size=3, example_weights=v, **opts, **kw
        )

    def oracle(xs, v, w, **kw):
        logits = np.asarray(xs[0], np.float64) @ xs[1] + bias
        return ref.softmax_cross_entropy(logits, y, example_weights=v, **opts, **kw)

    return Case((h, kernel), call, oracle, (n,), denominator=True)


def _linear_distill(rng, n, k, spoil=None):
    d = 3
    h = _spoil(rng.normal(size=(n, d)), spoil)
    kernel = rng.normal(size=(d, k))
    teacher = _spoil(rng.normal(size=(n, k)), spoil)
    _, y = _class_data(rng, n, k, spoil)
    opts = dict(labels=y, alpha=0.3, temperature=2.0, ignore_index=IGNORE, divergence="jsd")

    def call(xs, v, w, **kw):
        return jaxce.linear_distillation_loss(
            xs[0], xs[1], teacher, chunk_size=3, example_weights=v, **opts, **kw
        )

    def oracle(xs, v, w, **kw):
        return ref.linear_distillation_loss(xs[0], xs[1], teacher, example_weights=v, **opts, **kw)

    return Case((h, kernel), call, oracle, (n,))


def _vocab(rng, n, k, spoil=None):
    x, y = _class_data(rng, n, k, spoil)
    opts = dict(ignore_index=IGNORE, label_smoothing=0.1, z_loss=0.01)
    return Case(
        (x,),
        lambda xs, v, w, **kw: _vocab_parallel(xs[0], y, v, **opts, **kw),
        lambda xs, v, w, **kw: ref.softmax_cross_entropy(xs[0], y, example_weights=v, **opts, **kw),
        (n,),
        denominator=True,
    )


def _binary_labels(rng, n, k, spoil):
    y = rng.random((n, k))
    return _spoil(y, spoil, (2.0,))


def _sigmoid_bce(rng, n, k, spoil=None):
    x = _spoil(rng.normal(size=(n, k)) * 2, spoil)
    y = _binary_labels(rng, n, k, spoil)
    pos = rng.uniform(0.5, 3, k)
    opts = dict(pos_weight=pos, label_smoothing=0.1)
    return Case(
        (x,),
        lambda xs, v, w, **kw: jaxce.sigmoid_binary_cross_entropy(
            xs[0], y, weights=w, example_weights=v, **opts, **kw
        ),
        lambda xs, v, w, **kw: ref.sigmoid_binary_cross_entropy(
            xs[0], y, weights=w, example_weights=v, **opts, **kw
        ),
        (n, k),
        rng.uniform(0.5, 2, k),
    )


def _bce(rng, n, k, spoil=None):
    p = _spoil(rng.uniform(0.05, 0.95, (n, k)), spoil, (np.nan, 2.0))
    y = _binary_labels(rng, n, k, spoil)
    return Case(
        (p,),
        lambda xs, v, w, **kw: jaxce.binary_cross_entropy(
            xs[0], y, weights=w, example_weights=v, **kw
        ),
        lambda xs, v, w, **kw: ref.binary_cross_entropy(
            xs[0], y, weights=w, example_weights=v, **kw
        ),
        (n, k),
        rng.uniform(0.5, 2, k),
    )


def _sigmoid_focal(rng, n, k, spoil=None):
    x = _spoil(rng.normal(size=(n, k)) * 2, spoil)
    y = _binary_labels(rng, n, k, spoil)
    return Case(
        (x,),
        lambda xs, v, w, **kw: jaxce.sigmoid_focal_loss(
            xs[0], y, alpha=0.25, gamma=1.5, example_weights=v, **kw
        ),
        lambda xs, v, w, **kw: ref.sigmoid_focal_loss(
            xs[0], y, alpha=0.25, gamma=1.5, example_weights=v, **kw
        ),
        (n, k),
    )


CASES = {
    "softmax_cross_entropy": _softmax_ce,
    "softmax_cross_entropy/probs": _softmax_ce_probs,
    "nll_loss": _nll,
    "softmax_focal_loss": _softmax_focal,
    "poly1_cross_entropy": _poly1,
    "poly1_cross_entropy/probs": functools.partial(_poly1, probs=True),
    "kl_divergence": _kl,
    "entropy": _entropy,
    "distillation_loss": _distillation,
    "jensen_shannon_divergence": _jensen_shannon,
    "jensen_shannon_divergence/beta0": functools.partial(_jensen_shannon, beta=0.0),
    "jensen_shannon_divergence/beta1": functools.partial(_jensen_shannon, beta=1.0),
    "reverse_kl_divergence": _reverse_kl,
    "linear_softmax_cross_entropy": _linear,
    "linear_distillation_loss": _linear_distill,
    "vocab_parallel_softmax_cross_entropy": _vocab,
    "sigmoid_binary_cross_entropy": _sigmoid_bce,
    "binary_cross_entropy": _bce,
    "sigmoid_focal_loss": _sigmoid_focal,
}
NAMES = sorted(CASES)


def test_every_loss_takes_example_weights():
    # Every public loss (the names the sharding test calls losses) is covered here.
    from tests.test_sharding import LOSSES

    missing = {name for name in LOSSES if name not in {n.split("/")[0] for n in CASES}}
    assert not missing, f"losses without example-weight tests: {sorted(missing)}"


def _weights(rng, shape, low=0.2):
    return rng.uniform(low, 3.0, shape)


def _where(rng, shape):
    where = rng.random(shape) > 0.25
    where.flat[0] = True
    return where


# The float64 oracle: values and every gradient.


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name", NAMES)
def test_matches_oracle_value_and_gradients(x64, name, reduction):
    rng = np.random.default_rng(NAMES.index(name))
    case = CASES[name](rng, 5, 4)
    v = _weights(rng, case.example_shape)
    v[2] = 0.0  # excluded from the value, and its derivative is still its loss term
    where = _where(rng, case.example_shape)
    kw = dict(where=where, reduction=reduction)
    w = case.w
    expected = case.oracle(case.inputs, v, w, **kw)

    def f(xs, v, w):
        return case.call(xs, v, w, **kw)

    got, vjp = jax.vjp(f, tuple(map(jnp.asarray, case.inputs)), jnp.asarray(v), _jnp(w))
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    cot = rng.normal(size=np.shape(expected))
    d_inputs, d_v, d_w = vjp(jnp.asarray(cot))

    def scalar(xs=case.inputs, v=v, w=w):
        return np.sum(case.oracle(xs, v, w, **kw) * cot)

    for i, x in enumerate(case.inputs):

        def of_input(x_i, i=i):
            return scalar(xs=tuple(x_i if j == i else a for j, a in enumerate(case.inputs)))

        np.testing.assert_allclose(
            d_inputs[i], central_difference(of_input, x), rtol=1e-6, atol=1e-8
        )
    np.testing.assert_allclose(
        d_v, central_difference(lambda v: scalar(v=v), v), rtol=1e-6, atol=1e-8
    )
    if w is not None:
        np.testing.assert_allclose(
            d_w, central_difference(lambda w: scalar(w=w), w), rtol=1e-6, atol=1e-8
        )


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


# Weights of 1 are no weights, bit for bit; a weight of 0 is where=False.


def _value_and_grads(case, v, **kw):
    """The loss and its gradients w.r.t. the inputs (float32), summed for "none"."""

    def f(xs):
        return jnp.sum(case.call(xs, v, _jnp32(case.w), **kw))

    inputs = tuple(jnp.asarray(x, jnp.float32) for x in case.inputs)
    return jax.value_and_grad(f)(inputs)


def _jnp32(a):
    return None if a is None else jnp.asarray(a, jnp.float32)


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("name", NAMES)
def test_unit_weights_equal_no_weights_exactly(name, reduction):
    case = CASES[name](np.random.default_rng(2), 6, 5)
    where = _where(np.random.default_rng(3), case.example_shape)
    kw = dict(where=where, reduction=reduction)
    ones = jnp.ones(case.example_shape, jnp.float32)
    for got, want in zip(
        jax.tree.leaves(_value_and_grads(case, ones, **kw)),
        jax.tree.leaves(_value_and_grads(case, None, **kw)),
        strict=True,
    ):
        np.testing.assert_array_equal(got, want)


# The fused head's kernel gradient sums h_i dz_i over the examples in its chunk loop, and
# 0 * NaN there is NaN: a masked example whose hidden state is not finite spoils it, with
# where=False as with a zero weight.
@pytest.mark.parametrize("name", NAMES)
def test_zero_weight_is_where_false_even_with_garbage(name):
    # Row 2 holds inf and NaN logits (and an invalid label where there is one).
    case = CASES[name](np.random.default_rng(4), 5, 4, spoil=2)
    row = np.zeros(case.example_shape, bool)
    row[2] = True
    v = np.where(row, 0.0, _weights(np.random.default_rng(5), case.example_shape))
    v = jnp.asarray(v, jnp.float32)
    for reduction in ("mean", "sum", "none"):
        by_weight = _value_and_grads(case, v, reduction=reduction)
        by_where = _value_and_grads(case, jnp.where(row, 1.0, v), where=~row, reduction=reduction)
        for got, want in zip(jax.tree.leaves(by_weight), jax.tree.leaves(by_where), strict=True):
            np.testing.assert_array_equal(got, want)
        loss, grads = by_weight
        assert np.all(np.isfinite(loss))
        # The logits (or hidden states): finite, and exactly zero in that row.
        assert np.all(np.isfinite(grads[0])) and np.all(np.asarray(grads[0])[2] == 0)
    # Only the weight's own derivative reads the row: its loss term, here not finite.
    inputs, w = tuple(map(_jnp32, case.inputs)), _jnp32(case.w)
    dv = np.asarray(jax.grad(lambda v: case.call(inputs, v, w, reduction="sum"))(v))
    assert np.all(np.isfinite(np.delete(dv, 2, axis=0))) and not np.all(np.isfinite(dv[2]))
    assert all(np.all(np.isfinite(g)) for g in grads), "a gradient is not finite"


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


# The normaliser: denominator, empty and all-zero batches.


@pytest.mark.parametrize(
    "name", [n for n in NAMES if CASES[n](np.random.default_rng(0), 2, 3).denominator]
)
def test_denominator_replaces_weighted_normaliser(x64, name):
    rng = np.random.default_rng(6)
    case = CASES[name](rng, 5, 4)
    v = _weights(rng, case.example_shape)
    inputs = tuple(map(jnp.asarray, case.inputs))
    total = case.oracle(case.inputs, v, case.w, reduction="sum")

    def mean(v, d):
        return case.call(inputs, v, _jnp(case.w), denominator=d)

    loss, (dv, dd) = jax.value_and_grad(mean, argnums=(0, 1))(jnp.asarray(v), 7.0)
    np.testing.assert_allclose(loss, total / 7.0, rtol=1e-12)
    np.testing.assert_allclose(dd, -total / 49.0, rtol=1e-12)
    # With a fixed denominator the weights enter only the numerator: d/dv_i = l_i / d.
    unweighted = case.oracle(case.inputs, None, case.w, reduction="none")
    np.testing.assert_allclose(dv, unweighted / 7.0, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("n", [0, 4])  # an empty batch, and a batch whose weights are all 0
@pytest.mark.parametrize("name", NAMES)
def test_no_weight_is_zero_with_zero_gradient(name, n, reduction):
    case = CASES[name](np.random.default_rng(7), n, 3)
    inputs = tuple(jnp.asarray(x, jnp.float32) for x in case.inputs)
    v = jnp.zeros(case.example_shape, jnp.float32)

    def f(xs, v):
        return case.call(xs, v, _jnp32(case.w), reduction=reduction)

    value = f(inputs, v)
    assert value.shape == (case.example_shape if reduction == "none" else ())
    assert value.dtype == jnp.float32 and np.all(np.asarray(value) == 0)
    grads, dv = jax.grad(lambda xs, v: jnp.sum(f(xs, v)), argnums=(0, 1))(inputs, v)
    # The derivative of a sum with respect to a weight of 0 is the example's loss term; a
    # mean of nothing (S = 0) is 0 with zero gradient.
    terms = case.oracle(case.inputs, None, case.w, reduction="none")
    expected = np.zeros(v.shape) if reduction == "mean" else terms
    assert dv.shape == v.shape
    np.testing.assert_allclose(dv, expected, rtol=1e-5, atol=1e-6)
    for g, x in zip(grads, inputs, strict=True):
        assert g.shape == x.shape and np.all(np.asarray(g) == 0)


# Broadcasting, the option classes, transformations.


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


@pytest.mark.parametrize(
    "criterion,fn,labels",
    [
        (
            jaxce.CrossEntropyLoss(weights=[1.0, 2.0, 3.0], label_smoothing=0.1),
            lambda x, y, **kw: jaxce.softmax_cross_entropy(
                x, y, weights=jnp.array([1.0, 2.0, 3.0]), label_smoothing=0.1, **kw
            ),
            np.array([0, 2, 1, 1]),
        ),
        (
            jaxce.FocalLoss(gamma=1.0),
            lambda x, y, **kw: jaxce.softmax_focal_loss(x, y, gamma=1.0, **kw),
            np.array([0, 2, 1, 1]),
        ),
        (
            jaxce.BCEWithLogitsLoss(pos_weight=[1.0, 2.0, 3.0]),
            lambda x, y, **kw: jaxce.sigmoid_binary_cross_entropy(
                x, y, pos_weight=jnp.array([1.0, 2.0, 3.0]), **kw
            ),
            np.eye(3, dtype=np.float32)[[0, 2, 1, 1]],
        ),
    ],
)
def test_option_classes_take_example_weights_per_call(criterion, fn, labels):
    # Like `where`, the weights are an argument of the call, not a stored option.
    logits = np.random.default_rng(10).normal(size=(4, 3)).astype(np.float32)
    v = np.array([1.0, 0.0, 2.0, 0.5], np.float32)
    v = v if labels.ndim == 1 else v[:, None]
    np.testing.assert_allclose(
        criterion(logits, labels, example_weights=v), fn(logits, labels, example_weights=v)
    )
    dv = jax.grad(lambda v: criterion(logits, labels, example_weights=v))(v)
    assert dv.shape == v.shape
    assert "example_weights" not in {f.name for f in dataclasses.fields(criterion)}


def test_traced_weights_compile_once():
    rng = np.random.default_rng(11)
    logits = rng.normal(size=(6, 4)).astype(np.float32)
    labels = rng.integers(0, 4, 6).astype(np.int32)
    calls = [(logits, labels) for _ in range(3)]
    size = assert_cached(jaxce.softmax_cross_entropy, calls, example_weights=np.ones(6, np.float32))
    for seed in range(3):
        v = np.random.default_rng(seed).random(6).astype(np.float32)
        jaxce.softmax_cross_entropy(logits, labels, example_weights=v)
    assert jaxce.softmax_cross_entropy._cache_size() == size


def test_vmap_of_grad_and_second_order(x64):
    rng = np.random.default_rng(12)
    logits = rng.normal(size=(3, 4, 5))
    labels = rng.integers(0, 5, (3, 4))
    v = rng.uniform(0.5, 2, (3, 4))

    def loss(x, v, y):
        return jaxce.softmax_cross_entropy(x, y, example_weights=v, label_smoothing=0.1)

    grads = jax.vmap(jax.grad(loss, argnums=(0, 1)))(logits, v, labels)
    for i in range(3):
        for got, want in zip(
            grads, jax.grad(loss, argnums=(0, 1))(logits[i], v[i], labels[i]), strict=True
        ):
            np.testing.assert_allclose(got[i], want, rtol=1e-12)
    check_grads(lambda x, v: loss(x, v, labels[0]), (logits[0], v[0]), order=2, modes=["rev"])
    check_grads(
        lambda x, v: jaxce.sigmoid_focal_loss(x, (labels[0] > 2) * 1.0, example_weights=v),
        (logits[0, :, 0], v[0]),
        order=2,
        modes=["rev"],
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

    check_grads(loss, (0.7,), order=2, modes=["rev"])


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
        for name in NAMES:
            case = CASES[name](np.random.default_rng(0), 3, 4)
            inputs = tuple(jnp.asarray(x, jnp.float32) for x in case.inputs)
            value = case.call(inputs, jnp.ones(case.example_shape, jnp.float64), _jnp32(case.w))
            assert value.dtype == jnp.float64, name


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
    (TypeError, "example_weights must be a floating array", np.ones(5, np.int32)),
    (TypeError, "example_weights must be a floating array", np.ones(5, bool)),
    (ValueError, r"example_weights must be broadcastable to the examples' shape", np.ones(7)),
]


@pytest.mark.parametrize("error,message,v", BAD_WEIGHTS)
@pytest.mark.parametrize("name", NAMES)
def test_bad_weights_raise_naming_the_argument(name, error, message, v):
    case = CASES[name](np.random.default_rng(16), 5, 4)
    with pytest.raises(error, match=message):
        case.call(tuple(map(_jnp32, case.inputs)), v, _jnp32(case.w))


def test_bad_weights_raise_under_jit():
    f = jax.jit(lambda x, v: jaxce.softmax_cross_entropy(x, np.zeros(2, int), example_weights=v))
    with pytest.raises(ValueError, match=r"shape \(2,\); got \(3,\)"):
        f(np.ones((2, 3), np.float32), np.ones(3, np.float32))


# Property tests: shapes, masks and weights (zeros included) against the oracle.


@settings(max_examples=25, deadline=None)
@given(
    data=st.data(),
    name=st.sampled_from(NAMES),
    n=st.integers(1, 6),
    k=st.integers(2, 5),
    reduction=st.sampled_from(["mean", "sum", "none"]),
)
def test_property_matches_oracle(data, name, n, k, reduction):
    with jax.enable_x64(True):
        case = CASES[name](np.random.default_rng(n * 10 + k), n, k)
        shape = case.example_shape
        where = data.draw(hnp.arrays(np.bool_, shape))
        # A shape that broadcasts to the examples' shape: leading axes dropped, others 1 or kept.
        lead = data.draw(st.integers(0, len(shape)))
        v_shape = tuple(data.draw(st.sampled_from([1, d])) for d in shape[lead:])
        weight = st.sampled_from([0.0, 0.25, 1.0, 2.5]) | st.floats(1e-3, 4.0)
        v = data.draw(hnp.arrays(np.float64, v_shape, elements=weight))
        kw = dict(where=where, reduction=reduction)
        inputs = tuple(map(jnp.asarray, case.inputs))
        got, (d_inputs, dv) = jax.value_and_grad(
            lambda xs, v: jnp.sum(case.call(xs, v, _jnp(case.w), **kw)), argnums=(0, 1)
        )(inputs, jnp.asarray(v))
        expected = np.sum(case.oracle(case.inputs, v, case.w, **kw))
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
        assert dv.shape == v.shape and np.all(np.isfinite(dv))
        counted = np.broadcast_to(where, shape) & (np.broadcast_to(v, shape) != 0)
        # An example that does not count gets exactly zero gradient.
        assert np.all(np.asarray(d_inputs[0])[~counted] == 0)
