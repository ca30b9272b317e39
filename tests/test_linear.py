"""linear_softmax_cross_entropy: equal to the materialised head, in value and gradient."""

import functools
import itertools
import re

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
    cpu_memory_budget,
    materialised_shapes,
    retraced,
)

N, D, V = 11, 6, 37  # V is not a multiple of the chunk sizes below


def _data(n=N, d=D, v=V, seed=0, dtype=jnp.float32):
    k = jax.random.split(jax.random.key(seed), 4)
    hidden = jax.random.normal(k[0], (n, d), dtype)
    kernel = (jax.random.normal(k[1], (d, v)) / np.sqrt(d)).astype(dtype)
    bias = (0.3 * jax.random.normal(k[2], (v,))).astype(dtype)
    labels = jax.random.randint(k[3], (n,), 0, v)
    return hidden, kernel, bias, labels


def _materialised(hidden, kernel, labels, bias=None, logit_softcap=None, **kw):
    z = jnp.dot(hidden, kernel, preferred_element_type=jnp.float32)
    if bias is not None:
        z = z + bias.astype(jnp.float32)[None, :]
    if logit_softcap is not None:
        z = logit_softcap * jnp.tanh(z / logit_softcap)
    return jaxce.softmax_cross_entropy(z, labels, **kw)


OPTIONS = [
    {},
    {"label_smoothing": 0.1},
    {"z_loss": 1e-2},
    {"logit_softcap": 2.0},
    {"ignore_index": 5},
    {"reduction": "sum"},
    {"reduction": "none"},
    {"label_smoothing": 0.2, "z_loss": 1e-3, "logit_softcap": 3.0, "ignore_index": 5},
]


def test_matches_materialised():
    hidden, kernel, bias, labels = _data()
    labels = labels.at[2].set(5)
    cases = list(itertools.product(OPTIONS, (8, None), (False, True)))

    @jax.jit  # every case in one program
    def program(h, k, b):
        out = []
        for options, chunk_size, use_bias in cases:

            def fused(h, k, b, options=options, chunk_size=chunk_size):
                return jnp.sum(
                    jaxce.linear_softmax_cross_entropy(
                        h, k, labels, bias=b, chunk_size=chunk_size, **options
                    )
                )

            def mat(h, k, b, options=options):
                return jnp.sum(_materialised(h, k, labels, bias=b, **options))

            argnums = (0, 1, 2) if use_bias else (0, 1)
            b_ = b if use_bias else None
            out.append([jax.value_and_grad(f, argnums=argnums)(h, k, b_) for f in (fused, mat)])
        return out

    for case, (got, want) in zip(cases, program(hidden, kernel, bias), strict=True):
        np.testing.assert_allclose(got[0], want[0], rtol=1e-5, err_msg=str(case))
        for g, w in zip(got[1], want[1], strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6, err_msg=str(case))


def test_matches_float64_oracle():
    hidden, kernel, bias, labels = _data()
    logits = (
        np.asarray(hidden, np.float64) @ np.asarray(kernel, np.float64) + np.asarray(bias)[None]
    )
    for kw in [{}, {"label_smoothing": 0.1, "z_loss": 1e-3}]:
        want = reference.softmax_cross_entropy(logits, labels, **kw)
        got = jaxce.linear_softmax_cross_entropy(
            hidden, kernel, labels, bias=bias, chunk_size=8, **kw
        )
        np.testing.assert_allclose(got, want, rtol=1e-5)


def test_large_offsets_lose_no_precision():
    # Logits near 1e4 that float32 holds exactly (multiples of 1/8), so that the float64
    # oracle sees the same logits. A float32 logsumexp minus the target logit loses up to
    # half of float32's 1e-3 spacing there (1.2e-3 measured for a running logaddexp); the
    # running max kept apart from the log-sum loses 5e-7.
    rng = np.random.default_rng(0)
    hidden = rng.integers(-1, 2, (N, D)).astype(np.float32)
    kernel = (rng.integers(-16, 17, (D, V)) / 8).astype(np.float32)
    bias = (1e4 + rng.integers(-8, 9, V) / 8).astype(np.float32)
    labels = rng.integers(0, V, N).astype(np.int32)
    got = jaxce.linear_softmax_cross_entropy(
        hidden, kernel, labels, bias=bias, chunk_size=8, reduction="none"
    )
    logits = hidden.astype(np.float64) @ kernel.astype(np.float64) + bias
    want = reference.softmax_cross_entropy(logits, labels, reduction="none")
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)


def test_leading_dims_where_and_denominator():
    hidden, kernel, bias, labels = _data(n=12)
    hidden3, labels3 = hidden.reshape(3, 4, D), labels.reshape(3, 4)
    where = jnp.arange(4) % 3 != 1  # broadcasts over the leading axis
    got = jaxce.linear_softmax_cross_entropy(
        hidden3, kernel, labels3, chunk_size=8, where=where, reduction="none"
    )
    assert got.shape == (3, 4)
    keep = np.broadcast_to(np.asarray(where), (3, 4)).ravel()
    sliced = jaxce.linear_softmax_cross_entropy(
        hidden[keep], kernel, labels[keep], chunk_size=8, reduction="none"
    )
    np.testing.assert_allclose(got.ravel()[keep], sliced, rtol=1e-6)
    assert np.all(got.ravel()[~keep] == 0)
    denom = jaxce.linear_softmax_cross_entropy(
        hidden3, kernel, labels3, chunk_size=8, where=where, denominator=100
    )
    np.testing.assert_allclose(denom, np.sum(sliced) / 100, rtol=1e-6)

    def loss(h):
        return jaxce.linear_softmax_cross_entropy(h, kernel, labels3, chunk_size=8, where=where)

    grad = jax.grad(loss)(hidden3).reshape(12, D)
    assert np.all(np.asarray(grad)[~keep] == 0)


def test_all_masked_is_zero_with_zero_grad():
    hidden, kernel, _, labels = _data()
    f = functools.partial(
        jaxce.linear_softmax_cross_entropy, labels=jnp.full((N,), -1), ignore_index=-1
    )
    value, grads = jax.value_and_grad(lambda h, k: f(h, k), argnums=(0, 1))(hidden, kernel)
    assert value == 0
    assert all(np.all(g == 0) for g in grads)


def test_bad_label_is_nan():
    hidden, kernel, _, labels = _data()
    losses = jaxce.linear_softmax_cross_entropy(
        hidden, kernel, labels.at[0].set(V), reduction="none"
    )
    assert np.isnan(losses[0]) and np.all(np.isfinite(losses[1:]))


def test_masked_class_by_inf_bias():
    hidden, kernel, bias, labels = _data()
    bias = bias.at[jnp.array([3, 30])].set(-jnp.inf)
    labels = jnp.where((labels == 3) | (labels == 30), 0, labels)
    kw = {"label_smoothing": 0.1}

    def fused(h, k):
        return jaxce.linear_softmax_cross_entropy(h, k, labels, bias=bias, chunk_size=8, **kw)

    got = jax.value_and_grad(fused, argnums=(0, 1))(hidden, kernel)
    want = jax.value_and_grad(
        lambda h, k: _materialised(h, k, labels, bias=bias, **kw), argnums=(0, 1)
    )(hidden, kernel)
    assert np.isfinite(got[0])
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
    np.testing.assert_allclose(got[1][1], want[1][1], rtol=1e-4, atol=1e-6)
    assert np.all(got[1][1][:, 3] == 0)


def test_bfloat16_dtype_contract():
    hidden, kernel, bias, labels = _data(dtype=jnp.bfloat16)

    def fused(h, k, b):
        return jaxce.linear_softmax_cross_entropy(h, k, labels, bias=b, chunk_size=8)

    value, grads = jax.value_and_grad(fused, argnums=(0, 1, 2))(hidden, kernel, bias)
    assert value.dtype == jnp.float32
    assert [g.dtype for g in grads] == [jnp.bfloat16] * 3
    f32 = [x.astype(jnp.float32) for x in (hidden, kernel, bias)]
    want_value, want_grads = jax.value_and_grad(fused, argnums=(0, 1, 2))(*f32)
    np.testing.assert_allclose(value, want_value, rtol=1e-5)
    for g, w in zip(grads, want_grads, strict=True):
        np.testing.assert_allclose(g.astype(jnp.float32), w, rtol=2e-2, atol=2e-3)


def test_check_grads_second_order(x64):
    hidden, kernel, bias, labels = _data(n=3, d=2, v=5, dtype=jnp.float64)

    def f(h, k, b):
        return jaxce.linear_softmax_cross_entropy(
            h, k, labels, bias=b, chunk_size=2, label_smoothing=0.1, logit_softcap=3.0
        )

    assert_derivatives_match_differences(f, (hidden, kernel, bias), order=2)


def test_vmap_of_grad():
    hidden, kernel, _, labels = _data(n=12)
    hb, yb = hidden.reshape(3, 4, D), labels.reshape(3, 4)

    def loss(h, y):
        return jaxce.linear_softmax_cross_entropy(h, kernel, y, chunk_size=8)

    got = jax.vmap(jax.grad(loss))(hb, yb)
    want = jnp.stack([jax.grad(loss)(hb[i], yb[i]) for i in range(3)])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"hidden": jnp.ones((3, 4), jnp.int32)}, TypeError, "hidden"),
        ({"kernel": jnp.ones((5, 7))}, ValueError, "kernel"),
        ({"bias": jnp.ones(6)}, ValueError, "bias"),
        ({"labels": jnp.zeros(4, jnp.int32)}, ValueError, "labels"),
        ({"labels": jnp.zeros(3)}, TypeError, "labels"),
        ({"chunk_size": 0}, ValueError, "chunk_size"),
        ({"logit_softcap": -1.0}, ValueError, "logit_softcap"),
        ({"label_smoothing": 1.5}, ValueError, "label_smoothing"),
        ({"z_loss": -1.0}, ValueError, "z_loss"),
        ({"reduction": "avg"}, ValueError, "reduction"),
        ({"where": jnp.ones(3, jnp.int32)}, TypeError, "where"),
    ],
)
def test_bad_inputs(kwargs, error, match):
    args = {
        "hidden": jnp.ones((3, 4)),
        "kernel": jnp.ones((4, 7)),
        "labels": jnp.zeros(3, jnp.int32),
    }
    args.update(kwargs)
    hidden, kernel, labels = args.pop("hidden"), args.pop("kernel"), args.pop("labels")
    with pytest.raises(error, match=match):
        jaxce.linear_softmax_cross_entropy(hidden, kernel, labels, **args)


@hypothesis.settings(max_examples=4, deadline=None)
@hypothesis.given(
    chunk=st.sampled_from([1, 2, 5, 12, 16]),
    eps=st.sampled_from([0.0, 0.3]),
    seed=st.integers(0, 100),
)
def test_property_any_chunking_matches(chunk, eps, seed):
    hidden, kernel, bias, labels = _data(n=4, d=3, v=13, seed=seed)

    def fused(h, k):
        return jaxce.linear_softmax_cross_entropy(
            h, k, labels, bias=bias, chunk_size=chunk, label_smoothing=eps
        )

    got = jax.value_and_grad(fused, argnums=(0, 1))(hidden, kernel)
    want = jax.value_and_grad(
        lambda h, k: _materialised(h, k, labels, bias=bias, label_smoothing=eps), argnums=(0, 1)
    )(hidden, kernel)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)
    for g, w in zip(got[1], want[1], strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)


# Class weights and the [V, D] kernel layout, against the float64 oracle.


WEIGHTED = [
    {},
    {"label_smoothing": 0.1},
    {"label_smoothing": 0.2, "z_loss": 1e-3, "ignore_index": 5},
    {"reduction": "sum", "label_smoothing": 0.3},
]


def test_class_weights_and_layout_match_float64_oracle(x64):
    hidden, kernel, bias, labels = _data(n=5, d=3, v=11, dtype=jnp.float64)
    labels = labels.at[2].set(5)
    weights = jnp.linspace(0.2, 3.0, 11)
    cases = list(itertools.product(WEIGHTED, ("DV", "VD")))

    @jax.jit  # every case in one program
    def fused(h, k, b, w):
        out = []
        for options, layout in cases:

            def loss(h, k, b, w, options=options, layout=layout):
                return jaxce.linear_softmax_cross_entropy(
                    h, k, labels, bias=b, weights=w, kernel_layout=layout, chunk_size=4, **options
                )

            stored = k if layout == "DV" else k.T
            out.append(jax.value_and_grad(loss, argnums=(0, 1, 2, 3))(h, stored, b, w))
        return out

    for (options, layout), (value, grads) in zip(
        cases, fused(hidden, kernel, bias, weights), strict=True
    ):
        stored = kernel if layout == "DV" else kernel.T
        args = (hidden, stored, bias, weights)
        oracle = _weighted_oracle(labels, layout, options)
        assert_matches_oracle(oracle, args, value, grads, str((options, layout)), atol=1e-8)


def _weighted_oracle(labels, layout, options):
    labels = np.asarray(labels)

    def oracle(h, stored, b, w):
        k = stored if layout == "DV" else stored.T
        return reference.softmax_cross_entropy(h @ k + b[None], labels, weights=w, **options)

    return oracle


@hypothesis.settings(max_examples=5, deadline=None)
@hypothesis.given(
    n=st.sampled_from([1, 5]),  # few shapes: few compilations
    v=st.sampled_from([1, 7, 12]),
    chunk=st.sampled_from([1, 3, 8]),
    eps=st.sampled_from([0.0, 0.2]),
    layout=st.sampled_from(["DV", "VD"]),
    seed=st.integers(0, 100),
)
def test_property_weights_and_layout_match_materialised(n, v, chunk, eps, layout, seed):
    hidden, kernel, bias, labels = _data(n=n, d=3, v=v, seed=seed)
    rng = np.random.default_rng(seed)
    weights = jnp.asarray(rng.uniform(0.1, 2.0, v), jnp.float32)
    where = jnp.asarray(rng.random(n) < 0.7)
    opts = dict(label_smoothing=eps, where=where)
    stored = kernel if layout == "DV" else kernel.T

    def fused(h, k, w):
        return jaxce.linear_softmax_cross_entropy(
            h, k, labels, bias=bias, weights=w, kernel_layout=layout, chunk_size=chunk, **opts
        )

    def mat(h, k, w):
        k = k if layout == "DV" else k.T
        return _materialised(h, k, labels, bias=bias, weights=w, **opts)

    got = jax.value_and_grad(fused, argnums=(0, 1, 2))(hidden, stored, weights)
    want = jax.value_and_grad(mat, argnums=(0, 1, 2))(hidden, stored, weights)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)
    for g, w in zip(got[1], want[1], strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_bad_layout_and_kernel_shape():
    hidden, kernel, _, labels = _data()
    with pytest.raises(ValueError, match="kernel_layout"):
        jaxce.linear_softmax_cross_entropy(hidden, kernel, labels, kernel_layout="VX")
    with pytest.raises(ValueError, match=r"kernel must have shape \(V, 6\)"):
        jaxce.linear_softmax_cross_entropy(hidden, kernel, labels, kernel_layout="VD")
    with pytest.raises(ValueError, match="weights"):
        jaxce.linear_softmax_cross_entropy(hidden, kernel, labels, weights=jnp.ones(V + 1))


# Compiled memory (deterministic; compile only, nothing runs).


def _compiled(loss, n, d, v, dtype):
    args = (
        jax.ShapeDtypeStruct((n, d), dtype),
        jax.ShapeDtypeStruct((d, v), dtype),
        jax.ShapeDtypeStruct((n,), jnp.int32),
    )
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1))).lower(*args).compile()


def _fused(h, k, y):
    return jaxce.linear_softmax_cross_entropy(h, k, y)


_HLO = {jnp.float32: "f32", jnp.bfloat16: "bf16"}


def _temp(compiled):
    return compiled.memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize(("backend", "chunk"), [("cpu", 2**20 // 512), ("gpu", 2**23 // 512)])
def test_automatic_chunk_follows_the_default_backend(monkeypatch, backend, chunk):
    # 4 MiB of float32 logits per block on a CPU, 32 MiB on an accelerator.
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    n, d, v = 512, 8, 65536
    hidden, kernel = jnp.zeros((n, d)), jnp.zeros((d, v))
    labels = jnp.zeros(n, jnp.int32)
    # The plan is made when the loss is traced.
    loss = retraced(jaxce.linear_softmax_cross_entropy)
    text = str(jax.make_jaxpr(loss)(hidden, kernel, labels))
    blocks = {int(c) for c in re.findall(rf"f32\[{n},(\d+)\]", text)} - {1, d}
    assert blocks == {chunk}, blocks


def _windowed_heads(layout, where, v):
    hidden, kernel, bias, labels = _data(v=v, dtype=jnp.bfloat16)
    teacher = jax.random.normal(jax.random.key(7), (N, v), jnp.bfloat16)
    stored = kernel if layout == "DV" else kernel.T
    options = {"bias": bias, "kernel_layout": layout, "chunk_size": 4, "where": where}

    def cross_entropy(h, k):
        return jaxce.linear_softmax_cross_entropy(h, k, labels, label_smoothing=0.1, **options)

    def distillation(h, k):
        return jaxce.linear_distillation_loss(
            h, k, teacher, labels=labels, temperature=2.0, alpha=0.3, **options
        )

    return (hidden, stored), {"cross_entropy": cross_entropy, "distillation": distillation}


@pytest.mark.parametrize(
    ("head", "layout", "v", "flushes"),
    [
        ("cross_entropy", "DV", V, 3),
        ("cross_entropy", "VD", V, 5),
        ("cross_entropy", "DV", 40, 5),
        ("cross_entropy", "VD", 40, 3),
        ("distillation", "VD", V, 3),
        ("distillation", "DV", 40, 5),
    ],
)
def test_kernel_gradient_in_windows_is_bit_identical(monkeypatch, head, layout, v, flushes):
    # A half-precision kernel gradient on a CPU is written in windows of columns
    # (`_linear_chunks.backward_loop`) when the batch and the kernel are large; forced
    # here on a small head. V = 37 or 40 in chunks of 4 is 10 steps: in 3 windows of
    # 16 columns the last group runs 2 steps past the last chunk (for V = 37, the last
    # window, from column 21, overlaps the one before); in 5 windows of 8 columns,
    # every step is its own (V = 40 leaves no column counted twice).
    where = jnp.arange(N) % 4 != 1
    args, heads = _windowed_heads(layout, where, v)
    loss = heads[head]
    want = jax.value_and_grad(loss, argnums=(0, 1))(*args)
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    monkeypatch.setattr(jaxce._linear_chunks, "EXAMPLES_PER_FLUSH", N // flushes)
    monkeypatch.setattr(jaxce._linear_chunks, "KERNEL_ELEMENTS_PER_FLUSH", 1)
    # The plan is made when the loss is traced; the heads look the losses up at each call.
    for name in ("linear_softmax_cross_entropy", "linear_distillation_loss"):
        monkeypatch.setattr(jaxce, name, retraced(getattr(jaxce, name)))
    width = -(-10 // flushes) * 4
    window = f"u16[{D},{width}]" if layout == "DV" else f"u16[{width},{D}]"
    assert window in str(jax.make_jaxpr(jax.grad(loss, argnums=1))(*args))
    got = jax.value_and_grad(loss, argnums=(0, 1))(*args)
    assert got[0] == want[0]
    for g, w in zip(got[1], want[1], strict=True):
        assert g.dtype == jnp.bfloat16
        np.testing.assert_array_equal(g, w)


@cpu_memory_budget
def test_vd_layout_makes_no_transposed_copy():
    # A [V, D] table is sliced by rows as it is: no [D, V] buffer, no copy of the table.
    n, d, v = 4096, 1024, 131072
    args = (
        jax.ShapeDtypeStruct((n, d), jnp.float32),
        jax.ShapeDtypeStruct((v, d), jnp.float32),
        jax.ShapeDtypeStruct((n,), jnp.int32),
    )

    def loss(h, table, y):
        return jaxce.linear_softmax_cross_entropy(h, table, y, kernel_layout="VD")

    compiled = jax.jit(jax.value_and_grad(loss, argnums=(0, 1))).lower(*args).compile()
    assert _temp(compiled) <= 0.02 * n * v * 4, _temp(compiled)
    shapes = {s.split("{")[0] for s in materialised_shapes(compiled.as_text())}
    assert f"f32[{d},{v}]" not in shapes
    assert {s for s in shapes if s.endswith(f"[{v},{d}]")} == {f"f32[{v},{d}]"}


@cpu_memory_budget
def test_memory_vs_materialised():
    n, d, v = 2048, 512, 32768
    fused = _temp(_compiled(_fused, n, d, v, jnp.float32))
    mat = _temp(_compiled(_materialised, n, d, v, jnp.float32))
    assert fused <= 0.05 * mat, (fused, mat)


@cpu_memory_budget
@pytest.mark.parametrize(("dtype", "fraction"), [(jnp.float32, 0.02), (jnp.bfloat16, 0.05)])
def test_memory_large_vocabulary(dtype, fraction):
    n, d, v = 4096, 1024, 131072
    compiled = _compiled(_fused, n, d, v, dtype)
    assert _temp(compiled) <= fraction * n * v * 4, _temp(compiled)
    shapes = {s.split("{")[0] for s in materialised_shapes(compiled.as_text())}
    # The kernel and its gradient, nothing else of their size: no converted copy of the
    # kernel, and in half precision no accumulator of the gradient's bits
    # (`_linear_chunks.backward_loop` writes them in windows of 16384 columns).
    assert {s for s in shapes if s.endswith(f"[{d},{v}]")} == {f"{_HLO[dtype]}[{d},{v}]"}
    if dtype == jnp.bfloat16:
        assert f"u16[{d},{v // 8}]" in shapes
