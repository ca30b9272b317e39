"""Helpers shared by the test files: seeded random inputs and checks on compiled programs."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

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


def assert_cached(fn, calls, **kwargs):
    """Calls the jitted `fn(*args, **kwargs)` for each `args` in `calls`: only the first compiles.

    Returns the size of `fn`'s compilation cache.
    """
    first, *rest = calls
    fn(*first, **kwargs)
    size = fn._cache_size()
    for args in rest:
        fn(*args, **kwargs)
    assert fn._cache_size() == size, f"{fn.__name__} compiled again for inputs of the same type"
    return size


# Compiled-memory budgets are those of the CPU plan (a CPU's chunk size and XLA's CPU
# buffers); `benchmarks/accelerator.py` measures an accelerator's.
cpu_memory_budget = pytest.mark.skipif(
    jax.default_backend() != "cpu", reason="a budget of the CPU backend's compiled memory"
)
