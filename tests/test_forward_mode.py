"""`autodiff="forward"`: every loss's custom_jvp equals its reverse-mode derivatives.

Each case is a loss of all its floating inputs (logits, probability labels or a
teacher, class weights, example weights with a 0 among them, every traced
hyperparameter), with masks, ignored labels and smoothing. `jacfwd`, `jvp`,
`linearize`, reverse mode through the forward rule and `hessian` must equal the
default reverse rule's in float64.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import jaxce

N, K = 6, 5
_rng = np.random.default_rng(0)
X = _rng.normal(size=(N, K)) * 2
T = _rng.normal(size=(N, K)) * 2
Y = np.array([0, 1, -100, 3, 1, 4])
PROBS = _rng.dirichlet(np.ones(K), N)
SIGMOIDS = 1 / (1 + np.exp(-X))
BINARY = _rng.random((N, K))
W = _rng.uniform(0.5, 2, K)
V = np.array([1.5, 0.0, 0.7, 2.0, 1.0, 0.3])  # a weight of exactly 0: its derivative is exact
WHERE = np.array([1, 1, 1, 0, 1, 1], bool)
COMMON = dict(where=WHERE, reduction="none")
CLASS = dict(ignore_index=-100, **COMMON)


def _vocab_parallel(x, h, v, autodiff):
    mesh = jax.make_mesh((1,), ("vocab",), axis_types=(jax.sharding.AxisType.Auto,))

    def local(x, y, v):
        return jaxce.vocab_parallel_softmax_cross_entropy(
            x, y, axis_name="vocab", label_smoothing=h, z_loss=h / 10, logit_softcap=3 + h,
            example_weights=v, autodiff=autodiff, **CLASS,
        )  # fmt: skip

    specs = (P(None, "vocab"), P(), P())
    return jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=P())(x, jnp.asarray(Y), v)


# name -> (loss(inputs, h, v, autodiff), its floating inputs besides h and v). `h` is a
# traced hyperparameter in (0, 1), standing for each float option of the loss.
CASES = {
    "softmax_cross_entropy": (
        lambda xs, h, v, ad: jaxce.softmax_cross_entropy(
            xs[0],
            Y,
            weights=xs[1],
            label_smoothing=h,
            z_loss=h / 10,
            logit_softcap=3 + h,
            example_weights=v,
            autodiff=ad,
            **CLASS,
        ),  # fmt: skip
        (X, W),
    ),
    "softmax_cross_entropy/probs": (
        lambda xs, h, v, ad: jaxce.softmax_cross_entropy(
            xs[0],
            xs[1],
            weights=xs[2],
            label_smoothing=h,
            z_loss=h / 10,
            example_weights=v,
            autodiff=ad,
            **COMMON,
        ),  # fmt: skip
        (X, PROBS, W),
    ),
    "softmax_cross_entropy/stats": (
        lambda xs, h, v, ad: _stats_sum(
            jaxce.softmax_cross_entropy(
                xs[0],
                Y,
                label_smoothing=h,
                return_stats=True,
                example_weights=v,
                autodiff=ad,
                **CLASS,
            )  # fmt: skip
        ),
        (X,),
    ),
    "nll_loss": (
        lambda xs, h, v, ad: (
            h * jaxce.nll_loss(xs[0], Y, weights=xs[1], example_weights=v, autodiff=ad, **CLASS)
        ),
        (X, W),
    ),
    "softmax_focal_loss": (
        lambda xs, h, v, ad: jaxce.softmax_focal_loss(
            xs[0], Y, gamma=1 + h, weights=xs[1], example_weights=v, autodiff=ad, **CLASS
        ),
        (X, W),
    ),
    "poly1_cross_entropy": (
        lambda xs, h, v, ad: jaxce.poly1_cross_entropy(
            xs[0],
            Y,
            epsilon=h,
            label_smoothing=h / 2,
            weights=xs[1],
            example_weights=v,
            autodiff=ad,
            **CLASS,
        ),  # fmt: skip
        (X, W),
    ),
    "poly1_cross_entropy/probs": (
        lambda xs, h, v, ad: jaxce.poly1_cross_entropy(
            xs[0], xs[1], epsilon=h, example_weights=v, autodiff=ad, **COMMON
        ),
        (X, PROBS),
    ),
    "kl_divergence": (
        lambda xs, h, v, ad: (
            h * jaxce.kl_divergence(xs[0], xs[1], example_weights=v, autodiff=ad, **COMMON)
        ),
        (X, PROBS),
    ),
    "entropy": (
        lambda xs, h, v, ad: h * jaxce.entropy(xs[0], example_weights=v, autodiff=ad, **COMMON),
        (X,),
    ),
    "distillation_loss": (
        lambda xs, h, v, ad: jaxce.distillation_loss(
            xs[0], xs[1], temperature=1 + h, example_weights=v, autodiff=ad, **COMMON
        ),
        (X, T),
    ),
    "reverse_kl_divergence": (
        lambda xs, h, v, ad: jaxce.reverse_kl_divergence(
            xs[0], xs[1], temperature=1 + h, example_weights=v, autodiff=ad, **COMMON
        ),
        (X, T),
    ),
    "jensen_shannon_divergence": (
        lambda xs, h, v, ad: jaxce.jensen_shannon_divergence(
            xs[0], xs[1], beta=h, temperature=2 - h, example_weights=v, autodiff=ad, **COMMON
        ),
        (X, T),
    ),
    "sigmoid_binary_cross_entropy": (
        lambda xs, h, v, ad: jaxce.sigmoid_binary_cross_entropy(
            xs[0],
            xs[1],
            weights=xs[2],
            pos_weight=xs[2] * 2,
            label_smoothing=h,
            where=WHERE[:, None],
            example_weights=v[:, None],
            autodiff=ad,
            reduction="none",
        ),  # fmt: skip
        (X, BINARY, W),
    ),
    "binary_cross_entropy": (
        lambda xs, h, v, ad: (
            h
            * jaxce.binary_cross_entropy(
                xs[0],
                xs[1],
                weights=xs[2],
                where=WHERE[:, None],
                example_weights=v[:, None],
                autodiff=ad,
                reduction="none",
            )
        ),  # fmt: skip
        (SIGMOIDS, BINARY, W),
    ),
    "sigmoid_focal_loss": (
        lambda xs, h, v, ad: jaxce.sigmoid_focal_loss(
            xs[0],
            xs[1],
            alpha=h,
            gamma=1 + h,
            where=WHERE[:, None],
            example_weights=v[:, None],
            autodiff=ad,
            reduction="none",
        ),  # fmt: skip
        (X, BINARY),
    ),
    "vocab_parallel_softmax_cross_entropy": (
        lambda xs, h, v, ad: _vocab_parallel(xs[0], h, v, ad),
        (X,),
    ),
}
FUSED = ("linear_softmax_cross_entropy", "linear_distillation_loss")


def _stats_sum(out):
    loss, stats = out
    return loss + 0.1 * stats.logsumexp**2


def _args(name):
    _, inputs = CASES[name]
    return tuple(map(jnp.asarray, inputs)), jnp.float64(0.3), jnp.asarray(V)


def _assert_close(got, want):
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-10, atol=1e-12)


def test_every_loss_has_a_case():
    from tests.test_sharding import LOSSES

    missing = set(LOSSES) - set(FUSED) - {n.split("/")[0] for n in CASES}
    assert not missing, f"losses without forward-mode tests: {sorted(missing)}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_mode_equals_reverse_mode(x64, name):
    loss, _ = CASES[name]
    args = _args(name)

    def forward(*a):
        return loss(*a, "forward")

    def reverse(*a):
        return loss(*a, "reverse")

    argnums = (0, 1, 2)
    expected = jax.jit(jax.jacrev(reverse, argnums))(*args)
    _assert_close(jax.jit(jax.jacfwd(forward, argnums))(*args), expected)
    # Reverse mode through the forward rule (JAX transposes its tangent).
    _assert_close(jax.jit(jax.jacrev(forward, argnums))(*args), expected)
    # jvp and linearize along one random direction equal the Jacobian's product.
    rng = np.random.default_rng(1)
    tangents = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=np.shape(a))), args)
    value, tangent = jax.jit(lambda a, t: jax.jvp(forward, a, t))(args, tangents)
    _assert_close(value, reverse(*args))
    products = jax.tree.map(
        lambda jac, t: jnp.tensordot(jac, t, axes=np.ndim(t)), expected, tangents
    )
    _assert_close(tangent, sum(jax.tree.leaves(products)))
    _, linear = jax.linearize(forward, *args)
    _assert_close(linear(*tangents), tangent)
    # Second order: forward over forward equals reverse over reverse.
    x = args[0][0]

    def total(x, f):
        return jnp.sum(f((x, *args[0][1:]), *args[1:]))

    _assert_close(
        jax.jit(jax.jacfwd(jax.jacfwd(lambda x: total(x, forward))))(x),
        jax.jit(jax.hessian(lambda x: total(x, reverse)))(x),
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_mode_is_exactly_zero_on_excluded_examples(name):
    # Inf and NaN in an excluded row reach neither the tangent nor, through it, the gradient.
    loss, inputs = CASES[name]
    xs = list(map(jnp.asarray, inputs))
    xs[0] = xs[0].at[3].set(jnp.nan).at[1].set(jnp.inf)  # row 3: where=False; row 1: v = 0
    v = jnp.asarray(V)

    def f(x):
        return loss((x, *xs[1:]), 0.3, v, "forward")

    tangent = jax.jit(lambda x: jax.jvp(f, (x,), (jnp.ones_like(x),)))(xs[0])
    kept = np.array([True, False, True, False, True, True])
    out = np.asarray(tangent[1]).reshape(N, -1)
    assert np.all(np.isfinite(out[kept])) and np.all(out[~kept] == 0)
    grad = jax.jit(jax.grad(lambda x: jnp.sum(f(x))))(xs[0])
    assert np.all(np.asarray(grad)[~kept] == 0) and np.all(np.isfinite(grad))


@pytest.mark.parametrize("name", FUSED)
def test_fused_heads_reject_forward_mode_naming_the_option(name):
    hidden, kernel = jnp.ones((4, 3)), jnp.ones((3, 7))
    teacher = (jnp.ones((4, 7)),) if name == "linear_distillation_loss" else (jnp.arange(4),)
    with pytest.raises(ValueError, match="autodiff must be 'reverse'"):
        getattr(jaxce, name)(hidden, kernel, *teacher, autodiff="forward")


def test_autodiff_is_static_and_checked():
    with pytest.raises(ValueError, match="autodiff must be one of"):
        jaxce.softmax_cross_entropy(X, Y, autodiff="both")
    with pytest.raises(TypeError, match="autodiff is static"):
        jaxce.softmax_cross_entropy(X, Y, autodiff=jnp.zeros(()))


def test_default_program_is_the_reverse_rule():
    # The option's default traces the custom_vjp, "forward" the custom_jvp.
    x, y = jnp.asarray(X, jnp.float32), jnp.asarray(np.abs(Y) % K)

    def rules(**kw):
        text = str(jax.make_jaxpr(lambda x: jaxce.softmax_cross_entropy(x, y, **kw))(x))
        return text.count("custom_vjp_call"), text.count("custom_jvp_call")

    assert rules()[0] == rules(autodiff="reverse")[0] == 1
    assert rules(autodiff="forward")[0] == 0
