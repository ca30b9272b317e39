"""Helpers shared by the test files: seeded random inputs and checks on compiled programs."""

import functools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxce

ROOT = Path(__file__).resolve().parent.parent


def class_data(shape, k, axis=-1, seed=0, scale=3.0):
    """Float32 logits of `shape` and int32 labels in [0, k) over every axis but `axis`."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=shape).astype(np.float32) * scale
    example_shape = shape[: axis % len(shape)] + shape[axis % len(shape) + 1 :]
    labels = rng.integers(0, k, size=example_shape).astype(np.int32)
    return logits, labels


def calibration_data(n, k, seed=0, scale=3.0, hit_rate=0.6):
    """Random over-confident logits; labels agree with the argmax about `hit_rate` of the time."""
    rng = np.random.default_rng(seed)
    logits = (rng.normal(size=(n, k)) * scale).astype(np.float32)
    random = rng.integers(0, k, n)
    labels = np.where(rng.random(n) < hit_rate, logits.argmax(-1), random).astype(np.int32)
    return logits, labels


def run_on_host_devices(module):
    """Runs `python -m module` (which sets up 8 host devices itself) and returns its last
    printed line as JSON: devices must be configured before jax is imported."""
    out = subprocess.run(
        [sys.executable, "-m", module],
        cwd=ROOT,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def probabilities(shape, axis=-1, seed=1):
    """Float32 rows of probabilities along `axis`, skewed (cubed uniforms) so some are small."""
    rng = np.random.default_rng(seed)
    p = rng.random(shape) ** 3
    return (p / p.sum(axis=axis, keepdims=True)).astype(np.float32)


def binary_data(shape, seed=0, scale=3.0, soft=False):
    """Float32 logits and float32 labels of `shape`: 0/1, or uniform in [0, 1) when `soft`."""
    rng = np.random.default_rng(seed)
    logits = (rng.normal(size=shape) * scale).astype(np.float32)
    labels = rng.random(shape) if soft else rng.integers(0, 2, size=shape)
    return logits, labels.astype(np.float32)


def torch_leaf(x):
    """A float64 PyTorch tensor of `x` that records gradients."""
    import torch

    return torch.tensor(np.asarray(x, np.float64), requires_grad=True)


def assert_no_gather(compiled_text):
    """The compiled program picks entries without a gather (sharding-safe); all-gather is fine."""
    assert " gather(" not in compiled_text, "the compiled program has a gather"
    assert "gather." not in compiled_text.replace("all-gather", ""), "the program has a gather"


def central_difference(f, x, step=1e-6):
    """d f / d x of a float64 NumPy function of one array, by central differences."""
    x = np.array(x, np.float64)
    grad = np.zeros_like(x)
    for i in np.ndindex(*x.shape):
        up, down = x.copy(), x.copy()
        up[i] += step
        down[i] -= step
        grad[i] = (f(up) - f(down)) / (2 * step)
    return grad


def materialised_shapes(compiled_text):
    """Result shapes of the instructions that own a buffer: those outside fusion bodies."""
    fused = set(re.findall(r"fusion\(.*?calls=(%[\w.-]+)", compiled_text))
    shapes, inside = [], False
    for line in compiled_text.splitlines():
        if line and not line.startswith(" "):  # a computation's header, or its closing brace
            name = line.split(" ")[1] if line.startswith("ENTRY") else line.split(" ")[0]
            inside = name in fused
        elif not inside and " = " in line:
            shapes.append(line.split(" = ", 1)[1].split(" ", 1)[0])
    return shapes


def cache_size(loss):
    """The size of a public loss's compilation cache (its `jax.jit` function's)."""
    return jaxce._options.jitted(loss)._cache_size()


def assert_cached(loss, calls, **kwargs):
    """Calls the public `loss(*args, **kwargs)` for each `args` in `calls`: only the first
    compiles. Returns the size of its compilation cache.
    """
    first, *rest = calls
    loss(*first, **kwargs)
    size = cache_size(loss)
    for args in rest:
        loss(*args, **kwargs)
    assert cache_size(loss) == size, f"{loss.__name__} compiled again for inputs of the same type"
    return size


# Compiled-memory budgets are those of the CPU plan (a CPU's chunk size and XLA's CPU
# buffers); `benchmarks/accelerator.py` measures an accelerator's.
cpu_memory_budget = pytest.mark.skipif(
    jax.default_backend() != "cpu", reason="a budget of the CPU backend's compiled memory"
)


def retraced(loss):
    """`loss` (a public loss), traced afresh at every call.

    For a test that patches what a loss reads when it is traced (the backend, a
    threshold of its plan): the public function's own trace is cached, and
    `jax.clear_caches()` would throw away every program the run has compiled.
    """
    body = loss.__wrapped__

    def call(*args, **options):
        checked = loss.check_options(**options)
        return jax.jit(lambda *a: body(*a, **checked))(*args)

    return call


def replaced(arrays, positions, values):
    """The tuple `arrays` with those at `positions` replaced by `values`, in order."""
    arrays = list(arrays)
    for i, a in zip(positions, values, strict=True):
        arrays[i] = a
    return tuple(arrays)


def assert_matches_oracle(oracle, args, value, grads, err_msg="", atol=1e-9):
    """`value` and `grads` (float64) are the float64 NumPy `oracle(*args)` and its central
    differences with respect to each of `args`."""
    args = [np.asarray(a) for a in args]

    def at(i, a):
        return oracle(*args[:i], a, *args[i + 1 :])

    np.testing.assert_allclose(value, oracle(*args), rtol=1e-10, err_msg=err_msg)
    for i, got in enumerate(grads):
        want = central_difference(functools.partial(at, i), args[i])
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=atol, err_msg=err_msg)


# Options of `jax.jit` for the programs whose last bit the tests read: compiled with XLA's
# defaults, as a user's program is, not with the suite's quicker settings (conftest).
SHIPPED = {"xla_backend_optimization_level": 3, "xla_cpu_use_fusion_emitters": True}


def assert_derivatives_match_differences(f, args, order=1, directions=2, seed=0):
    """`check_grads(f, args, order, modes=["rev"])` in one compiled program per `f` (float64):
    the reverse-mode derivative of the scalar `f(*args)` along random directions, and with
    `order=2` reverse over reverse (the Hessian times each direction), against central
    differences of the order below. A non-scalar `f` is summed with fixed uneven weights."""
    rng = np.random.default_rng(seed)
    ds = jax.tree.map(lambda a: rng.normal(size=(directions, *np.shape(a))), args)
    for got, want in _derivative_program(f, order)(args, ds):
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-9)


@functools.lru_cache(maxsize=32)
def _derivative_program(f, order, eps=1e-5):
    def dot(a, b):
        pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
        return sum(jnp.vdot(x, y) for x, y in pairs)

    def scalar(args):
        out = f(*args)
        mix = 1 + 0.5 * jnp.sin(jnp.arange(out.size, dtype=out.dtype)).reshape(out.shape)
        return jnp.sum(out * mix)

    grad = jax.grad(scalar)

    @jax.jit
    def program(args, ds):
        def difference(fn, d):
            def at(step):
                return fn(jax.tree.map(lambda a, d: a + step * d, args, d))

            return jax.tree.map(lambda up, down: (up - down) / (2 * eps), at(eps), at(-eps))

        def first(d):
            return dot(grad(args), d), difference(scalar, d)

        def second(d):
            return jax.grad(lambda a: dot(grad(a), d))(args), difference(grad, d)

        return [jax.vmap(first)(ds)] + ([jax.vmap(second)(ds)] if order == 2 else [])

    return program
