"""`autodiff="forward"`: every loss's custom_jvp equals its reverse-mode derivatives.

Each case is a loss of `tests/registry.py` as a function of all its differentiable inputs
(logits, probability labels or a teacher, class weights), its example weights (a 0 among
them) and every traced hyperparameter, with a mask, an ignored label and smoothing.
`jacfwd`, `jvp`, `linearize`, reverse mode through the forward rule and `hessian` must equal
the default reverse rule's in float64: one compiled program per case computes them all.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxce
from tests.helpers import replaced
from tests.registry import LOSSES

N, K = 6, 5
# Example 2 weighs exactly 0 (its weight's derivative is still exact), example 3 is masked,
# and example 1's label, where there is one, is the ignored label.
V = np.array([1.5, 0.7, 0.0, 2.0, 1.0, 0.3])
WHERE = np.array([1, 1, 1, 0, 1, 1], bool)


def _with_stats(out):
    loss, stats = out
    return loss + 0.1 * stats.logsumexp**2


# name -> (loss, its options, what makes its output one array).
CASES = {loss.name: (loss, {}, None) for loss in LOSSES if loss.forward}
CASES.update(
    {
        f"{loss.name}/stats": (loss, dict(return_stats=True), _with_stats)
        for loss in LOSSES
        if loss.forward and loss.stats
    }
)


def _args(name):
    """The loss's differentiable arrays, its hyperparameters and the example weights."""
    loss, _, _ = CASES[name]
    data = loss.data(N, K)
    floats = tuple(jnp.asarray(data[i], jnp.float64) for i in loss.differentiable)
    hyper = {k: jnp.float64(values[0]) for k, values in loss.hyper.items()}
    v = V[:, None] if loss.elementwise else V
    return data, (floats, hyper, jnp.asarray(v, jnp.float64))


@functools.cache
def _program(name):
    """Every derivative the tests compare, of `loss(floats, hyper, v)` in either mode."""
    loss, options, post = CASES[name]
    where = WHERE[:, None] if loss.elementwise else WHERE

    def program(data, args, tangents):
        def f(floats, hyper, v, autodiff):
            out = loss(
                replaced(data, loss.differentiable, floats),
                **hyper,
                **options,
                example_weights=v,
                where=where,
                reduction="none",
                autodiff=autodiff,
            )
            return out if post is None else post(out)

        forward = functools.partial(f, autodiff="forward")
        reverse = functools.partial(f, autodiff="reverse")
        argnums = (0, 1, 2)
        out = {
            "value": reverse(*args),
            "jacrev": jax.jacrev(reverse, argnums)(*args),
            "jacfwd": jax.jacfwd(forward, argnums)(*args),
            # Reverse mode through the forward rule (JAX transposes its tangent).
            "jacrev_of_forward": jax.jacrev(forward, argnums)(*args),
            "grad_of_forward": jax.grad(lambda *a: jnp.sum(forward(*a)))(*args)[0],
        }
        out["primal"], out["tangent"] = jax.jvp(forward, args, tangents)
        # Along the first input alone: no other input's tangent multiplies an excluded term.
        out["tangent_of_first"] = jax.jvp(
            lambda x: forward((x, *args[0][1:]), *args[1:]), (args[0][0],), (tangents[0][0],)
        )[1]
        out["linearized"] = jax.linearize(forward, *args)[1](*tangents)
        # Second order in the first input: forward over forward, reverse over reverse.
        floats, rest = args[0], args[1:]

        def total(x, fn):
            return jnp.sum(fn((x, *floats[1:]), *rest))

        out["hessian_forward"] = jax.jacfwd(jax.jacfwd(lambda x: total(x, forward)))(floats[0])
        out["hessian_reverse"] = jax.hessian(lambda x: total(x, reverse))(floats[0])
        return out

    return jax.jit(program)


def _assert_close(got, want):
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_mode_equals_reverse_mode(x64, name):
    data, args = _args(name)
    rng = np.random.default_rng(1)
    tangents = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=np.shape(a))), args)
    out = _program(name)(data, args, tangents)
    expected = out["jacrev"]
    _assert_close(out["jacfwd"], expected)
    _assert_close(out["jacrev_of_forward"], expected)
    # jvp and linearize along one random direction equal the Jacobian's product.
    _assert_close(out["primal"], out["value"])
    products = jax.tree.map(
        lambda jac, t: jnp.tensordot(jac, t, axes=np.ndim(t)), expected, tangents
    )
    _assert_close(out["tangent"], sum(jax.tree.leaves(products)))
    _assert_close(out["linearized"], out["tangent"])
    _assert_close(out["hessian_forward"], out["hessian_reverse"])


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_mode_is_exactly_zero_on_excluded_examples(x64, name):
    # Inf and NaN in an excluded row reach neither the tangent nor, through it, the gradient.
    data, (floats, hyper, v) = _args(name)
    x = floats[0].at[3].set(jnp.nan).at[2].set(jnp.inf)  # row 3: where=False; row 2: v = 0
    args = ((x, *floats[1:]), hyper, v)
    zeros = jax.tree.map(jnp.zeros_like, args)
    tangents = ((jnp.ones_like(x), *zeros[0][1:]), *zeros[1:])
    out = _program(name)(data, args, tangents)
    kept = np.array([True, True, False, False, True, True])
    tangent = np.asarray(out["tangent_of_first"]).reshape(N, -1)
    assert np.all(np.isfinite(tangent[kept])) and np.all(tangent[~kept] == 0)
    grad = np.asarray(out["grad_of_forward"])
    assert np.all(grad[~kept] == 0) and np.all(np.isfinite(grad))


FUSED = [loss for loss in LOSSES if not loss.forward]


@pytest.mark.parametrize("loss", FUSED, ids=lambda loss: loss.name)
def test_fused_heads_reject_forward_mode_naming_the_option(loss):
    with pytest.raises(ValueError, match="autodiff must be 'reverse'"):
        loss(loss.data(4, 7), autodiff="forward")


_RNG = np.random.default_rng(0)
X = _RNG.normal(size=(N, K)) * 2
Y = np.array([0, 1, -100, 3, 1, 4])


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
