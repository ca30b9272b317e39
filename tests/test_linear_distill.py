"""linear_distillation_loss: equal to the materialised head and the unfused divergences."""

import contextlib
import functools
import io
import itertools
import pathlib
import re
from typing import NamedTuple

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxce

from . import reference
from .helpers import (
    assert_derivatives_match_differences,
    assert_matches_oracle,
    central_difference,
    cpu_memory_budget,
)

N, D, V, DT = 9, 5, 23, 4  # V is not a multiple of the chunk sizes below


class _Data(NamedTuple):
    hidden: jax.Array
    kernel: jax.Array
    bias: jax.Array
    teacher_hidden: jax.Array
    teacher_kernel: jax.Array
    teacher_bias: jax.Array
    labels: jax.Array

    @property
    def teacher_logits(self) -> jax.Array:
        wide = jnp.float64 if self.hidden.dtype == jnp.float64 else jnp.float32
        z = jnp.dot(self.teacher_hidden, self.teacher_kernel, preferred_element_type=wide)
        return (z + self.teacher_bias.astype(wide)[None]).astype(self.hidden.dtype)

    def teacher(self, kind: str) -> tuple[jax.Array, dict]:
        """The teacher as `"logits"` or as `"hidden"` states, with the keywords that go with it."""
        if kind == "logits":
            return self.teacher_logits, {}
        extra = {"teacher_kernel": self.teacher_kernel, "teacher_bias": self.teacher_bias}
        return self.teacher_hidden, extra


def _data(n=N, d=D, v=V, dt=DT, seed=0, dtype=jnp.float32):
    k = jax.random.split(jax.random.key(seed), 7)
    return _Data(
        jax.random.normal(k[0], (n, d)).astype(dtype),
        (2 * jax.random.normal(k[1], (d, v)) / np.sqrt(d)).astype(dtype),
        (0.3 * jax.random.normal(k[2], (v,))).astype(dtype),
        jax.random.normal(k[3], (n, dt)).astype(dtype),
        (2 * jax.random.normal(k[4], (dt, v)) / np.sqrt(dt)).astype(dtype),
        (0.3 * jax.random.normal(k[5], (v,))).astype(dtype),
        jax.random.randint(k[6], (n,), 0, v),
    )


def _unfused(
    hidden,
    kernel,
    bias,
    teacher_logits,
    *,
    divergence="kl",
    beta=0.5,
    temperature=1.0,
    labels=None,
    alpha=0.0,
    ignore_index=None,
    where=None,
    kernel_layout="DV",
    reduction="mean",
):
    """The materialised path: the unfused losses on `hidden @ kernel + bias`."""
    k = kernel if kernel_layout == "DV" else kernel.T
    s = jnp.dot(hidden, k, preferred_element_type=jnp.float32)
    if bias is not None:
        s = s + bias.astype(jnp.float32)[None]
    t = jax.lax.stop_gradient(teacher_logits)
    mask = jnp.ones(s.shape[:1], bool) if where is None else where
    if ignore_index is not None:
        mask = mask & (labels != ignore_index)
    kw = dict(temperature=temperature, where=mask, reduction=reduction)
    if divergence == "kl":
        loss = jaxce.distillation_loss(s, t, **kw)
    elif divergence == "reverse_kl":
        loss = jaxce.reverse_kl_divergence(s, t, **kw)
    else:
        loss = jaxce.jensen_shannon_divergence(s, t, beta=beta, **kw)
    if alpha == 0:
        return loss
    ce = jaxce.softmax_cross_entropy(
        s, labels, ignore_index=ignore_index, where=where, reduction=reduction
    )
    return (1 - alpha) * loss + alpha * ce


def _assert_tree_close(got, want, rtol, atol, err_msg=""):
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(
            np.asarray(g, np.float64), w, rtol=rtol, atol=atol, err_msg=err_msg
        )


CASES = [
    ("kl", {}),
    ("kl", {"temperature": 2.0, "alpha": 0.3}),
    ("reverse_kl", {"temperature": 0.5}),
    ("reverse_kl", {"alpha": 0.6, "ignore_index": 5}),
    ("jsd", {"beta": 0.3, "temperature": 2.0}),
    ("jsd", {"beta": 0.0, "alpha": 0.2, "ignore_index": 5}),
    ("jsd", {"beta": 1.0, "temperature": 3.0, "reduction": "sum"}),
    ("jsd", {"beta": 0.7, "alpha": 0.5, "temperature": 1.5, "reduction": "none"}),
]


def test_matches_unfused():
    data = _data()
    labels = data.labels.at[2].set(5)

    _, extra = data.teacher("hidden")

    @jax.jit  # every case in one program
    def program(h, k, b, teacher_logits, teacher_hidden):
        out = {}
        for kind, t, kw in (("logits", teacher_logits, {}), ("hidden", teacher_hidden, extra)):
            for divergence, options in CASES:
                opts = dict(divergence=divergence, labels=labels, **options)

                def fused(h, k, b, t=t, kw=kw, opts=opts):
                    losses = jaxce.linear_distillation_loss(
                        h, k, t, bias=b, chunk_size=4, **kw, **opts
                    )
                    return jnp.sum(losses)

                def unfused(h, k, b, opts=opts):
                    return jnp.sum(_unfused(h, k, b, teacher_logits, **opts))

                out[f"{kind} {divergence} {options}"] = [
                    jax.value_and_grad(f, argnums=(0, 1, 2))(h, k, b) for f in (fused, unfused)
                ]
        return out

    teachers = (data.teacher_logits, data.teacher_hidden)
    # float32 gradients of order 1: atol is a few ulps of their scale.
    for case, (got, want) in program(*data[:3], *teachers).items():
        _assert_tree_close(got, want, rtol=1e-5, atol=1e-6, err_msg=case)


ORACLE_CASES = [
    ("kl", {"temperature": 1.5, "alpha": 0.25}),
    ("reverse_kl", {"temperature": 0.8, "alpha": 0.4}),
    ("jsd", {"beta": 0.3, "temperature": 2.0, "alpha": 0.1}),
]


def test_value_and_gradients_match_float64_oracle(x64):
    data = _data(n=5, d=3, v=9, dt=2, dtype=jnp.float64)
    labels = data.labels.at[1].set(4)
    where = jnp.array([True, True, False, True, True])
    cases = list(itertools.product(ORACLE_CASES, ("logits", "hidden"), ("DV", "VD")))

    def setup(divergence, options, teacher, layout):
        t, extra = data.teacher(teacher)
        if layout == "VD" and extra:
            extra["teacher_kernel"] = extra["teacher_kernel"].T
        opts = dict(divergence=divergence, labels=labels, ignore_index=4, where=where, **options)
        return t, dict(kernel_layout=layout, **extra, **opts)

    @jax.jit  # every case in one program
    def fused(h, kernel):
        out = []
        for (divergence, options), teacher, layout in cases:
            t, kw = setup(divergence, options, teacher, layout)
            k = kernel if layout == "DV" else kernel.T

            def loss(h, k, b, t=t, kw=kw):
                return jaxce.linear_distillation_loss(h, k, t, bias=b, chunk_size=4, **kw)

            out.append(jax.value_and_grad(loss, argnums=(0, 1, 2))(h, k, data.bias))
        return out

    for case, (value, grads) in zip(cases, fused(data.hidden, data.kernel), strict=True):
        t, kw = setup(*case[0], *case[1:])
        stored = data.kernel if case[2] == "DV" else data.kernel.T
        args = (data.hidden, stored, data.bias)
        assert_matches_oracle(_oracle(t, **kw), args, value, grads, err_msg=str(case))


def _oracle(teacher, **options):
    """The float64 oracle as a function of the hidden states, the kernel and the bias."""
    teacher = np.asarray(teacher)
    options = {k: np.asarray(v) if isinstance(v, jax.Array) else v for k, v in options.items()}

    def oracle(h, k, b):
        return reference.linear_distillation_loss(h, k, teacher, bias=b, **options)

    return oracle


@pytest.mark.parametrize("divergence", ["kl", "reverse_kl", "jsd"])
def test_traced_hyperparameter_gradients_match_float64_oracle(divergence, x64):
    data = _data(n=4, d=3, v=7, dtype=jnp.float64)
    t = data.teacher_logits
    names = ("beta", "temperature", "alpha")

    def oracle(values):
        options = dict(zip(names, values, strict=True))
        return reference.linear_distillation_loss(
            data.hidden, data.kernel, t, divergence=divergence, labels=data.labels, **options
        )

    def fused(values):
        options = dict(zip(names, values, strict=True))
        return jaxce.linear_distillation_loss(
            data.hidden,
            data.kernel,
            t,
            divergence=divergence,
            labels=data.labels,
            chunk_size=3,
            **options,
        )

    values = np.array([0.3, 1.7, 0.4])
    got = jax.grad(fused)(jnp.asarray(values))
    want = central_difference(oracle, values)
    if divergence != "jsd":
        assert got[0] == 0 and abs(want[0]) < 1e-9  # beta does not enter a KL
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)


def test_denominator_replaces_the_count(x64):
    data = _data(n=6, d=3, v=9, dt=2, dtype=jnp.float64)
    t = np.asarray(data.teacher_logits)
    opts = dict(divergence="jsd", beta=0.3, temperature=2.0, labels=data.labels, alpha=0.1)

    @jax.jit
    def fused(h, k, b, where, d):
        def loss(h, k, b, d):
            return jaxce.linear_distillation_loss(
                h, k, t, bias=b, where=where, denominator=d, chunk_size=4, **opts
            )

        return jax.value_and_grad(loss, argnums=(0, 1, 2, 3))(h, k, b, d)

    def oracle_sum(h, k, b, where=None):
        return reference.linear_distillation_loss(
            h, k, t, bias=b, where=where, reduction="sum", **opts
        )

    args = [np.asarray(a) for a in (data.hidden, data.kernel, data.bias)]
    everyone = np.ones(6, bool)
    value, grads = fused(*args, everyone, 17.0)
    total = oracle_sum(*args)
    np.testing.assert_allclose(value, total / 17.0, rtol=1e-10)
    np.testing.assert_allclose(grads[3], -total / 17.0**2, rtol=1e-10)
    for i, got in enumerate(grads[:3]):
        want = central_difference(lambda a, i=i: oracle_sum(*args[:i], a, *args[i + 1 :]), args[i])
        np.testing.assert_allclose(got, want / 17.0, rtol=1e-6, atol=1e-9)
    # Micro-batches with the whole batch's count add up to the whole batch's mean.
    first = np.arange(6) < 2
    parts = fused(*args, first, 6.0)[0] + fused(*args, ~first, 6.0)[0]
    mean = reference.linear_distillation_loss(*args[:2], t, bias=args[2], **opts)
    np.testing.assert_allclose(parts, mean, rtol=1e-10)
    value, grads = fused(*args, everyone, 0.0)
    assert value == 0 and all(np.all(np.asarray(g) == 0) for g in grads)
    assert fused._cache_size() == 1


def test_jsd_endpoints_are_the_kls():
    data = _data()
    t = data.teacher_logits
    loss = functools.partial(
        jaxce.linear_distillation_loss, data.hidden, data.kernel, t, bias=data.bias, chunk_size=4
    )
    jsd = jax.jit(lambda beta: loss(divergence="jsd", beta=beta, temperature=2.0))
    for beta, divergence in [(0.0, "kl"), (1.0, "reverse_kl")]:
        np.testing.assert_allclose(
            jsd(jnp.float32(beta)), loss(divergence=divergence, temperature=2.0), rtol=1e-7
        )
        assert jax.grad(jsd)(jnp.float32(beta)) == 0
    assert jsd._cache_size() == 1


def test_ragged_chunks_match_unfused():
    data = _data()
    t = data.teacher_logits

    @jax.jit  # every case in one program
    def program(h, k, b):
        out = {}
        for divergence in ("kl", "jsd"):
            opts = dict(divergence=divergence, temperature=2.0, alpha=0.3, labels=data.labels)
            unfused = functools.partial(_unfused, teacher_logits=t, **opts)
            want = jax.value_and_grad(unfused, argnums=(0, 1, 2))(h, k, b)
            for chunk_size in (1, 3, 7, 22, 23, 40):

                def fused(h, k, b, opts=opts, chunk_size=chunk_size):
                    return jaxce.linear_distillation_loss(
                        h, k, t, bias=b, chunk_size=chunk_size, **opts
                    )

                got = jax.value_and_grad(fused, argnums=(0, 1, 2))(h, k, b)
                out[f"{divergence} chunk_size={chunk_size}"] = (got, want)
        return out

    for case, (got, want) in program(*data[:3]).items():
        _assert_tree_close(got, want, rtol=1e-5, atol=1e-7, err_msg=case)


def test_teacher_as_logits_or_hidden_states_agree():
    data = _data()
    opts = dict(bias=data.bias, divergence="jsd", beta=0.4, temperature=2.0, chunk_size=5)

    def loss(kind):
        t, extra = data.teacher(kind)
        return jax.value_and_grad(
            lambda h, k: jaxce.linear_distillation_loss(h, k, t, **extra, **opts), argnums=(0, 1)
        )(data.hidden, data.kernel)

    _assert_tree_close(loss("hidden"), loss("logits"), rtol=1e-5, atol=1e-7)


def test_teacher_gets_zero_gradient():
    data = _data()

    def from_logits(t):
        return jaxce.linear_distillation_loss(data.hidden, data.kernel, t, temperature=2.0)

    def from_hidden(th, tk, tb):
        return jaxce.linear_distillation_loss(
            data.hidden, data.kernel, th, teacher_kernel=tk, teacher_bias=tb, divergence="jsd"
        )

    grads = [jax.grad(from_logits)(data.teacher_logits)]
    teacher = (data.teacher_hidden, data.teacher_kernel, data.teacher_bias)
    grads += jax.grad(from_hidden, argnums=(0, 1, 2))(*teacher)
    assert all(np.all(np.asarray(g) == 0) for g in grads)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_empty_batch_is_zero_with_zero_gradient(reduction):
    kernel = jnp.ones((D, V))
    teacher, labels = jnp.zeros((0, V)), jnp.zeros((0,), jnp.int32)

    def loss(h, k):
        return jnp.sum(
            jaxce.linear_distillation_loss(
                h, k, teacher, labels=labels, alpha=0.5, divergence="jsd", reduction=reduction
            )
        )

    value, grads = jax.value_and_grad(loss, argnums=(0, 1))(jnp.zeros((0, D)), kernel)
    assert value == 0 and grads[0].shape == (0, D) and np.all(grads[1] == 0)


@pytest.mark.parametrize("divergence", ["kl", "reverse_kl", "jsd"])
def test_all_masked_is_zero_with_zero_gradient(divergence):
    data = _data()
    t = data.teacher_logits

    def loss(h, k, b):
        return jaxce.linear_distillation_loss(
            h,
            k,
            t,
            bias=b,
            divergence=divergence,
            labels=jnp.full((N,), -100),
            ignore_index=-100,
            alpha=0.5,
            temperature=2.0,
        )

    value, grads = jax.value_and_grad(loss, argnums=(0, 1, 2))(data.hidden, data.kernel, data.bias)
    assert value == 0
    assert all(np.all(g == 0) for g in grads)


def test_where_equals_slicing_with_leading_dimensions():
    data = _data(n=12)
    hidden3, labels3 = data.hidden.reshape(3, 4, D), data.labels.reshape(3, 4)
    t3 = data.teacher_logits.reshape(3, 4, V)
    where = jnp.arange(4) % 3 != 1  # broadcasts over the leading axis
    opts = dict(divergence="jsd", beta=0.3, alpha=0.4, chunk_size=6)
    got = jaxce.linear_distillation_loss(
        hidden3, data.kernel, t3, labels=labels3, where=where, reduction="none", **opts
    )
    assert got.shape == (3, 4)
    keep = np.broadcast_to(np.asarray(where), (3, 4)).ravel()
    sliced = jaxce.linear_distillation_loss(
        data.hidden[keep],
        data.kernel,
        data.teacher_logits[keep],
        labels=data.labels[keep],
        reduction="none",
        **opts,
    )
    np.testing.assert_allclose(got.ravel()[keep], sliced, rtol=1e-6)
    assert np.all(got.ravel()[~keep] == 0)

    def loss(h):
        return jaxce.linear_distillation_loss(
            h, data.kernel, t3, labels=labels3, where=where, **opts
        )

    grad = jax.grad(loss)(hidden3).reshape(12, D)
    assert np.all(np.asarray(grad)[~keep] == 0)


@pytest.mark.parametrize("divergence", ["kl", "reverse_kl", "jsd"])
def test_class_masked_by_inf_is_finite_with_zero_gradient(divergence):
    data = _data()
    bias = data.bias.at[3].set(-jnp.inf)
    t = data.teacher_logits.at[:, 3].set(-jnp.inf)
    if divergence == "jsd":
        bias = bias.at[7].set(-jnp.inf)  # a class only the student masks: finite for the JSD
    labels = jnp.where((data.labels == 3) | (data.labels == 7), 0, data.labels)
    opts = dict(divergence=divergence, temperature=2.0, alpha=0.3, labels=labels)

    def fused(h, k):
        return jaxce.linear_distillation_loss(h, k, t, bias=bias, chunk_size=4, **opts)

    got = jax.value_and_grad(fused, argnums=(0, 1))(data.hidden, data.kernel)
    want = jax.value_and_grad(lambda h, k: _unfused(h, k, bias, t, **opts), argnums=(0, 1))(
        data.hidden, data.kernel
    )
    assert np.isfinite(got[0])
    _assert_tree_close(got, want, rtol=1e-5, atol=1e-7)
    assert np.all(got[1][1][:, 3] == 0)


@pytest.mark.parametrize("divergence", ["kl", "reverse_kl", "jsd"])
def test_large_offsets_lose_no_precision(divergence):
    # Logits near 1e4 that float32 holds exactly (multiples of 1/8), so that the float64
    # oracle sees the same logits. A difference of the two logsumexps, each rounded to
    # float32's 1e-3 there, would lose ~6e-4 (measured below); the running max kept apart
    # from the log-sum loses ~5e-7, as the unfused losses do.
    rng = np.random.default_rng(0)
    hidden = rng.integers(-1, 2, (N, D)).astype(np.float32)
    kernel = (rng.integers(-16, 17, (D, V)) / 8).astype(np.float32)
    bias = (1e4 + rng.integers(-8, 9, V) / 8).astype(np.float32)
    teacher = (1e4 + rng.integers(-24, 25, (N, V)) / 8).astype(np.float32)
    opts = dict(bias=bias, divergence=divergence, reduction="none")
    got = jaxce.linear_distillation_loss(hidden, kernel, teacher, chunk_size=4, **opts)
    want = reference.linear_distillation_loss(hidden, kernel, teacher, **opts)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
    if divergence == "kl":
        s = jnp.dot(hidden, kernel) + bias[None]
        p = jax.nn.softmax(teacher)
        lse_difference = (
            jnp.sum(p * (teacher - s), -1) - jax.nn.logsumexp(teacher, -1) + jax.nn.logsumexp(s, -1)
        )
        assert np.abs(lse_difference - want).max() > 1e-4


@pytest.mark.parametrize("teacher", ["logits", "hidden"])
def test_bfloat16_inputs(teacher):
    """bfloat16 hidden, kernels, biases and teacher, against float64 on the same (rounded)
    inputs. The loss is float32: measured within 9e-8 relative of float64 (asserted 1e-6).
    Gradients come back in bfloat16: measured within 3.7e-3 of the largest entry (bfloat16
    rounds to 2^-8 = 3.9e-3 relative; asserted 1e-2) of float64 central differences.
    """
    data = _data(n=6, d=4, v=11, dt=3, dtype=jnp.bfloat16)
    opts = dict(divergence="jsd", beta=0.3, temperature=2.0, alpha=0.2, labels=data.labels)
    t, extra = data.teacher(teacher)

    def fused(h, k, b):
        return jaxce.linear_distillation_loss(h, k, t, bias=b, chunk_size=4, **extra, **opts)

    args = (data.hidden, data.kernel, data.bias)
    value, grads = jax.value_and_grad(fused, argnums=(0, 1, 2))(*args)
    assert value.dtype == jnp.float32
    assert [g.dtype for g in grads] == [jnp.bfloat16] * 3
    wide = [np.asarray(a, np.float64) for a in args]
    wide_teacher = np.asarray(t, np.float64)
    wide_extra = {k: np.asarray(v, np.float64) for k, v in extra.items()}

    def oracle(h, k, b):
        return reference.linear_distillation_loss(h, k, wide_teacher, bias=b, **wide_extra, **opts)

    np.testing.assert_allclose(value, oracle(*wide), rtol=1e-6)
    for i, got in enumerate(grads):
        want = central_difference(lambda a, i=i: oracle(*wide[:i], a, *wide[i + 1 :]), wide[i])
        got = np.asarray(got, np.float64)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-2 * np.abs(want).max())


@pytest.mark.parametrize(
    ("divergence", "teacher"),
    [("kl", "hidden"), ("jsd", "logits")],  # JSD holds both KLs
)
def test_check_grads_second_order(divergence, teacher, x64):
    data = _data(n=3, d=2, v=5, dtype=jnp.float64)
    t, extra = data.teacher(teacher)

    def f(h, k, b):
        return jaxce.linear_distillation_loss(
            h,
            k,
            t,
            bias=b,
            divergence=divergence,
            beta=0.3,
            temperature=2.0,
            alpha=0.2,
            labels=data.labels,
            chunk_size=2,
            **extra,
        )

    assert_derivatives_match_differences(f, (data.hidden, data.kernel, data.bias), order=2)


def test_vmap_of_grad():
    data = _data(n=12)
    hb, tb = data.hidden.reshape(3, 4, D), data.teacher_logits.reshape(3, 4, V)

    def loss(h, t):
        return jaxce.linear_distillation_loss(h, data.kernel, t, temperature=2.0, chunk_size=8)

    got = jax.vmap(jax.grad(loss))(hb, tb)
    want = jnp.stack([jax.grad(loss)(hb[i], tb[i]) for i in range(3)])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


@hypothesis.settings(max_examples=6, deadline=None)
@hypothesis.given(
    n=st.sampled_from([1, 5]),  # few shapes: few compilations
    v=st.sampled_from([1, 7, 12]),
    chunk=st.sampled_from([1, 3, 8]),
    divergence=st.sampled_from(["kl", "reverse_kl", "jsd"]),
    layout=st.sampled_from(["DV", "VD"]),
    teacher=st.sampled_from(["logits", "hidden"]),
    temperature=st.sampled_from([1.0, 2.5]),
    alpha=st.sampled_from([0.0, 0.4]),
    seed=st.integers(0, 100),
)
def test_property_matches_unfused(
    n, v, chunk, divergence, layout, teacher, temperature, alpha, seed
):
    data = _data(n=n, d=3, v=v, dt=2, seed=seed)
    rng = np.random.default_rng(seed)
    where = jnp.asarray(rng.random(n) < 0.7)
    t, extra = data.teacher(teacher)
    stored = data.kernel if layout == "DV" else data.kernel.T
    if layout == "VD" and extra:
        extra["teacher_kernel"] = extra["teacher_kernel"].T
    opts = dict(
        divergence=divergence,
        beta=0.3,
        temperature=temperature,
        alpha=alpha,
        labels=data.labels,
        where=where,
        kernel_layout=layout,
    )

    def fused(h, k, b):
        return jaxce.linear_distillation_loss(h, k, t, bias=b, chunk_size=chunk, **extra, **opts)

    def unfused(h, k, b):
        return _unfused(h, k, b, data.teacher_logits, **opts)

    args = (data.hidden, stored, data.bias)
    got = jax.value_and_grad(fused, argnums=(0, 1, 2))(*args)
    want = jax.value_and_grad(unfused, argnums=(0, 1, 2))(*args)
    # Two float32 paths, each a few 1e-6 from the float64 value where the divergence's
    # gradient cancels (the reverse KL's): over 1,920 draws of this space the two differed
    # by at most 4.5e-6. Exactness is the float64 oracle tests' part.
    _assert_tree_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"hidden": jnp.ones((3, 4), jnp.int32)}, TypeError, "hidden"),
        ({"kernel": jnp.ones((5, 7))}, ValueError, "kernel"),
        ({"teacher": jnp.ones((3, 6))}, ValueError, "teacher"),
        ({"teacher": jnp.ones((3, 7), jnp.int32)}, TypeError, "teacher"),
        ({"teacher_kernel": jnp.ones((2, 6))}, ValueError, "teacher_kernel must have 7 classes"),
        ({"teacher_kernel": jnp.ones((4, 7))}, ValueError, "teacher_kernel must have shape"),
        ({"teacher_bias": jnp.ones(7)}, ValueError, "teacher_bias"),
        ({"alpha": 0.5}, ValueError, "labels are required"),
        ({"ignore_index": 0}, ValueError, "ignore_index"),
        ({"labels": jnp.zeros(4, jnp.int32)}, ValueError, "labels"),
        ({"divergence": "js"}, ValueError, "divergence"),
        ({"kernel_layout": "VX"}, ValueError, "kernel_layout"),
        ({"chunk_size": 0}, ValueError, "chunk_size"),
        ({"beta": 1.5}, ValueError, "beta"),
        ({"alpha": -0.5, "labels": jnp.zeros(3, jnp.int32)}, ValueError, "alpha"),
        ({"temperature": 0.0}, ValueError, "temperature"),
        ({"reduction": "avg"}, ValueError, "reduction"),
        ({"where": jnp.ones(3, jnp.int32)}, TypeError, "where"),
    ],
)
def test_bad_inputs(kwargs, error, match):
    args = {"hidden": jnp.ones((3, 4)), "kernel": jnp.ones((4, 7)), "teacher": jnp.ones((3, 7))}
    if "teacher_kernel" in kwargs:
        args["teacher"] = jnp.ones((3, 2))
    args.update(kwargs)
    hidden, kernel, teacher = args.pop("hidden"), args.pop("kernel"), args.pop("teacher")
    with pytest.raises(error, match=match):
        jaxce.linear_distillation_loss(hidden, kernel, teacher, **args)


# Compiled memory (deterministic; compile only, nothing runs).


@cpu_memory_budget
@pytest.mark.parametrize(
    ("divergence", "options"), [("kl", {"alpha": 0.5, "temperature": 2.0}), ("jsd", {})]
)
def test_memory_vs_materialised(divergence, options):
    # A student and a teacher head at N=2048, D=512, V=32768, the teacher given as hidden
    # states (D_t=512) with its own kernel, float32; gradients of hidden and kernel.
    n, d, v = 2048, 512, 32768
    args = (
        jax.ShapeDtypeStruct((n, d), jnp.float32),
        jax.ShapeDtypeStruct((d, v), jnp.float32),
        jax.ShapeDtypeStruct((n, d), jnp.float32),
        jax.ShapeDtypeStruct((d, v), jnp.float32),
        jax.ShapeDtypeStruct((n,), jnp.int32),
    )
    opts = dict(divergence=divergence, **options)

    def fused(h, k, th, tk, y):
        return jaxce.linear_distillation_loss(h, k, th, teacher_kernel=tk, labels=y, **opts)

    def materialised(h, k, th, tk, y):
        return _unfused(h, k, None, th @ tk, labels=y, **opts)

    def temp(f):
        compiled = jax.jit(jax.value_and_grad(f, argnums=(0, 1))).lower(*args).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    fused_bytes, materialised_bytes = temp(fused), temp(materialised)
    assert fused_bytes <= 0.05 * materialised_bytes, (fused_bytes, materialised_bytes)


def test_guide_example_prints_what_it_shows():
    guide = pathlib.Path(__file__).resolve().parents[1] / "docs/guide/large-vocabularies.md"
    text = guide.read_text()
    section = text[text.index("## Distillation at vocabulary scale") :]
    example = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    shown = example[example.rindex("print(") :].splitlines()[1:]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(example, str(guide), "exec"), {})
    assert out.getvalue().splitlines() == [line.removeprefix("# ") for line in shown]
