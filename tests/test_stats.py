"""`return_stats=True`: per-example logsumexp (differentiable), argmax class and correctness."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxce
from tests import reference as ref
from tests.helpers import SHIPPED, class_data, probabilities


def _oracle_stats(logits, labels, mask, cap=None, axis=-1):
    """float64 NumPy: logsumexp, first argmax and correctness; 0, -1, False where masked."""
    x = np.moveaxis(np.asarray(logits, np.float64), axis, -1)
    if cap is not None:
        x = cap * np.tanh(x / cap)
    top = x.max(axis=-1, keepdims=True)
    lse = (top + np.log(np.exp(x - top).sum(axis=-1, keepdims=True)))[..., 0]
    predicted = np.argmax(x, axis=-1)  # the first of equal maxima
    return (
        np.where(mask, lse, 0.0),
        np.where(mask, predicted, -1),
        mask & (predicted == labels),
    )


def _check(stats, want):
    np.testing.assert_allclose(stats.logsumexp, want[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(stats.predicted, want[1])
    np.testing.assert_array_equal(stats.correct, want[2])
    assert stats.predicted.dtype == jnp.int32 and stats.correct.dtype == jnp.bool_


@settings(max_examples=8, deadline=None)
@given(
    shape=st.sampled_from([(1,), (7,), (3, 5), (2, 3, 4)]),  # few shapes: few compilations
    cap=st.sampled_from([None, 2.0]),
    seed=st.integers(0, 1000),
)
def test_softmax_stats_match_oracle(shape, cap, seed):
    k = shape[-1]
    logits, labels = class_data(shape, k, seed=seed)
    rng = np.random.default_rng(seed)
    where = rng.random(shape[:-1]) < 0.7
    labels = np.where(rng.random(shape[:-1]) < 0.2, -100, labels)
    mask = where & (labels != -100)
    options = dict(where=where, ignore_index=-100, logit_softcap=cap)

    # Compiled as a user's program is: the last bit can depend on how the code is optimised.
    @functools.partial(jax.jit, compiler_options=SHIPPED)
    def both(logits, labels):
        with_stats = jaxce.softmax_cross_entropy(logits, labels, **options, return_stats=True)
        return with_stats, jaxce.softmax_cross_entropy(logits, labels, **options)

    (loss, stats), without = both(logits, labels)
    np.testing.assert_array_equal(loss, without)
    _check(stats, _oracle_stats(logits, labels, mask, cap))


def test_ties_go_to_the_lowest_index():
    logits = np.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0]], np.float32)
    _, stats = jaxce.softmax_cross_entropy(logits, np.array([2, 0]), return_stats=True)
    np.testing.assert_array_equal(stats.predicted, [1, 0])
    np.testing.assert_array_equal(stats.correct, [False, True])


def test_probability_labels_compare_with_the_most_probable_class():
    logits, _ = class_data((6, 5), 5, seed=3)
    probs = probabilities((6, 5), seed=4)
    _, stats = jaxce.softmax_cross_entropy(logits, probs, return_stats=True)
    want = _oracle_stats(logits, np.argmax(probs, -1), np.ones(6, bool))
    _check(stats, want)


def test_class_axis_and_empty_batch():
    logits, labels = class_data((2, 5, 3), 5, axis=1, seed=5)
    _, stats = jaxce.softmax_cross_entropy(logits, labels, axis=1, return_stats=True)
    _check(stats, _oracle_stats(logits, labels, np.ones((2, 3), bool), axis=1))
    loss, stats = jaxce.softmax_cross_entropy(
        np.zeros((0, 4), np.float32), np.zeros((0,), np.int32), return_stats=True
    )
    assert loss == 0 and stats.logsumexp.shape == stats.predicted.shape == (0,)


@pytest.mark.parametrize("labels_kind", ["classes", "probs"])
def test_logsumexp_gradient_is_the_softmax(labels_kind, x64):
    # d/dx [loss + sum_i r_i lse_i] = d loss/dx + r_i P_i on counted examples, 0 elsewhere.
    logits, labels = class_data((5, 6), 6, seed=7)
    logits = np.asarray(logits, np.float64)
    where = np.array([True, False, True, True, True])
    if labels_kind == "probs":
        labels = probabilities((5, 6), seed=8).astype(np.float64)
    r = np.linspace(-1.0, 2.0, 5)

    def total(x):
        loss, stats = jaxce.softmax_cross_entropy(
            x, labels, where=where, z_loss=1e-2, return_stats=True
        )
        return loss + jnp.sum(r * stats.logsumexp)

    got = jax.grad(total)(logits)
    want = jax.grad(lambda x: jaxce.softmax_cross_entropy(x, labels, where=where, z_loss=1e-2))(
        logits
    )
    want = want + (where * r)[:, None] * ref.softmax(logits)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


# The fused head: the same statistics from its chunk loop.


def _head(n=9, d=4, v=37, seed=0):
    k = jax.random.split(jax.random.key(seed), 3)
    hidden = jax.random.normal(k[0], (n, d))
    kernel = jax.random.normal(k[1], (d, v))
    labels = jax.random.randint(k[2], (n,), 0, v)
    return hidden, kernel, labels


@settings(max_examples=5, deadline=None)
@given(
    n=st.sampled_from([1, 8]),  # few shapes: few compilations
    v=st.sampled_from([1, 7, 20]),
    chunk=st.sampled_from([1, 3, 8]),
    layout=st.sampled_from(["DV", "VD"]),
    cap=st.sampled_from([None, 1.5]),
    seed=st.integers(0, 1000),
)
def test_fused_stats_match_the_materialised(n, v, chunk, layout, cap, seed):
    hidden, kernel, labels = _head(n, 3, v, seed)
    where = np.random.default_rng(seed).random(n) < 0.7
    stored = kernel if layout == "DV" else kernel.T
    opts = dict(where=where, logit_softcap=cap, return_stats=True)

    def fused(h, k):
        loss, stats = jaxce.linear_softmax_cross_entropy(
            h, k, labels, chunk_size=chunk, kernel_layout=layout, **opts
        )
        return loss + 0.1 * jnp.sum(stats.logsumexp**2), stats

    def materialised(h, k):
        logits = h @ (k if layout == "DV" else k.T)
        loss, stats = jaxce.softmax_cross_entropy(logits, labels, **opts)
        return loss + 0.1 * jnp.sum(stats.logsumexp**2), stats

    (value, stats), grads = jax.value_and_grad(fused, argnums=(0, 1), has_aux=True)(hidden, stored)
    (want_value, want), want_grads = jax.value_and_grad(materialised, argnums=(0, 1), has_aux=True)(
        hidden, stored
    )
    np.testing.assert_allclose(value, want_value, rtol=1e-5)
    np.testing.assert_allclose(stats.logsumexp, want.logsumexp, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(stats.predicted, want.predicted)
    np.testing.assert_array_equal(stats.correct, want.correct)
    for g, w in zip(grads, want_grads, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_fused_ties_across_chunks_go_to_the_lowest_index():
    hidden, kernel, labels = _head(5, 4, 30, seed=2)
    # Column 21 repeats column 4, and both beat every other column for every row.
    kernel = kernel.at[:, 4].set(10 * hidden[0]).at[:, 21].set(10 * hidden[0])
    hidden = jnp.broadcast_to(hidden[0], hidden.shape)
    _, stats = jaxce.linear_softmax_cross_entropy(
        hidden, kernel, labels, chunk_size=8, return_stats=True
    )
    np.testing.assert_array_equal(stats.predicted, np.full(5, 4))


def test_fused_stats_need_no_more_matmuls():
    # The statistics come from the chunk loop that computes the loss: same dots.
    hidden, kernel, labels = _head(16, 8, 300)

    def dots(return_stats):
        def f(h, k):
            out = jaxce.linear_softmax_cross_entropy(
                h, k, labels, chunk_size=64, return_stats=return_stats
            )
            return out[0] + jnp.sum(out[1].logsumexp) if return_stats else out

        text = jax.jit(jax.grad(f, argnums=(0, 1))).lower(hidden, kernel).compile().as_text()
        return text.count(" dot(") + text.count(" convolution(")

    assert dots(True) == dots(False) > 0
