"""Contrastive losses (CLIP / InfoNCE, NT-Xent, SigLIP): the float64 oracle of
`tests/reference.py` for the value and every gradient (towers, temperature, bias), ragged
chunks, labels other than the diagonal with M != N, optax's `ntxent`, memory that does not
grow with N x M, and bad input. Masks and example weights are covered with every loss in
`tests/test_example_weights.py`, and the towers split over devices (meshes, and shard_map
with `axis_name`) in `tests/test_sharding.py` (the entries of `tests/registry.py`)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxce
from tests import reference as ref
from tests.helpers import central_difference

N, M, D = 6, 7, 3
_RNG = np.random.default_rng(0)
A, B, Z = _RNG.normal(size=(N, D)), _RNG.normal(size=(M, D)), _RNG.normal(size=(N, D))
LABELS = np.array([3, 0, 6, 3, 1, 5])
WHERE = np.array([True, True, False, True, True, True])
V = np.array([1.0, 0.5, 2.0, 0.0, 1.5, 1.0])

# name: (the loss, named alike in jaxce and the oracle; the rows of b it takes; its options)
CASES = {
    "clip": ("contrastive_cross_entropy", N, {}),
    "clip_labels": ("contrastive_cross_entropy", M, dict(labels=LABELS)),
    "infonce_labels": ("contrastive_cross_entropy", M, dict(labels=LABELS, symmetric=False)),
    "siglip": ("sigmoid_contrastive_loss", N, {}),
    "siglip_labels": ("sigmoid_contrastive_loss", M, dict(labels=LABELS)),
    "ntxent": ("ntxent_loss", 0, {}),  # of a alone, no bias
}


def _case(module, name, a, b, t, c, **kw):
    """Case `name` of `module` (jaxce or the oracle) as a function of (a, b, T, bias)."""
    loss, rows, options = CASES[name]
    if not rows:
        return getattr(module, loss)(a, temperature=t, **options, **kw)
    return getattr(module, loss)(a, b[:rows], temperature=t, bias=c, **options, **kw)


OPTIONS = {
    "plain": {},
    "masked": dict(where=WHERE, example_weights=V),
}


@functools.cache
def _program():
    """Every case and option set, its value and the gradients of (a, b, T, bias), with
    chunks of 4 rows of b (ragged: 4 divides neither 6 nor 7): one float64 program."""

    def program(a, b, t, c):
        out = {}
        for name in CASES:
            loss = functools.partial(_case, jaxce, name)
            for option, kw in OPTIONS.items():
                f = functools.partial(loss, chunk_size=4, **kw)
                out[name, option] = jax.value_and_grad(f, argnums=(0, 1, 2, 3))(a, b, t, c)
        return out

    return jax.jit(program)


def test_value_and_every_gradient_match_the_oracle(x64):
    t, c = 0.6, -0.4
    out = _program()(A, B, jnp.float64(t), jnp.float64(c))
    for (name, option), (value, grads) in out.items():
        oracle = functools.partial(_case, ref, name)
        kw = OPTIONS[option]
        np.testing.assert_allclose(value, oracle(A, B, t, c, **kw), rtol=1e-10, err_msg=name)
        args = [A, B, np.float64(t), np.float64(c)]
        for i, g in enumerate(grads):

            def f(x, i=i, oracle=oracle, args=args, kw=kw):
                return oracle(*(x if j == i else y for j, y in enumerate(args)), **kw)

            want = central_difference(f, args[i])
            np.testing.assert_allclose(
                g, want, rtol=1e-6, atol=1e-8, err_msg=f"{name} {option} argument {i}"
            )


def test_ntxent_view_weighted_zero_masks_its_pair(x64):
    # A view is its partner's positive: weighting it 0 excludes the pair as where=False on it
    # does, even when it holds NaN, and the rest matches the oracle.
    z = np.concatenate([A, Z[:2]])
    z[4] = np.nan
    v = np.array([1.0, 0.5, 2.0, 1.5, 0.0, 1.0, 1.0, 0.5])
    where = v != 0

    def loss(z, **kw):
        return jaxce.ntxent_loss(z, temperature=0.6, chunk_size=3, reduction="sum", **kw)

    weighted, masked = jax.jit(
        lambda z: (
            jax.value_and_grad(lambda z: loss(z, example_weights=jnp.asarray(v)))(z),
            jax.value_and_grad(lambda z: loss(z, where=where, example_weights=v * where))(z),
        )
    )(z)
    np.testing.assert_array_equal(weighted[0], masked[0])
    np.testing.assert_array_equal(weighted[1], masked[1])
    assert np.all(weighted[1][4:6] == 0) and np.all(np.isfinite(weighted[1]))
    want = ref.ntxent_loss(z, temperature=0.6, example_weights=v, reduction="sum")
    np.testing.assert_allclose(weighted[0], want, rtol=1e-10)


def test_ntxent_equals_optax(x64):
    labels = jnp.arange(N) // 2

    def ours(z):
        unit = z / jnp.linalg.norm(z, axis=-1, keepdims=True)
        return jaxce.ntxent_loss(unit, temperature=0.3, chunk_size=4)

    def theirs(z):
        with jax.numpy_dtype_promotion("standard"):  # optax mixes booleans and integers
            return optax.losses.ntxent(z, labels, 0.3)

    got, want = (jax.jit(jax.value_and_grad(f))(Z) for f in (ours, theirs))
    np.testing.assert_allclose(got[0], want[0], rtol=1e-12)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-9, atol=1e-12)


def test_clip_equals_the_two_cross_entropies_of_the_similarities():
    a, b = jnp.asarray(A, jnp.float32), jnp.asarray(B[:N], jnp.float32)
    s = a @ b.T / 0.5
    y = jnp.arange(N)
    clip = 0.5 * (jaxce.softmax_cross_entropy(s, y) + jaxce.softmax_cross_entropy(s.T, y))
    got = jaxce.contrastive_cross_entropy(a, b, temperature=0.5, chunk_size=4)
    np.testing.assert_allclose(got, clip, rtol=1e-6)


def test_extreme_similarities_stay_finite():
    unit = A / np.linalg.norm(A, axis=-1, keepdims=True)
    a = jnp.asarray(unit, jnp.float32)
    for loss in (
        lambda a: jaxce.contrastive_cross_entropy(a, a[::-1], temperature=1e-3),
        lambda a: jaxce.sigmoid_contrastive_loss(a, a[::-1], temperature=1e-3, bias=-10.0),
    ):
        value, grad = jax.value_and_grad(loss)(a)
        assert np.isfinite(value) and np.all(np.isfinite(grad))


def test_training_step_memory_does_not_grow_with_n_times_m():
    # The similarities and their gradient would be 2 N^2 float32; the rule holds blocks.
    n, d = 4096, 16
    a = jax.ShapeDtypeStruct((n, d), jnp.float32)
    t = jax.ShapeDtypeStruct((), jnp.float32)

    def step(a, b, t):
        return jaxce.contrastive_cross_entropy(a, b, temperature=t, chunk_size=64)

    compiled = jax.jit(jax.grad(step, argnums=(0, 1, 2))).lower(a, a, t).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    assert temp <= 0.05 * 2 * n * n * 4, temp


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: jaxce.contrastive_cross_entropy(A, B), "b must have as many rows as a"),
        (lambda: jaxce.contrastive_cross_entropy(A, B[:, :2]), r"b must have shape \(M, 3\)"),
        (lambda: jaxce.contrastive_cross_entropy(A[0], B), r"a must have shape \(N, D\)"),
        (lambda: jaxce.ntxent_loss(A[:5], temperature=1.0), r"z must have shape \(2K, D\)"),
        (lambda: jaxce.ntxent_loss(A, temperature=0.0), "temperature must be > 0"),
        (
            lambda: jaxce.contrastive_cross_entropy(A, B, labels=LABELS[:3]),
            r"labels must have shape \(6,\)",
        ),
        (
            lambda: jaxce.sigmoid_contrastive_loss(A, A, temperature=1.0, bias=0.0, chunk_size=0),
            "chunk_size must be >= 1",
        ),
    ],
)
def test_bad_input_raises_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_labels_must_be_integers():
    with pytest.raises(TypeError, match="labels must be integer"):
        jaxce.contrastive_cross_entropy(A, B, labels=LABELS.astype(float))
