"""Deterministic performance properties: no retracing, compiled memory, fused passes.

No timings here (benchmarks/run.py measures those); only what the compiler
reports, which does not vary from run to run.
"""

import jax
import jax.numpy as jnp
import pytest

import jaxce
from tests.helpers import assert_cached, cache_size, class_data
from tests.registry import one_device


def _device_data(n, v, dtype, seed=0):
    """`class_data` on the device: (n, v) logits of `dtype`, n labels."""
    logits, labels = class_data((n, v), v, seed=seed, scale=1.0)
    return jnp.asarray(logits).astype(dtype), jnp.asarray(labels)


def test_no_retrace_across_steps():
    traces = []

    def loss(x, y):
        traces.append(None)  # runs once per trace
        return jaxce.softmax_cross_entropy(x, y)

    step = jax.jit(jax.value_and_grad(loss))
    for seed in range(4):
        jax.block_until_ready(step(*_device_data(8, 16, jnp.float32, seed)))
    assert len(traces) == 1
    assert step._cache_size() == 1


def test_eager_calls_reuse_one_compilation():
    calls = [_device_data(5, 7, jnp.float32, seed) for seed in range(4)]
    size = assert_cached(jaxce.softmax_cross_entropy, calls)
    jaxce.softmax_cross_entropy(*_device_data(5, 7, jnp.bfloat16))  # a new dtype is a new entry
    assert cache_size(jaxce.softmax_cross_entropy) == size + 1


def _temp_bytes(fn, *args):
    return jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes


# The vocabulary-parallel loss inside `shard_map` over one device: its whole slice.
_vocab_parallel = one_device(jaxce.vocab_parallel_softmax_cross_entropy)


def _soft(labels, v):
    """Soft labels: each row's label gets 0.7, the rest share 0.3."""
    return 0.3 / (v - 1) + (0.7 - 0.3 / (v - 1)) * jax.nn.one_hot(labels, v)


def _probability_labels(logits, labels, **options):
    """Cross-entropy with soft labels (`_soft`)."""
    return jaxce.softmax_cross_entropy(logits, _soft(labels, logits.shape[-1]), **options)


@pytest.mark.parametrize(
    "options",
    [{}, {"label_smoothing": 0.1}, {"label_smoothing": 0.1, "weights": jnp.linspace(0.5, 2, 2048)}],
)
@pytest.mark.parametrize(
    "loss", [jaxce.softmax_cross_entropy, _vocab_parallel, _probability_labels]
)
def test_float32_forward_backward_keeps_no_n_by_v_temporary(loss, options):
    # The target logit is read by a fused reduction, never written out as an
    # N x V one-hot array; the gradient is the only N x V buffer. Smoothing's and
    # the class weights' row sums share one reduction with the target's, and
    # soft labels' loss one with their mass (`_numerics.sums`): summed apart, they
    # kept up to four N x V buffers.
    n, v = 256, 2048
    logits, labels = _device_data(n, v, jnp.float32)
    grad = jax.value_and_grad(lambda x: loss(x, labels, **options))
    assert _temp_bytes(grad, logits) < n * v * 4 // 8


@pytest.mark.parametrize("options", [{}, {"z_loss": 1e-3}, {"weights": jnp.linspace(0.5, 2, 2048)}])
def test_half_precision_makes_no_wide_copy(options):
    # Computed in float32, read in bfloat16: no float32 copy of the logits (each
    # pass widens what it reads), and the gradient is the only N x V buffer.
    n, v = 256, 2048
    logits, labels = _device_data(n, v, jnp.bfloat16)
    grad = jax.value_and_grad(lambda x: jaxce.softmax_cross_entropy(x, labels, **options))
    assert _temp_bytes(grad, logits) < n * v // 8


def test_half_precision_probability_labels_widen_each_pass_itself():
    # Each pass widens the bfloat16 logits and labels it reads: sharing one float32 copy
    # of each kept three N x V float32 buffers. One remains: the row max broadcast for the
    # log-sum's reduction.
    n, v = 256, 2048
    logits, labels = _device_data(n, v, jnp.bfloat16)
    probs = _soft(labels, v).astype(jnp.bfloat16)
    grad = jax.value_and_grad(lambda x: jaxce.softmax_cross_entropy(x, probs))
    assert _temp_bytes(grad, logits) < 1.5 * n * v * 4


def test_forward_keeps_no_n_by_v_temporary():
    n, v = 256, 2048
    logits, labels = _device_data(n, v, jnp.float32)
    assert _temp_bytes(lambda x: jaxce.softmax_cross_entropy(x, labels), logits) < n * v


def test_gradient_is_one_fused_pass():
    # The backward writes the N x V gradient once (no second N x V op after it).
    n, v = 64, 1024
    logits, labels = _device_data(n, v, jnp.float32)
    text = (
        jax.jit(jax.value_and_grad(lambda x: jaxce.softmax_cross_entropy(x, labels)))
        .lower(logits)
        .compile()
        .as_text()
    )
    entry = text[text.index("ENTRY") :]
    shape = f"f32[{n},{v}]"
    ops = [
        line
        for line in entry.splitlines()
        if line.strip().startswith("%") and f"= {shape}" in line and "parameter(" not in line
    ]
    assert len(ops) == 1, ops


def test_backward_keeps_a_few_numbers_per_example():
    # What jax.vjp keeps besides the logits: O(N) numbers, no N x K array
    # (the gradient guide quotes the figure for N=1024, K=32768).
    n, k = 1024, 4096
    x = jax.random.normal(jax.random.key(0), (n, k))
    y = jax.random.randint(jax.random.key(1), (n,), 0, k)
    _, vjp = jax.vjp(lambda x: jaxce.softmax_cross_entropy(x, y), x)
    leaves = [leaf for leaf in jax.tree.leaves(vjp) if hasattr(leaf, "nbytes")]
    saved = sum(leaf.nbytes for leaf in leaves if leaf is not x)
    assert saved <= 24 * n
