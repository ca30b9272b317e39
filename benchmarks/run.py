"""Benchmarks of jaxce's softmax cross-entropy: time, memory, compile time, accuracy.

Every timed call is `jax.jit(jax.value_and_grad(loss))` (loss value and gradient
with respect to the logits), compiled and warmed up first. The implementations
of one row are called in turn, round after round, and each gets the median of
its rounds, so a slow spell on a shared machine hits all of them alike; the
table leads with ratios taken within one row.

Each CE row also times a floor (`_floor`: the fewest passes an analytic-gradient
CE needs, with none of jaxce's options or checks), the forward alone, and the
copy written over its donated input as well as into a fresh buffer.

The fused-head rows (`bench_linear`) also time PyTorch's
`linear_cross_entropy`, chunked and materialised, on the same `[V, D]` weight
in the same rounds, and measure its peak memory with `torch.profiler`
(`torch_peak_bytes`).

Bytes model: the loss reads the logits twice (a reduction pass and the
backward pass; the extra per-row reductions are counted as free) and writes the
gradient once: 3 x N x V x itemsize. The copy row is `x * 2` on the same array
(one read, one write), measured in the same rounds; `bw` is the copy's bytes/s
and `of copy` is the loss's bytes/s divided by it.

The contrastive rows (`bench_contrastive`) time CLIP's training step fused
(`contrastive_cross_entropy`) against the same loss written with `jnp` on the
N x M similarities, and NT-Xent against optax's `ntxent`.

The option rows (`bench_options`) time cross-entropy with label smoothing (and
class weights) against optax's smoothed one-hot labels and against jaxce's own
plain loss, the vocabulary-parallel loss (on one device: its whole slice) too.

Usage: `python benchmarks/run.py [--quick] [--rounds R]
[--only linear|contrastive|options] [--out DIR]`; `--only` runs the fused-head rows
(`run_linear_only`), the contrastive rows or the option rows (`run_section_only`) alone.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import re
import statistics
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jaxce

HERE = Path(__file__).resolve().parent

# (N, V) rows of the CPU table; the last one is the target shape of the targets table.
FULL_SHAPES = [(1024, 8192), (2048, 32768), (4096, 32768)]
QUICK_SHAPES = [(64, 512)]
LINEAR_FULL = (2048, 512, 32768)
LINEAR_QUICK = (64, 32, 512)
# Compile-only memory of the fused head at a large vocabulary (nothing runs).
LINEAR_MEMORY_FULL = (4096, 1024, 131072)
LINEAR_MEMORY_QUICK = (64, 32, 512)
# (N, D, V, chunk) of the kernel-gradient accumulator loops.
ACCUMULATORS_FULL = (1024, 512, 32768, 1024)
ACCUMULATORS_QUICK = (16, 8, 256, 64)
# The smallest batch and kernel whose bfloat16 gradient the fused head writes in
# windows on a CPU, with the most windows per example (two).
WINDOWS_FULL = (1024, 1024, 32768)
WINDOWS_QUICK = (16, 8, 256)
# (N = M, D) of the contrastive rows, fused against the materialised loss, and the N of
# the row against optax's `ntxent` (its gradient needs far more than N^2 memory).
CONTRASTIVE_FULL = ((8192, 512), (16384, 512))
CONTRASTIVE_QUICK = ((64, 16),)
NTXENT_FULL = (1024, 512)
NTXENT_QUICK = (32, 16)
# The largest N whose training step fits in memory (compile-only): D, the first N, and the
# memory it must fit in (None: this machine's); the quick run's only exercises the search.
FITS_FULL = (512, 256, None)
FITS_QUICK = (16, 8, 2**20)
# (N, V) of the rows of cross-entropy's options (label smoothing, class weights).
OPTIONS_FULL = (4096, 32768)
OPTIONS_QUICK = (64, 512)


def progress(step: str, message: str) -> None:
    """One line per stage of a row, flushed, so a long run shows where it is."""
    print(f"{step} {message}", flush=True)


def _time_once(fn: Callable[[], Any], repeat: int = 1) -> float:
    """Seconds per call of `repeat` calls queued back to back, waited for once."""
    start = time.perf_counter()
    for _ in range(repeat - 1):
        fn()
    jax.block_until_ready(fn())
    return (time.perf_counter() - start) / repeat


def time_alternating(
    calls: Mapping[str, Callable[[], Any]],
    rounds: int,
    repeat: int = 1,
    samples: dict[str, list[float]] | None = None,
) -> dict[str, float]:
    """Median seconds per call, the calls interleaved round by round.

    `samples`, if given, receives every round's seconds per call, for ratios
    taken within a round (`round_ratios`).

    With `repeat > 1` each sample is the mean of that many calls queued without
    waiting, so a call much shorter than the host's dispatch-and-wait round trip
    (an accelerator's few milliseconds) is timed by the device's work.
    """
    for fn in calls.values():  # warm-up
        jax.block_until_ready(fn())
    taken: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            taken[name].append(_time_once(fn, repeat))
    if samples is not None:
        samples.update(taken)
    return {name: statistics.median(ts) for name, ts in taken.items()}


def round_ratios(samples: dict[str, list[float]], name: str, other: str) -> list[float] | None:
    """The lowest and highest ratio `name / other` of one round's times: the run's spread."""
    if name not in samples or other not in samples:
        return None
    ratios = [a / b for a, b in zip(samples[name], samples[other], strict=True)]
    return [min(ratios), max(ratios)]


def _jaxce_loss(x, y):
    return jaxce.softmax_cross_entropy(x, y)


def _optax_loss(x, y):
    import optax

    return optax.softmax_cross_entropy_with_integer_labels(x, y).mean()


def _plain_loss(x, y):
    log_probs = jax.nn.log_softmax(x.astype(jnp.float32), axis=-1)
    return -jnp.mean(jnp.take_along_axis(log_probs, y[:, None], axis=-1))


def _floor(select: bool) -> Callable:
    """The floor: the fewest passes a mean CE with an analytic gradient needs.

    The target logit is gathered (N reads), the forward is one pass summing
    `exp(x - x_y)` (no max pass), and the backward one pass writing
    `exp(x - lse) g / N`, its target entry fixed by a scatter-add (or, with
    `select`, by a select against the class index). No overflow fallback,
    weights, masks or checks: a reference to measure jaxce against, not a loss.
    """

    @jax.custom_vjp
    def loss(x, y):
        return fwd(x, y)[0]

    def fwd(x, y):
        xf = x.astype(jnp.float32)
        target = jnp.take_along_axis(xf, y[:, None], axis=1)
        nll = jnp.log(jnp.sum(jnp.exp(xf - target), axis=1, keepdims=True))
        return jnp.mean(nll), (x, y, target + nll)

    def bwd(res, g):
        x, y, lse = res
        n = x.shape[0]
        dx = jnp.exp(x.astype(jnp.float32) - lse) * (g / n)
        if select:
            onehot = jax.lax.broadcasted_iota(y.dtype, x.shape, 1) == y[:, None]
            dx = jnp.where(onehot, dx - g / n, dx)
        else:
            dx = dx.at[jnp.arange(n), y].add(-g / n)
        return dx.astype(x.dtype), None

    loss.defvjp(fwd, bwd)
    return loss


JAX_IMPLS: dict[str, Callable] = {
    "jaxce": _jaxce_loss,
    "optax": _optax_loss,
    "log_softmax": _plain_loss,
    "floor": _floor(select=False),
    "floor_select": _floor(select=True),
}


def compile_fn(loss: Callable, *args: Any, grad: bool = True) -> tuple[Any, float, int]:
    """The compiled `value_and_grad` (or the loss alone), its compile time (s) and temp bytes."""
    start = time.perf_counter()
    compiled = jax.jit(jax.value_and_grad(loss) if grad else loss).lower(*args).compile()
    seconds = time.perf_counter() - start
    memory = compiled.memory_analysis()
    temp = int(getattr(memory, "temp_size_in_bytes", -1)) if memory is not None else -1
    return compiled, seconds, temp


def full_size_exps(compiled: Any, n: int, v: int) -> int:
    """How many `exp` ops over a whole [n, v] array the compiled program holds."""
    return len(re.findall(rf"\w+\[{n},{v}\][^ ]* exponential\(", compiled.as_text()))


def make_data(n: int, v: int, dtype: Any, seed: int = 0) -> tuple[jax.Array, jax.Array]:
    key_x, key_y = jax.random.split(jax.random.PRNGKey(seed))
    x = (3 * jax.random.normal(key_x, (n, v), jnp.float32)).astype(dtype)
    y = jax.random.randint(key_y, (n,), 0, v)
    return x, y


def reference_loss(x: jax.Array, y: jax.Array) -> float:
    """Mean CE in float64 NumPy of the same (possibly bf16-rounded) logits."""
    x64 = np.asarray(x.astype(jnp.float32), np.float64)
    y64 = np.asarray(y)
    shift = x64.max(axis=1, keepdims=True)
    lse = shift[:, 0] + np.log(np.exp(x64 - shift).sum(axis=1))
    return float(np.mean(lse - x64[np.arange(len(y64)), y64]))


def torch_call(x: jax.Array, y: jax.Array, grad: bool = True) -> Callable[[], Any] | None:
    try:
        import torch
    except ImportError:
        return None
    torch_dtype = torch.bfloat16 if x.dtype == jnp.bfloat16 else torch.float32
    base = torch.from_numpy(np.array(x.astype(jnp.float32))).to(torch_dtype)
    labels = torch.from_numpy(np.array(y)).long()

    def call():
        logits = base.detach().requires_grad_(grad)
        loss = torch.nn.functional.cross_entropy(logits, labels)
        if grad:
            loss.backward()
        return jnp.zeros(())  # torch runs synchronously on CPU

    return call


def copy_calls(x: jax.Array) -> dict[str, Callable[[], Any]]:
    """The copy `x * 2` into a fresh buffer, and over its input's buffer (donated)."""
    copy = jax.jit(lambda a: a * 2).lower(x).compile()
    donated = jax.jit(lambda a: a * 2, donate_argnums=0).lower(x).compile()
    buffer = [x + 0]

    def copy_in_place() -> jax.Array:
        buffer[0] = donated(buffer[0])
        return buffer[0]

    return {"copy": functools.partial(copy, x), "copy_in_place": copy_in_place}


def record_ce_times(
    row: dict[str, Any], times: dict[str, float], forward_times: dict[str, float], nbytes: int
) -> None:
    """Writes a CE row's timings (the copies' and each implementation's) and byte rates.

    `nbytes` is the logits' size: the copy moves it twice, the loss three times.
    """
    row["copy_s"] = times.pop("copy")
    row["copy_in_place_s"] = times.pop("copy_in_place")
    row["copy_bytes_per_s"] = 2 * nbytes / row["copy_s"]
    for name, seconds in times.items():
        entry = row["impls"][name]
        entry["time_s"] = seconds
        entry["forward_time_s"] = forward_times[name]
        entry["bytes_per_s"] = 3 * nbytes / seconds
        entry["of_copy"] = entry["bytes_per_s"] / row["copy_bytes_per_s"]


def bench_ce(n: int, v: int, dtype: Any, rounds: int, step: str = "") -> dict[str, Any]:
    step = f"{step} ce {jnp.dtype(dtype).name} N={n} V={v}".lstrip()
    start = time.perf_counter()
    x, y = make_data(n, v, dtype)
    itemsize = jnp.dtype(dtype).itemsize
    row: dict[str, Any] = {"N": n, "V": v, "dtype": jnp.dtype(dtype).name, "impls": {}}
    calls: dict[str, Callable[[], Any]] = {}
    forward: dict[str, Callable[[], Any]] = {}
    ref = reference_loss(x, y)
    for name, loss in JAX_IMPLS.items():
        progress(step, f"{name}: compile")
        compiled, seconds, temp = compile_fn(loss, x, y)
        value = float(compiled(x, y)[0])
        loss_only, _, forward_temp = compile_fn(loss, x, y, grad=False)
        row["impls"][name] = {
            "compile_s": seconds,
            "temp_bytes": temp,
            "forward_temp_bytes": forward_temp,
            "loss_rel_err": abs(value - ref) / abs(ref),
            "exp_ops": full_size_exps(compiled, n, v),
        }
        calls[name] = functools.partial(compiled, x, y)
        forward[name] = functools.partial(loss_only, x, y)
    torch_fn = torch_call(x, y)
    if torch_fn is not None:
        row["impls"]["torch"] = {}
        calls["torch"] = torch_fn
        forward["torch"] = torch_call(x, y, grad=False)
    calls.update(copy_calls(x))
    progress(step, f"timing {', '.join(calls)}: {rounds} rounds")
    samples: dict[str, list[float]] = {}
    times = time_alternating(calls, rounds, samples=samples)
    progress(step, f"timing the forward alone of {', '.join(forward)}: {rounds} rounds")
    forward_samples: dict[str, list[float]] = {}
    forward_times = time_alternating(forward, rounds, samples=forward_samples)
    row["round_ratios"] = {
        "optax": round_ratios(samples, "jaxce", "optax"),
        "torch": round_ratios(samples, "jaxce", "torch"),
        "forward optax": round_ratios(forward_samples, "jaxce", "optax"),
    }
    record_ce_times(row, times, forward_times, n * v * itemsize)
    progress(step, f"done in {time.perf_counter() - start:.1f} s")
    return row


def torch_peak_bytes(call: Callable[[], Any]) -> tuple[int, int]:
    """Torch's CPU tensor allocations during one `call`: their peak, and what is left after it.

    `torch.profiler` with `profile_memory=True` records every allocation and
    free that torch's CPU allocator reports, with its size (frees negative);
    their running sum, in order, is the bytes allocated above those held
    before the call. What is left at the end is what the call returns
    (gradients, the loss). Python's allocator (tracemalloc) does not see
    torch's tensors, so it cannot measure them.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        call()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    current = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        current += event.nbytes()
        peak = max(peak, current)
    return peak, current


def torch_linear_heads(
    h: jax.Array, w_vd: jax.Array, y: jax.Array
) -> tuple[dict[str, dict[str, Any]], dict[str, Callable[[], Any]]] | str:
    """PyTorch's `linear_cross_entropy`, chunked and materialised, on a `[V, D]` weight.

    Returns each head's loss, gradients (of the hidden states and the weight,
    by `loss.backward()`), resolved options and measured peak memory, and the
    calls to time; or, where this PyTorch has no such function, why not.
    `LinearCrossEntropyOptions()` runs the chunked path at its defaults (it
    computes the gradients in the forward, a chunk of the batch at a time);
    `options=None` is the reference path, `cross_entropy(linear(h, W))`.
    """
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed"
    loss_fn = getattr(torch.nn.functional, "linear_cross_entropy", None)
    options_type = getattr(torch.nn, "LinearCrossEntropyOptions", None)
    if loss_fn is None or options_type is None:
        return f"torch {torch.__version__} has no torch.nn.functional.linear_cross_entropy"
    hidden = torch.from_numpy(np.array(h)).requires_grad_(True)
    weight = torch.from_numpy(np.array(w_vd)).requires_grad_(True)
    labels = torch.from_numpy(np.array(y)).long()
    n, d = hidden.shape
    v = weight.shape[0]

    def head(options: Any) -> Callable[[], Any]:
        def call() -> None:
            hidden.grad = weight.grad = None
            loss_fn(hidden, weight, labels, options=options).backward()
            # torch runs synchronously on CPU: nothing to wait for.

        return call

    rows: dict[str, dict[str, Any]] = {}
    calls: dict[str, Callable[[], Any]] = {}
    for name, options in (("torch_chunked", options_type()), ("torch_materialised", None)):
        hidden.grad = weight.grad = None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loss = loss_fn(hidden, weight, labels, options=options)
            loss.backward()
        row: dict[str, Any] = {
            "loss": float(loss.detach()),
            "grads": (hidden.grad.numpy().copy(), weight.grad.numpy().copy()),
            # A fallback to the reference path warns; none is expected here.
            "warnings": [str(w.message) for w in caught],
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        }
        if options is not None:
            try:  # what "auto" resolves to for this shape, dtype and device
                resolved = options._adjust(n, d, v, hidden.dtype, hidden.device)
                row["batch_chunk_size"] = resolved.batch_chunk_size
                row["acc_policy"] = resolved.acc_policy
            except (AttributeError, TypeError):
                pass
        hidden.grad = weight.grad = None
        row["peak_bytes"], row["returned_bytes"] = torch_peak_bytes(head(options))
        rows[name] = row
        calls[name] = head(options)
    return rows, calls


def _max_rel_diff(ours: Any, theirs: Any) -> float:
    """Largest |ours - theirs| over the largest |ours|, over matching arrays."""
    pairs = zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True)
    return max(
        float(np.max(np.abs(np.asarray(a) - b)) / max(np.max(np.abs(np.asarray(a))), 1e-30))
        for a, b in pairs
    )


def bench_linear(n: int, d: int, v: int, rounds: int, step: str = "") -> dict[str, Any]:
    step = f"{step} linear float32 N={n} D={d} V={v}".lstrip()
    row: dict[str, Any] = {"N": n, "D": d, "V": v}
    fused = getattr(jaxce, "linear_softmax_cross_entropy", None)
    if fused is None:
        row["skipped"] = "jaxce.linear_softmax_cross_entropy is not available"
        return row
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    h = jax.random.normal(keys[0], (n, d), jnp.float32)
    w = jax.random.normal(keys[1], (d, v), jnp.float32) / np.sqrt(d)
    y = jax.random.randint(keys[2], (n,), 0, v)

    def head(h, w):
        return jaxce.softmax_cross_entropy(h @ w, y)

    def fused_head(h, w):
        return fused(h, w, y)

    def fused_stats(h, w):
        # The statistics on request, with a z-loss built from the returned logsumexp.
        loss, stats = fused(h, w, y, return_stats=True)
        return loss + 1e-4 * jnp.mean(stats.logsumexp**2)

    def fused_vd(h, w):
        # The kernel as PyTorch lays out a linear layer's weight, [V, D].
        return fused(h, w, y, kernel_layout="VD")

    # PyTorch's weight is [V, D]; jaxce's fused_vd reads the same array.
    w_vd = w.T
    calls = {}
    heads = (
        ("materialised", head, w),
        ("fused", fused_head, w),
        ("fused_stats", fused_stats, w),
        ("four_matmuls", four_matmuls(n, v, min(v, max(128, (1 << 20) // n))), w),
        ("fused_vd", fused_vd, w_vd),
    )
    for name, loss, kernel in heads:
        progress(step, f"{name}: compile")
        start = time.perf_counter()
        compiled = jax.jit(jax.value_and_grad(loss, argnums=(0, 1))).lower(h, kernel).compile()
        memory = compiled.memory_analysis()
        value, grads = compiled(h, kernel)
        if name == "fused_vd":
            vd_grads = grads  # for the comparison with PyTorch's gradients
        row[name] = {
            "compile_s": time.perf_counter() - start,
            "temp_bytes": int(memory.temp_size_in_bytes) if memory is not None else -1,
            # The loss and both gradients: what a training step returns.
            "output_bytes": int(memory.output_size_in_bytes) if memory is not None else -1,
            "loss": float(value),
            "dot_ops": len(re.findall(r" (?:dot|convolution)\(", compiled.as_text())),
        }
        calls[name] = functools.partial(compiled, h, kernel)
    progress(step, "torch linear_cross_entropy: losses, gradients and peak memory")
    torch_heads = torch_linear_heads(h, w_vd, y)
    if isinstance(torch_heads, str):
        row["torch_skipped"] = torch_heads
        progress(step, f"torch linear_cross_entropy: not run ({torch_heads})")
    else:
        for name, entry in torch_heads[0].items():
            torch_grads = entry.pop("grads")
            entry["loss_rel_diff"] = abs(entry["loss"] - row["fused_vd"]["loss"]) / abs(
                row["fused_vd"]["loss"]
            )
            entry["grad_rel_diff"] = _max_rel_diff(vd_grads, torch_grads)
            row[name] = entry
        calls.update(torch_heads[1])
        # The sanity check of the method: the materialised path holds the N x V logits.
        mat_peak = row["torch_materialised"]["peak_bytes"]
        row["torch_peak_covers_logits"] = mat_peak >= n * v * 4
        worst = max(row[k]["loss_rel_diff"] for k in torch_heads[0])
        progress(
            step,
            f"torch: max loss rel. diff to jaxce {worst:.1e}; peak MiB "
            + ", ".join(f"{k} {row[k]['peak_bytes'] / 2**20:.1f}" for k in torch_heads[0])
            + f" (logits {n * v * 4 / 2**20:.0f})",
        )
    # One N x D x V matmul, the unit of both heads' work: the materialised head does
    # three (h W, and two for the gradients), the fused one four (h W again per chunk).
    matmul = jax.jit(lambda h, w: h @ w).lower(h, w).compile()
    calls["matmul"] = functools.partial(matmul, h, w)
    progress(step, f"timing {', '.join(calls)}: {rounds} rounds")
    samples: dict[str, list[float]] = {}
    times = time_alternating(calls, rounds, samples=samples)
    row["round_ratios"] = {
        "materialised": round_ratios(samples, "fused", "materialised"),
        "four_matmuls": round_ratios(samples, "four_matmuls", "materialised"),
        "torch_chunked": round_ratios(samples, "fused_vd", "torch_chunked"),
        "torch_materialised": round_ratios(samples, "fused_vd", "torch_materialised"),
        "fused torch_chunked": round_ratios(samples, "fused", "torch_chunked"),
    }
    row["matmul_s"] = times.pop("matmul")
    for name, seconds in times.items():
        row[name]["time_s"] = seconds
    return row


def four_matmuls(n: int, v: int, chunk: int) -> Callable:
    """The fused head's matmuls alone, the floor of a head that keeps no logits.

    A minimal loop written here, not in the library, at the fused head's chunk
    on a CPU (`chunk_size=None`): the forward computes each chunk's `h W_c`
    and sums its rows; the backward computes `h W_c` again, scales it by that
    per-row sum (so that nothing folds away), and turns it into `h^T dz` and
    `dz W_c^T`. Four N x D x V matmuls and no loss.
    """
    steps = v // chunk
    assert steps * chunk == v, (v, chunk)

    @jax.custom_vjp
    def loss(h, w):
        return _forward(h, w).sum()

    def _forward(h, w):
        def body(i, total):
            return total + jnp.sum(h @ jax.lax.dynamic_slice_in_dim(w, i * chunk, chunk, 1), 1)

        return jax.lax.fori_loop(0, steps, body, jnp.zeros((n,), h.dtype))

    def fwd(h, w):
        rows = _forward(h, w)
        return rows.sum(), (h, w, rows)

    def bwd(res, g):
        h, w, rows = res

        def body(i, grads):
            dh, dw = grads
            k = jax.lax.dynamic_slice_in_dim(w, i * chunk, chunk, 1)
            dz = (h @ k) * (g * rows)[:, None]
            dw = jax.lax.dynamic_update_slice_in_dim(dw, h.T @ dz, i * chunk, 1)
            return dh + dz @ k.T, dw

        return jax.lax.fori_loop(0, steps, body, (jnp.zeros_like(h), jnp.zeros_like(w)))

    loss.defvjp(fwd, bwd)
    return loss


def kernel_gradient_accumulators(
    n: int, d: int, v: int, chunk: int, rounds: int, windows: int = 4
) -> dict[str, Any]:
    """A bfloat16 kernel gradient written a chunk at a time, three ways.

    Three minimal loops, written here and not in the library: each writes
    `h^T dz` of a column chunk into a `[D, V]` gradient with a
    dynamic-update-slice: `uint16`, into uint16 bits for the whole kernel,
    bit-cast to bfloat16 at the end (the fused head on an accelerator);
    `bfloat16`, straight into bfloat16; `windows`, into uint16 bits for one
    window of `V / windows` columns, each window written into the bfloat16
    gradient once it is full (the fused head on a CPU, for a large batch and
    kernel). Their compiled temp and time show what each costs on this backend.
    """
    progress(f"kernel-gradient accumulators bfloat16 N={n} D={d} V={v}", "compile")
    keys = jax.random.split(jax.random.PRNGKey(3))
    h = jax.random.normal(keys[0], (n, d), jnp.bfloat16)
    # float32, so that slicing it needs no widened copy on any backend.
    dz = jax.random.normal(keys[1], (n, v), jnp.float32)
    per = v // chunk // windows

    def write(h: jax.Array, dz: jax.Array, acc: jax.Array, i: jax.Array, at: Any) -> jax.Array:
        """Chunk `i`'s `h^T dz`, in `acc`'s dtype (bits or bfloat16), written at column `at`."""
        block = jax.lax.dynamic_slice_in_dim(dz, i * chunk, chunk, 1)
        update = jnp.dot(h.T, block, preferred_element_type=jnp.float32)
        update = jax.lax.bitcast_convert_type(update.astype(jnp.bfloat16), acc.dtype)
        return jax.lax.dynamic_update_slice_in_dim(acc, update, at, 1)

    def whole(dtype: Any) -> Callable:
        def step(h: jax.Array, dz: jax.Array) -> jax.Array:
            def body(i: jax.Array, acc: jax.Array) -> jax.Array:
                return write(h, dz, acc, i, i * chunk)

            acc = jax.lax.fori_loop(0, v // chunk, body, jnp.zeros((d, v), dtype))
            return jax.lax.bitcast_convert_type(acc, jnp.bfloat16)

        return step

    def in_windows(h: jax.Array, dz: jax.Array) -> jax.Array:
        def window(g: jax.Array, grad: jax.Array) -> jax.Array:
            def body(j: jax.Array, acc: jax.Array) -> jax.Array:
                return write(h, dz, acc, g * per + j, j * chunk)

            bits = jax.lax.fori_loop(0, per, body, jnp.zeros((d, per * chunk), jnp.uint16))
            bits = jax.lax.bitcast_convert_type(bits, jnp.bfloat16)
            return jax.lax.dynamic_update_slice_in_dim(grad, bits, g * per * chunk, 1)

        return jax.lax.fori_loop(0, windows, window, jnp.zeros((d, v), jnp.bfloat16))

    row: dict[str, Any] = {"N": n, "D": d, "V": v, "chunk": chunk, "num_windows": windows}
    calls = {}
    loops = (
        ("uint16", whole(jnp.uint16)),
        ("bfloat16", whole(jnp.bfloat16)),
        ("windows", in_windows),
    )
    for name, loop in loops:
        compiled = jax.jit(loop).lower(h, dz).compile()
        row[name] = {
            "temp_bytes": int(compiled.memory_analysis().temp_size_in_bytes),
            # Whether XLA computes on the gradient in float32 (widened from bfloat16).
            "float32_accumulator": f"f32[{d},{v}]" in compiled.as_text(),
        }
        calls[name] = functools.partial(compiled, h, dz)
    times = time_alternating(calls, rounds)
    for name, seconds in times.items():
        row[name]["time_s"] = seconds
    return row


def kernel_gradient_windows(n: int, d: int, v: int, rounds: int) -> dict[str, Any]:
    """The bfloat16 fused head's training step with its kernel gradient in windows, and
    with one accumulator for the whole kernel, side by side: time and compiled temp.

    The library picks the windows (`_linear_chunks.backward_loop`); the one
    accumulator is what it does with fewer than `EXAMPLES_PER_FLUSH` examples per
    window, set here for the comparison and restored after it.
    """
    from jaxce import _linear_chunks

    progress(f"kernel-gradient windows bfloat16 N={n} D={d} V={v}", "compile")
    keys = jax.random.split(jax.random.PRNGKey(4), 3)
    h = jax.random.normal(keys[0], (n, d), jnp.bfloat16)
    w = (jax.random.normal(keys[1], (d, v)) / np.sqrt(d)).astype(jnp.bfloat16)
    y = jax.random.randint(keys[2], (n,), 0, v)

    def step(h: jax.Array, w: jax.Array) -> jax.Array:
        return jaxce.linear_softmax_cross_entropy(h, w, y)

    row: dict[str, Any] = {"N": n, "D": d, "V": v}
    calls = {}
    default = _linear_chunks.EXAMPLES_PER_FLUSH
    for name, per_flush in (("windows", default), ("one_accumulator", n + 1)):
        _linear_chunks.EXAMPLES_PER_FLUSH = per_flush
        jax.clear_caches()  # the plan is made when the loss is traced
        try:
            grad = jax.jit(jax.value_and_grad(step, argnums=(0, 1)))
            compiled = grad.lower(h, w).compile()
        finally:
            _linear_chunks.EXAMPLES_PER_FLUSH = default
            jax.clear_caches()
        text = compiled.as_text()
        row[name] = {
            "temp_bytes": int(compiled.memory_analysis().temp_size_in_bytes),
            # The widest uint16 buffer of the kernel's rows: the bits of one window (or of
            # the whole kernel).
            "window_columns": max(map(int, re.findall(rf"u16\[{d},(\d+)\]", text)), default=0),
        }
        calls[name] = functools.partial(compiled, h, w)
    progress(f"kernel-gradient windows bfloat16 N={n} D={d} V={v}", f"timing: {rounds} rounds")
    samples: dict[str, list[float]] = {}
    times = time_alternating(calls, rounds, samples=samples)
    row["round_ratios"] = round_ratios(samples, "windows", "one_accumulator")
    for name, seconds in times.items():
        row[name]["time_s"] = seconds
    return row


def linear_memory(
    n: int, d: int, v: int, chunks: tuple[int | None, ...] = (None,)
) -> list[dict[str, Any]]:
    """Compiled temp of the fused head's training step, as a share of the float32 logits.

    For each of `chunks` (None: the automatic chunk), in float32 and bfloat16,
    compiled for the default backend and not run.
    """
    rows = []
    for chunk in chunks:
        for dtype in (jnp.float32, jnp.bfloat16):
            progress(f"linear memory {jnp.dtype(dtype).name} N={n} D={d} V={v}", "compile")
            args = (
                jax.ShapeDtypeStruct((n, d), dtype),
                jax.ShapeDtypeStruct((d, v), dtype),
                jax.ShapeDtypeStruct((n,), jnp.int32),
            )

            def step(h: jax.Array, w: jax.Array, y: jax.Array, chunk=chunk) -> jax.Array:
                # As a training step calls it.
                return jaxce.linear_softmax_cross_entropy(h, w, y, chunk_size=chunk)

            grad = jax.jit(jax.value_and_grad(step, argnums=(0, 1)))
            temp = int(grad.lower(*args).compile().memory_analysis().temp_size_in_bytes)
            rows.append(
                {
                    "N": n,
                    "D": d,
                    "V": v,
                    "chunk": chunk,
                    "dtype": jnp.dtype(dtype).name,
                    "temp_bytes": temp,
                    "share_of_logits": temp / (n * v * 4),
                    # How many arrays of the kernel's size, in its own dtype, the temp could hold.
                    "kernel_sizes": temp / (d * v * jnp.dtype(dtype).itemsize),
                }
            )
    return rows


def distill_memory(n: int, d: int, v: int) -> dict[str, Any]:
    """Compiled temp of a distillation step: fused against student and teacher logits built."""
    progress(f"distillation memory float32 N={n} D={d} V={v}", "compile")
    args = tuple(
        jax.ShapeDtypeStruct(shape, jnp.float32) for shape in ((n, d), (d, v), (n, d), (d, v))
    ) + (jax.ShapeDtypeStruct((n,), jnp.int32),)
    options = dict(temperature=2.0, alpha=0.5)

    def fused(h, w, teacher_h, teacher_w, y):
        return jaxce.linear_distillation_loss(
            h, w, teacher_h, teacher_kernel=teacher_w, labels=y, **options
        )

    def materialised(h, w, teacher_h, teacher_w, y):
        student, teacher = h @ w, teacher_h @ teacher_w
        kd = jaxce.distillation_loss(student, teacher, temperature=options["temperature"])
        ce = jaxce.softmax_cross_entropy(student, y)
        return (1 - options["alpha"]) * kd + options["alpha"] * ce

    row: dict[str, Any] = {"N": n, "D": d, "V": v}
    for name, loss in (("fused", fused), ("materialised", materialised)):
        compiled = jax.jit(jax.value_and_grad(loss, argnums=(0, 1))).lower(*args).compile()
        row[name] = int(compiled.memory_analysis().temp_size_in_bytes)
    return row


def _fmt_ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1e3:.1f}"


def _gflops(matmuls: int, shape: dict[str, Any], seconds: float) -> str:
    """`matmuls` N x D x V products over `seconds`, in GFLOP/s."""
    return f"{matmuls * 2 * shape['N'] * shape['D'] * shape['V'] / seconds / 1e9:.0f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "–" if a is None or b is None else f"{a / b:.2f}×"


def _notes(row: dict[str, Any]) -> str:
    """What this run measured about one CE row; no cause that it did not measure."""
    impls = row["impls"]
    t = {name: impls[name]["time_s"] for name in ("jaxce", "optax", "floor", "floor_select")}
    exps = {k: impls[k]["exp_ops"] for k in ("jaxce", "optax", "floor")}
    temp = {k: impls[k]["temp_bytes"] / 2**20 for k in ("jaxce", "optax", "floor")}
    return (
        f"At N={row['N']}, V={row['V']}, {row['dtype']}: the floor (a minimal `custom_vjp` "
        "in `benchmarks/run.py`: the target gathered, one forward pass summing "
        "`exp(x - x_y)`, one backward pass) takes "
        f"{t['floor'] / t['optax']:.2f}× optax's time, the same with a select instead of "
        f"the scatter-add {t['floor_select'] / t['optax']:.2f}×, and jaxce "
        f"{t['jaxce'] / t['floor_select']:.2f}× the select floor's. The compiled programs "
        "evaluate `exp` over the N x V logits in "
        f"{exps['jaxce']} (jaxce; one is the overflow fallback, not run on these logits), "
        f"{exps['optax']} (optax) and {exps['floor']} (floor) places; compiled temp: jaxce "
        f"{temp['jaxce']:.1f} MiB, optax {temp['optax']:.1f} MiB, floor {temp['floor']:.1f} MiB. "
        "Every row writes its N x V gradient into a fresh buffer: the copy `x * 2` takes "
        f"{row['copy_s'] * 1e3:.1f} ms into a fresh buffer and "
        f"{row['copy_in_place_s'] * 1e3:.1f} ms over its donated input."
    )


def _targets(results: dict[str, Any]) -> list[str]:
    """The design targets against this run's largest shapes."""
    rows = {r["dtype"]: r for r in results["ce"] if (r["N"], r["V"]) == _largest(results)}
    if not rows:
        return []
    n, v = _largest(results)

    def ratio(row: dict[str, Any], other: str, key: str = "time_s") -> float | None:
        impls = row["impls"]
        other_s = impls.get(other, {}).get(key)
        return impls["jaxce"][key] / other_s if other_s else None

    def spread(row: dict[str, Any], key: str) -> list[float] | None:
        return row.get("round_ratios", {}).get(key)

    # (target, goal, measured, limit, unit[, per-round min and max of the ratio])
    checks: list[tuple[Any, ...]] = []
    if "float32" in rows:
        f32 = rows["float32"]
        checks += [
            (
                "CE fwd+bwd float32 vs optax",
                "≤ 0.9×",
                ratio(f32, "optax"),
                0.9,
                "×",
                spread(f32, "optax"),
            ),
            (
                "CE fwd+bwd float32 vs PyTorch",
                "≤ 0.5×",
                ratio(f32, "torch"),
                0.5,
                "×",
                spread(f32, "torch"),
            ),
            (
                "CE forward only float32 vs optax",
                "≤ 0.8×",
                ratio(f32, "optax", "forward_time_s"),
                0.8,
                "×",
                spread(f32, "forward optax"),
            ),
        ]
    if "bfloat16" in rows:
        bf16 = rows["bfloat16"]
        checks += [
            (
                "CE fwd+bwd bfloat16 vs optax",
                "≤ 0.65×",
                ratio(bf16, "optax"),
                0.65,
                "×",
                spread(bf16, "optax"),
            ),
            (
                "bfloat16 loss error vs float64",
                "≤ 1e-3",
                bf16["impls"]["jaxce"]["loss_rel_err"],
                1e-3,
                "",
            ),
        ]
    compile_s = max(r["impls"]["jaxce"]["compile_s"] for r in results["ce"])
    checks.append(("compile time, any shape", "≤ 2 s", compile_s, 2.0, " s"))
    lin = results["linear"]
    if "skipped" not in lin:
        mat, fus = lin["materialised"], lin["fused"]
        checks += [
            (
                "linear CE temp vs materialised",
                "≤ 5%",
                fus["temp_bytes"] / mat["temp_bytes"],
                0.05,
                "%",
            ),
            (
                "linear CE time vs materialised",
                "≤ 1.0×",
                fus["time_s"] / mat["time_s"],
                1.0,
                "×",
                spread(lin, "materialised"),
            ),
        ]
        torch_chunked = lin.get("torch_chunked", {}).get("time_s")
        checks.append(
            (
                "linear CE time vs PyTorch's chunked `linear_cross_entropy`, both [V, D]",
                "≤ 0.5×",
                lin["fused_vd"]["time_s"] / torch_chunked if torch_chunked else None,
                0.5,
                "×",
                spread(lin, "torch_chunked"),
            )
        )
    dist = results.get("distill_memory")
    if dist is not None:
        share = dist["fused"] / max(dist["materialised"], 1)
        checks.append(("fused distillation temp vs materialised", "≤ 5%", share, 0.05, "%"))
    for row, goal in zip(results.get("linear_memory", []), (0.02, 0.05), strict=False):
        name = f"linear CE compile-only temp, {row['dtype']}, V={row['V']}"
        checks.append((name, f"≤ {goal:.0%}", row["share_of_logits"], goal, "%"))
    lines = [
        "",
        f"## Targets (CE rows at N={n}, V={v})",
        "",
        "The ratios are of medians; `rounds` gives the lowest and highest ratio taken "
        "within one alternating round, the spread of this run.",
        "",
        "| target | goal | measured | rounds | met |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, goal, value, limit, unit, *rest in checks:
        if value is None:
            lines.append(f"| {name} | {goal} | not measured | – | - |")
            continue
        shown = (
            f"{value:.1%}" if unit == "%" else f"{value:.2g}" if not unit else f"{value:.2f}{unit}"
        )
        low_high = rest[0] if rest and rest[0] else None
        spread_text = "–" if low_high is None else f"{low_high[0]:.2f}–{low_high[1]:.2f}{unit}"
        met = value <= limit
        lines.append(f"| {name} | {goal} | {shown} | {spread_text} | {'yes' if met else 'no'} |")
    lines += [""] + [_notes(rows[d]) + "\n" for d in ("float32", "bfloat16") if d in rows]
    return lines


def _largest(results: dict[str, Any]) -> tuple[int, int]:
    return max((r["N"] * r["V"], (r["N"], r["V"])) for r in results["ce"])[1]


def _torch_linear_lines(lin: dict[str, Any]) -> list[str]:
    """The fused head against PyTorch's `linear_cross_entropy`, in the same rounds."""
    lines = ["", "### Against PyTorch's `linear_cross_entropy`", ""]
    if "torch_chunked" not in lin:
        reason = lin.get("torch_skipped", "not measured in this run")
        return lines + [f"PyTorch's `linear_cross_entropy`: not run ({reason})."]
    chunked, mat = lin["torch_chunked"], lin["torch_materialised"]
    vd = lin["fused_vd"]
    resolved = (
        f" (here batch chunks of {chunked['batch_chunk_size']} rows, "
        f'`acc_policy="{chunked["acc_policy"]}"`)'
        if "batch_chunk_size" in chunked
        else ""
    )
    lines += [
        f"PyTorch {chunked['torch']}'s `torch.nn.functional.linear_cross_entropy` on the same "
        "hidden states, labels and kernel, as a `[V, D]` weight (PyTorch's layout), both "
        f"gradients by `loss.backward()`, timed in the same rounds ({chunked['threads']} "
        "threads). `chunked` passes `options=LinearCrossEntropyOptions()`, its defaults"
        f"{resolved}: it computes the gradients in the forward, a chunk of the batch at a "
        "time. `materialised` passes `options=None`, `cross_entropy(linear(h, W))`. "
        'jaxce\'s `fused (VD)` reads the same `[V, D]` array (`kernel_layout="VD"`); '
        "`fused` and `materialised` take the `[D, V]` kernel.",
        "",
        "| head | kernel | ms | fused (VD) / it | across rounds | temp MiB "
        "| peak with outputs MiB | loss rel. diff | gradient rel. diff |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    spreads = lin["round_ratios"]
    rows = (
        ("jaxce fused", lin["fused"], "[D, V]", None),
        ("jaxce fused (VD)", vd, "[V, D]", None),
        ("jaxce materialised", lin["materialised"], "[D, V]", None),
        ("torch chunked", chunked, "[V, D]", spreads.get("torch_chunked")),
        ("torch materialised", mat, "[V, D]", spreads.get("torch_materialised")),
    )
    for name, entry, layout, spread in rows:
        if "peak_bytes" in entry:
            temp = entry["peak_bytes"] - entry["returned_bytes"]
            peak = entry["peak_bytes"]
            diffs = f"{entry['loss_rel_diff']:.1e} | {entry['grad_rel_diff']:.1e}"
        else:
            temp = entry["temp_bytes"]
            peak = entry["temp_bytes"] + entry.get("output_bytes", 0)
            diffs = "– | –"
        spread_text = "–" if spread is None else f"{spread[0]:.2f}–{spread[1]:.2f}×"
        lines.append(
            f"| {name} | {layout} | {_fmt_ms(entry['time_s'])} "
            f"| {_ratio(vd['time_s'], entry['time_s'])} | {spread_text} "
            f"| {temp / 2**20:.1f} | {peak / 2**20:.1f} | {diffs} |"
        )
    logits = lin["N"] * lin["V"] * 4
    fused_spread = spreads.get("fused torch_chunked")
    lines += [
        "",
        f"jaxce's fused head with its own `[D, V]` kernel takes "
        f"{_ratio(lin['fused']['time_s'], chunked['time_s'])} PyTorch's chunked time"
        + (
            ""
            if fused_spread is None
            else f" ({fused_spread[0]:.2f}–{fused_spread[1]:.2f}× across rounds)"
        )
        + ". `across rounds` is the lowest and highest ratio taken within one round. "
        "Loss and gradient differences are relative to jaxce's `fused (VD)`: the loss's "
        "difference over its value, and the largest absolute difference of either gradient "
        "over its largest entry.",
        "",
        "Memory. jaxce's is the compiled program's (`memory_analysis()`): temp, and temp plus "
        "its outputs (the loss and both gradients), an upper bound of what a step allocates "
        "besides its inputs. PyTorch's is measured on one call with `torch.profiler` "
        "(`profile_memory=True`): the running sum, in order, of every allocation and free "
        "that its CPU allocator reports; the peak of that sum above what was held before the "
        "call (with the gradients it returns) and, as temp, that peak less what the call "
        "leaves allocated (its gradients and loss). Check of the method: the materialised "
        f"path's peak, {mat['peak_bytes'] / 2**20:.1f} MiB, is "
        + ("at least" if lin["torch_peak_covers_logits"] else "below")
        + f" the N×V float32 logits ({logits / 2**20:.1f} MiB).",
    ]
    caught = [w for entry in (chunked, mat) for w in entry.get("warnings", [])]
    if caught:
        lines += ["", "PyTorch warned: " + "; ".join(sorted(set(caught)))]
    return lines


def _linear_lines(results: dict[str, Any]) -> list[str]:
    """The fused head's section: time and memory against the materialised head and PyTorch."""
    lin = results["linear"]
    lines = ["", "## Fused linear head vs materialised logits (float32)", ""]
    if lin.get("command", results["command"]) != results["command"]:
        lines += [
            f"From `{lin['command']}` on {lin['machine']}, median of {lin['rounds']} "
            "alternating rounds: a separate run from the rows above.",
            "",
        ]
    if "skipped" in lin:
        lines.append(f"N={lin['N']}, D={lin['D']}, V={lin['V']}: not run ({lin['skipped']}).")
    else:
        mat, fus = lin["materialised"], lin["fused"]
        lines += [
            "| N | D | V | time fused / materialised | temp fused / materialised "
            "| fused ms | materialised ms | fused temp MiB | materialised temp MiB |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
            f"| {lin['N']} | {lin['D']} | {lin['V']} | {_ratio(fus['time_s'], mat['time_s'])} "
            f"| {fus['temp_bytes'] / max(mat['temp_bytes'], 1):.1%} | {_fmt_ms(fus['time_s'])} "
            f"| {_fmt_ms(mat['time_s'])} | {fus['temp_bytes'] / 2**20:.1f} "
            f"| {mat['temp_bytes'] / 2**20:.1f} |",
            "",
            f"One `h @ W` ({_fmt_ms(lin['matmul_s'])} ms) is the unit of both heads' work: "
            f"the materialised head takes {mat['time_s'] / lin['matmul_s']:.2f} of it for its "
            "three matmuls (`h @ W` and the two of the gradient) and the loss between them; "
            f"the fused head {fus['time_s'] / lin['matmul_s']:.2f} for its four (it computes "
            "each chunk's logits again in the backward) and the loss on chunks. Counting "
            f"2·N·D·V per matmul, `h @ W` runs at {_gflops(1, lin, lin['matmul_s'])} GFLOP/s, "
            f"the materialised head at {_gflops(3, lin, mat['time_s'])} and the fused head at "
            f"{_gflops(4, lin, fus['time_s'])}.",
        ]
        floor = lin.get("four_matmuls")
        if floor is not None:
            rounds = lin["round_ratios"].get("four_matmuls")
            spread = "" if rounds is None else f" ({rounds[0]:.2f}–{rounds[1]:.2f}× across rounds)"
            lines += [
                "",
                "The fused head's four matmuls alone, at its chunk in a minimal loop without "
                f"the loss (`four_matmuls` in `benchmarks/run.py`), take {_fmt_ms(floor['time_s'])}"
                f" ms: {_ratio(floor['time_s'], mat['time_s'])} the materialised head's "
                f"time{spread}, and the fused head takes "
                f"{_ratio(fus['time_s'], floor['time_s'])} of it.",
            ]
        stats = lin.get("fused_stats")
        if stats is not None:
            lines += [
                "",
                "With `return_stats=True` (and a z-loss made from the returned logsumexp) the "
                f"fused head takes {_ratio(stats['time_s'], fus['time_s'])} its time, "
                f"{stats['temp_bytes'] / 2**20:.1f} MiB of temp, and its compiled program holds "
                f"{stats['dot_ops']} matmuls against {fus['dot_ops']} without statistics.",
            ]
        lines += _torch_linear_lines(lin)
    return lines


def to_markdown(results: dict[str, Any]) -> str:
    lines = [
        "# jaxce benchmark results",
        "",
        f"`{results['command']}` on {results['machine']} (jax {results['jax']}, "
        f"backend {results['backend']}). Forward + backward of the mean loss "
        "(`jax.value_and_grad`, jitted, warmed up); median of "
        f"{results['rounds']} alternating rounds. Bytes model: 3 passes over the logits "
        "(read twice, write the gradient once); the copy is `x * 2` on the same array "
        "(read once, write once), timed in the same rounds.",
        *_targets(results),
        "",
        "## Ratios (lower is better for time)",
        "",
        "| N | V | dtype | jaxce / optax | jaxce / torch | jaxce / log_softmax "
        "| jaxce / floor | floor / optax | forward: jaxce / optax | forward: floor / optax "
        "| jaxce of copy bw | jaxce loss rel. err | optax loss rel. err |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in results["ce"]:
        impls = row["impls"]
        t = {name: impls[name].get("time_s") for name in impls}
        fwd = {name: impls[name].get("forward_time_s") for name in impls}
        lines.append(
            f"| {row['N']} | {row['V']} | {row['dtype']} | {_ratio(t['jaxce'], t['optax'])} "
            f"| {_ratio(t['jaxce'], t.get('torch'))} | {_ratio(t['jaxce'], t['log_softmax'])} "
            f"| {_ratio(t['jaxce'], t['floor'])} | {_ratio(t['floor'], t['optax'])} "
            f"| {_ratio(fwd['jaxce'], fwd['optax'])} | {_ratio(fwd['floor'], fwd['optax'])} "
            f"| {impls['jaxce']['bytes_per_s'] / row['copy_bytes_per_s']:.0%} "
            f"| {impls['jaxce']['loss_rel_err']:.1e} | {impls['optax']['loss_rel_err']:.1e} |"
        )
    lines += [
        "",
        "## Absolute times (ms), compile (s) and compiled temp memory (MiB)",
        "",
        "| N | V | dtype | jaxce | optax | log_softmax | floor | floor_select | torch | copy "
        "| copy in place | copy GB/s | jaxce compile | optax compile | jaxce temp | optax temp "
        "| log_softmax temp | floor temp | jaxce exp ops | optax exp ops | floor exp ops |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- "
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in results["ce"]:
        impls = row["impls"]
        mib = {k: impls[k]["temp_bytes"] / 2**20 for k in JAX_IMPLS}
        ms = {k: _fmt_ms(impls.get(k, {}).get("time_s")) for k in (*JAX_IMPLS, "torch")}
        lines.append(
            f"| {row['N']} | {row['V']} | {row['dtype']} | {ms['jaxce']} | {ms['optax']} "
            f"| {ms['log_softmax']} | {ms['floor']} | {ms['floor_select']} | {ms['torch']} "
            f"| {_fmt_ms(row['copy_s'])} | {_fmt_ms(row['copy_in_place_s'])} "
            f"| {row['copy_bytes_per_s'] / 1e9:.1f} | {impls['jaxce']['compile_s']:.2f} "
            f"| {impls['optax']['compile_s']:.2f} | {mib['jaxce']:.1f} | {mib['optax']:.1f} "
            f"| {mib['log_softmax']:.1f} | {mib['floor']:.1f} | {impls['jaxce']['exp_ops']} "
            f"| {impls['optax']['exp_ops']} | {impls['floor']['exp_ops']} |"
        )
    lines += [
        "",
        "## Forward only (the loss without its gradient): ms and compiled temp (MiB)",
        "",
        "| N | V | dtype | jaxce | optax | log_softmax | floor | torch | jaxce temp "
        "| optax temp | floor temp |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in results["ce"]:
        impls = row["impls"]
        ms = {k: _fmt_ms(impls.get(k, {}).get("forward_time_s")) for k in (*JAX_IMPLS, "torch")}
        mib = {k: impls[k]["forward_temp_bytes"] / 2**20 for k in JAX_IMPLS}
        lines.append(
            f"| {row['N']} | {row['V']} | {row['dtype']} | {ms['jaxce']} | {ms['optax']} "
            f"| {ms['log_softmax']} | {ms['floor']} | {ms['torch']} | {mib['jaxce']:.1f} "
            f"| {mib['optax']:.1f} | {mib['floor']:.1f} |"
        )
    lines += _linear_lines(results)
    lines += [
        "",
        "## Fused head, compile only: temp of a training step vs the float32 logits",
        "",
        "The last column is temp over the kernel's own size: below 1 in bfloat16, the temp "
        "holds no copy of the kernel or of its gradient; `tests/test_linear.py::"
        "test_memory_large_vocabulary` checks that no kernel-sized buffer besides the "
        "kernel and its gradient exists.",
        "",
        "| N | D | V | dtype | temp MiB | share of float32 logits | temp / kernel size |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in results.get("linear_memory", []):
        lines.append(
            f"| {row['N']} | {row['D']} | {row['V']} | {row['dtype']} "
            f"| {row['temp_bytes'] / 2**20:.1f} | {row['share_of_logits']:.1%} "
            f"| {row['kernel_sizes']:.2f} |"
        )
    acc = results.get("accumulators")
    if acc is not None:
        kernel_mib = acc["D"] * acc["V"] * 2 / 2**20
        lines += [
            "",
            "How a bfloat16 kernel gradient is written: three minimal loops "
            f"(`kernel_gradient_accumulators`) write a `[{acc['D']}, {acc['V']}]` gradient "
            f"({kernel_mib:.0f} MiB) in chunks of {acc['chunk']} columns at N={acc['N']}: "
            "`uint16` into bits for the whole kernel, bit-cast at the end (the fused head on "
            "an accelerator); `bfloat16` straight into bfloat16; `windows` into bits for "
            f"one window of {acc['V'] // acc.get('num_windows', 1)} columns at a time, each "
            "written into the bfloat16 gradient when full (the fused head on a CPU, for "
            "a batch and a kernel large enough).",
            "",
            "| accumulator | ms | temp MiB | program widens it to float32 |",
            "| --- | --- | --- | --- |",
            *(
                f"| {name} | {_fmt_ms(acc[name]['time_s'])} "
                f"| {acc[name]['temp_bytes'] / 2**20:.1f} "
                f"| {'yes' if acc[name]['float32_accumulator'] else 'no'} |"
                for name in ("uint16", "bfloat16", "windows")
                if name in acc
            ),
        ]
    win = results.get("windows")
    if win is not None:
        ours, one = win["windows"], win["one_accumulator"]
        spread = win.get("round_ratios")
        lines += [
            "",
            f"The fused head's own training step in bfloat16 at N={win['N']}, D={win['D']}, "
            f"V={win['V']} (`kernel_gradient_windows`), with its kernel gradient's bits in "
            f"windows (of {ours['window_columns'] or 'no'} columns) and in one accumulator "
            f"(of {one['window_columns'] or 'no'}): "
            f"{_fmt_ms(ours['time_s'])} ms against {_fmt_ms(one['time_s'])} ms, "
            f"{_ratio(ours['time_s'], one['time_s'])}"
            + ("" if spread is None else f" ({spread[0]:.2f}–{spread[1]:.2f}× across rounds)")
            + f", and {ours['temp_bytes'] / 2**20:.1f} MiB of temp against "
            f"{one['temp_bytes'] / 2**20:.1f} MiB.",
        ]
    dist = results.get("distill_memory")
    if dist is not None:
        lines += [
            "",
            "## Fused distillation, compile only: temp of a training step",
            "",
            "`linear_distillation_loss` with the teacher as hidden states and its own kernel "
            "(T=2, alpha=0.5), against `distillation_loss` and `softmax_cross_entropy` on "
            "`h @ W` and the teacher's `h_t @ W_t`; gradients of the student's hidden states and "
            "kernel, float32.",
            "",
            "| N | D | V | fused temp MiB | materialised temp MiB | share |",
            "| --- | --- | --- | --- | --- | --- |",
            f"| {dist['N']} | {dist['D']} | {dist['V']} | {dist['fused'] / 2**20:.1f} "
            f"| {dist['materialised'] / 2**20:.1f} "
            f"| {dist['fused'] / max(dist['materialised'], 1):.1%} |",
        ]
    lines += _contrastive_lines(results.get("contrastive"))
    lines += _options_lines(results.get("options"))
    lines += [
        "",
        "## Accelerator rows",
        "",
        "Measured by `benchmarks/accelerator.py` on a machine whose default JAX backend is "
        "a GPU or TPU (`make bench` runs it too, and it says so when there is none); its "
        "latest results are in `benchmarks/results/accelerator/results.md`.",
    ]
    return "\n".join(lines) + "\n"


def _contrastive_lines(section: dict[str, Any] | None) -> list[str]:
    """The contrastive rows: CLIP fused against materialised, NT-Xent against optax."""
    if section is None:
        return []
    lines = [
        "",
        "## Contrastive losses: CLIP's training step, fused against materialised",
        "",
        "`contrastive_cross_entropy` against the same loss written with `jnp` on the N x M "
        "similarities; the value and the gradients of both towers and the temperature, "
        "float32.",
        "",
        "| N = M | D | fused temp MiB | materialised temp MiB | temp ratio "
        "| fused s | materialised s | time ratio |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in section["clip"]:
        fused, mat = row["fused"], row["materialised"]
        lines.append(
            f"| {row['N']} | {row['D']} | {fused['temp_bytes'] / 2**20:.1f} "
            f"| {mat['temp_bytes'] / 2**20:.1f} | {row['temp_ratio']:.2%} "
            f"| {fused['time_s']:.3f} | {mat['time_s']:.3f} | {row['time_ratio']:.2f}× |"
        )
    nt = section["ntxent"]
    lines += [
        "",
        f"NT-Xent at N={nt['N']}, D={nt['D']}, the gradient with respect to the views: "
        f"`ntxent_loss` {nt['jaxce']['time_s']:.3f} s and "
        f"{nt['jaxce']['temp_bytes'] / 2**20:.1f} MiB of temp, `optax.losses.ntxent` "
        f"{nt['optax']['time_s']:.3f} s and {nt['optax']['temp_bytes'] / 2**20:.1f} MiB "
        f"({nt['speedup']:.1f}× faster).",
    ]
    fits = section.get("fits")
    if fits:
        largest = ", ".join(f"{name} {n:,}" for name, n in fits["largest"].items())
        lines += [
            "",
            f"The largest N = M (D={fits['D']}) whose float32 training step fits in "
            f"{fits['limit_bytes'] / 2**30:.1f} GiB (arguments, outputs and temp from "
            f"`memory_analysis()`, compile-only): {largest}.",
        ]
    return lines


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["ce"]
    names = ["jaxce", "optax", "log_softmax", "floor", "torch"]
    labels = [f"{r['N']}×{r['V']}\n{r['dtype']}" for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(rows)), 4))
    width = 0.8 / (len(names) + 1)
    for i, name in enumerate(names):
        ms = [r["impls"].get(name, {}).get("time_s", np.nan) * 1e3 for r in rows]
        ax.bar(np.arange(len(rows)) + i * width, ms, width, label=name)
    copy_ms = [r["copy_s"] * 1e3 for r in rows]
    ax.bar(np.arange(len(rows)) + len(names) * width, copy_ms, width, label="copy (x*2)")
    ax.set_xticks(np.arange(len(rows)) + width * len(names) / 2, labels, fontsize=8)
    ax.set_ylabel("ms, forward + backward (median)")
    ax.set_yscale("log")
    ax.set_title(f"Softmax cross-entropy on {results['backend']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _clip_materialised(a: jax.Array, b: jax.Array, t: jax.Array) -> jax.Array:
    """CLIP written with `jnp` on the N x M similarities, autodiff for the gradient."""
    s = a @ b.T / t
    diagonal = jnp.sum(a * b, axis=1) / t
    rows = jax.nn.logsumexp(s, axis=1) - diagonal
    cols = jax.nn.logsumexp(s, axis=0) - diagonal
    return 0.5 * jnp.mean(rows + cols)


def bench_contrastive(
    shapes: tuple[tuple[int, int], ...],
    ntxent: tuple[int, int],
    fits: tuple[int, int, int | None],
    rounds: int,
    step: str = "",
) -> dict[str, Any]:
    """CLIP fused (`contrastive_cross_entropy`) against the materialised loss, fwd + bwd in
    float32 with a learned temperature: time ratio and compiled temp; NT-Xent against
    optax's `ntxent` at a size it fits; and the largest N each fits (`contrastive_fits`)."""
    rows = []
    for n, d in shapes:
        label = f"{step} contrastive float32 N=M={n} D={d}".lstrip()
        rng = np.random.default_rng(0)
        a, b = (jnp.asarray(rng.normal(size=(n, d)) / np.sqrt(d), jnp.float32) for _ in "ab")
        t = jnp.float32(0.07)
        losses = {
            "fused": lambda a, b, t: jaxce.contrastive_cross_entropy(a, b, temperature=t),
            "materialised": _clip_materialised,
        }
        row: dict[str, Any] = {"N": n, "M": n, "D": d}
        calls = {}
        for name, loss in losses.items():
            progress(label, f"compiling {name}")
            grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
            compiled = grad.lower(a, b, t).compile()
            value, _ = compiled(a, b, t)
            row[name] = {
                "temp_bytes": int(compiled.memory_analysis().temp_size_in_bytes),
                "loss": float(value),
            }
            calls[name] = functools.partial(compiled, a, b, t)
        progress(label, f"timing fused, materialised: {rounds} rounds")
        samples: dict[str, list[float]] = {}
        times = time_alternating(calls, rounds, samples=samples)
        for name, seconds in times.items():
            row[name]["time_s"] = seconds
        row["round_ratios"] = round_ratios(samples, "fused", "materialised")
        row["time_ratio"] = times["fused"] / times["materialised"]
        row["temp_ratio"] = row["fused"]["temp_bytes"] / row["materialised"]["temp_bytes"]
        row["similarities_bytes"] = 2 * n * n * 4  # the similarities and their gradient
        row["loss_rel_diff"] = abs(row["fused"]["loss"] - row["materialised"]["loss"]) / abs(
            row["materialised"]["loss"]
        )
        progress(
            label,
            f"time {row['time_ratio']:.2f}x the materialised loss; temp "
            f"{row['fused']['temp_bytes'] / 2**20:.1f} MiB vs "
            f"{row['materialised']['temp_bytes'] / 2**20:.1f} MiB "
            f"({100 * row['temp_ratio']:.2f}%)",
        )
        rows.append(row)
    return {
        "clip": rows,
        "ntxent": bench_ntxent(*ntxent, rounds, step),
        "fits": contrastive_fits(*fits, step),
    }


def bench_ntxent(n: int, d: int, rounds: int, step: str = "") -> dict[str, Any]:
    """`ntxent_loss` on L2-normalised views against `optax.losses.ntxent` (which normalises
    them itself), the gradient with respect to the views."""
    import optax

    label = f"{step} ntxent float32 N={n} D={d}".lstrip()
    z = jnp.asarray(np.random.default_rng(1).normal(size=(n, d)), jnp.float32)
    labels = jnp.arange(n) // 2

    def ours(z):
        unit = z / jnp.linalg.norm(z, axis=-1, keepdims=True)
        return jaxce.ntxent_loss(unit, temperature=0.1)

    def theirs(z):
        with jax.numpy_dtype_promotion("standard"):  # optax mixes booleans and integers
            return optax.losses.ntxent(z, labels, 0.1)

    row: dict[str, Any] = {"N": n, "D": d}
    calls = {}
    for name, loss in (("jaxce", ours), ("optax", theirs)):
        progress(label, f"compiling {name}")
        compiled = jax.jit(jax.value_and_grad(loss)).lower(z).compile()
        value, _ = compiled(z)
        row[name] = {
            "temp_bytes": int(compiled.memory_analysis().temp_size_in_bytes),
            "loss": float(value),
        }
        calls[name] = functools.partial(compiled, z)
    samples: dict[str, list[float]] = {}
    times = time_alternating(calls, rounds, samples=samples)
    for name, seconds in times.items():
        row[name]["time_s"] = seconds
    row["speedup"] = times["optax"] / times["jaxce"]
    row["loss_rel_diff"] = abs(row["jaxce"]["loss"] - row["optax"]["loss"]) / abs(
        row["optax"]["loss"]
    )
    progress(
        label,
        f"{row['speedup']:.1f}x faster than optax; temp "
        f"{row['jaxce']['temp_bytes'] / 2**20:.1f} MiB "
        f"vs {row['optax']['temp_bytes'] / 2**20:.0f} MiB",
    )
    return row


def _contrastive_shapes(quick: bool) -> tuple[Any, Any, Any]:
    if quick:
        return CONTRASTIVE_QUICK, NTXENT_QUICK, FITS_QUICK
    return CONTRASTIVE_FULL, NTXENT_FULL, FITS_FULL


def _step_bytes(name: str, n: int, d: int) -> int:
    """Arguments, outputs and temp of a float32 training step at N = M = n (compile-only)."""
    a = jax.ShapeDtypeStruct((n, d), jnp.float32)
    if name.startswith("NT-Xent"):
        import optax

        labels = np.arange(n) // 2

        def theirs(z):
            with jax.numpy_dtype_promotion("standard"):  # optax mixes booleans and integers
                return optax.losses.ntxent(z, labels, 0.1)

        def ours(z):
            return jaxce.ntxent_loss(z, temperature=0.1)

        loss, args = (ours if "jaxce" in name else theirs), (a,)
    else:
        fused = lambda a, b, t: jaxce.contrastive_cross_entropy(a, b, temperature=t)  # noqa: E731
        loss = fused if "fused" in name else _clip_materialised
        args = (a, a, jax.ShapeDtypeStruct((), jnp.float32))
    argnums = tuple(range(len(args)))
    compiled = jax.jit(jax.value_and_grad(loss, argnums=argnums)).lower(*args).compile()
    memory = compiled.memory_analysis()
    return int(
        memory.argument_size_in_bytes + memory.output_size_in_bytes + memory.temp_size_in_bytes
    )


def contrastive_fits(d: int, start: int, limit: int | None, step: str = "") -> dict[str, Any]:
    """The largest N (a multiple of 64 above `start`) whose training step fits in `limit`
    bytes (this machine's memory), from `memory_analysis()` alone: N doubles until the step
    no longer fits, then bisects. Every compiled size is kept as the memory curve."""
    limit = limit or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    names = ("CLIP fused", "CLIP materialised", "NT-Xent jaxce", "NT-Xent optax")
    section: dict[str, Any] = {"D": d, "limit_bytes": limit, "curve": {}, "largest": {}}
    for name in names:
        label = f"{step} fits {name} D={d}".lstrip()
        curve: dict[int, int] = {}

        def fits(n: int, name: str = name, curve: dict[int, int] = curve) -> bool:
            curve[n] = _step_bytes(name, n, d)
            return curve[n] <= limit

        good, bad = 0, start
        while fits(bad):
            good, bad = bad, 2 * bad
        while bad - good > max(64, good // 50):  # to 2%
            middle = (good + bad) // 2 // 64 * 64 or (good + bad) // 2
            good, bad = (middle, bad) if fits(middle) else (good, middle)
        section["curve"][name] = sorted(curve.items())
        section["largest"][name] = good
        progress(label, f"largest N {good} ({len(curve)} compilations)")
    return section


def _vocab_parallel(x: jax.Array, y: jax.Array, **options: Any) -> jax.Array:
    """`vocab_parallel_softmax_cross_entropy` in `shard_map` over one device (its whole slice)."""
    from jax.sharding import PartitionSpec as P

    mesh = jax.make_mesh((1,), ("vocab",), axis_types=(jax.sharding.AxisType.Auto,))

    def local(x, y):
        return jaxce.vocab_parallel_softmax_cross_entropy(x, y, axis_name="vocab", **options)

    return jax.shard_map(local, mesh=mesh, in_specs=(P(None, "vocab"), P()), out_specs=P())(x, y)


def bench_options(n: int, v: int, rounds: int, step: str = "") -> dict[str, Any]:
    """Cross-entropy's options, float32 fwd + bwd: time and compiled temp of each row, in
    the same alternating rounds; optax's smoothing is `smooth_labels` on one-hot labels.
    The probability-label rows take their labels as an argument, like the logits."""
    import optax

    label = f"{step} options float32 N={n} V={v}".lstrip()
    x, y = make_data(n, v, jnp.float32)
    w = jnp.linspace(0.5, 2.0, v, dtype=jnp.float32)

    def optax_smoothed(x, y):
        return jnp.mean(
            optax.softmax_cross_entropy(x, optax.smooth_labels(jax.nn.one_hot(y, v), 0.1))
        )

    losses = {
        "plain": _jaxce_loss,
        "smoothing": lambda x, y: jaxce.softmax_cross_entropy(x, y, label_smoothing=0.1),
        "smoothing, weights": lambda x, y: jaxce.softmax_cross_entropy(
            x, y, label_smoothing=0.1, weights=w
        ),
        "vocab-parallel smoothing": lambda x, y: _vocab_parallel(x, y, label_smoothing=0.1),
        "optax smoothing": optax_smoothed,
        "probability labels": lambda x, q: jaxce.softmax_cross_entropy(x, q),
        "optax probability labels": lambda x, q: jnp.mean(optax.softmax_cross_entropy(x, q)),
    }
    soft = jnp.full((n, v), 0.3 / (v - 1), jnp.float32).at[jnp.arange(n), y].set(0.7)
    rows: dict[str, Any] = {}
    calls = {}
    for name, loss in losses.items():
        progress(label, f"compiling {name}")
        labels = soft if "probability" in name else y
        compiled, _, temp = compile_fn(loss, x, labels)
        value, _ = compiled(x, labels)
        rows[name] = {"temp_bytes": temp, "loss": float(value)}
        calls[name] = functools.partial(compiled, x, labels)
    progress(label, f"timing {len(calls)} rows: {rounds} rounds")
    for name, seconds in time_alternating(calls, rounds).items():
        rows[name]["time_s"] = seconds
    smoothed = rows["smoothing"]
    progress(
        label,
        f"smoothing {smoothed['time_s'] / rows['optax smoothing']['time_s']:.2f}x optax, "
        f"{smoothed['time_s'] / rows['plain']['time_s']:.2f}x plain; temp "
        f"{smoothed['temp_bytes'] / 2**20:.1f} MiB",
    )
    return {"N": n, "V": v, "rows": rows}


def _options_lines(section: dict[str, Any] | None) -> list[str]:
    """The option rows: each against optax's smoothing and against the plain loss."""
    if section is None:
        return []
    rows = section["rows"]
    optax_s, plain_s = rows["optax smoothing"]["time_s"], rows["plain"]["time_s"]
    lines = [
        "",
        f"## Cross-entropy's options at N={section['N']}, V={section['V']}, float32",
        "",
        (
            f"`{section['command']}`, {section['rounds']} alternating rounds. "
            if "command" in section
            else ""
        )
        + "Forward + backward of the mean loss; `vocab-parallel` is "
        "`vocab_parallel_softmax_cross_entropy` in `shard_map` over one device (its whole "
        "slice); optax smooths one-hot labels (`optax.smooth_labels`); the probability "
        "labels (0.7 on the class, the rest spread evenly) are an argument, like the logits.",
        "",
        "| row | ms | temp MiB | / optax smoothing | / jaxce plain |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {_fmt_ms(row['time_s'])} | {row['temp_bytes'] / 2**20:.1f} "
            f"| {_ratio(row['time_s'], optax_s)} | {_ratio(row['time_s'], plain_s)} |"
        )
    return lines


def run_section_only(
    name: str, quick: bool, out: Path, rounds: int | None = None
) -> dict[str, Any]:
    """One section alone (`--only contrastive` or `--only options`), written into
    `out/results.json` (its own key, the other rows left as they are) and, after a full
    run there, into `out/results.md`."""
    rounds = rounds or (3 if quick else 5)
    command = "python benchmarks/run.py" + (" --quick" if quick else "") + f" --only {name}"
    if name == "contrastive":
        section = bench_contrastive(*_contrastive_shapes(quick), rounds, "[1/1]")
    else:
        section = bench_options(*(OPTIONS_QUICK if quick else OPTIONS_FULL), rounds, "[1/1]")
    section.update(
        command=command, machine=f"{platform.machine()}, {os.cpu_count()} CPUs", rounds=rounds
    )
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {"jax": jax.__version__}
    results[name] = section
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")
    if "ce" in results:
        (out / "results.md").write_text(to_markdown(results))
    return section


def run_linear_only(quick: bool, out: Path, rounds: int | None = None) -> dict[str, Any]:
    """The fused-head rows alone (`--only linear`), written into the results in `out`.

    They replace the fused-head section of `out/results.json` where one exists, labelled
    with their own command and rounds, and the Markdown is written again; the other rows
    and the plot are left as they are. Without earlier results, only this section is
    written.
    """
    rounds = rounds or (3 if quick else 7)
    command = "python benchmarks/run.py" + (" --quick" if quick else "") + " --only linear"
    row = bench_linear(*(LINEAR_QUICK if quick else LINEAR_FULL), rounds, "[1/1]")
    row.update(
        command=command,
        machine=f"{platform.machine()}, {os.cpu_count()} CPUs",
        rounds=rounds,
    )
    path = out / "results.json"
    if path.is_file():
        results = json.loads(path.read_text())
        results["linear"] = row
        markdown = to_markdown(results)
    else:
        results = {"command": command, "jax": jax.__version__, "linear": row}
        markdown = "\n".join(
            [
                "# jaxce benchmark results: the fused head",
                "",
                f"`{command}` on {row['machine']} (jax {jax.__version__}, backend "
                f"{jax.default_backend()}). Forward + backward of the mean loss, jitted and "
                f"warmed up; median of {rounds} alternating rounds.",
                *_linear_lines(results),
            ]
        )
        markdown += "\n"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")
    (out / "results.md").write_text(markdown)
    return results


def run(quick: bool, out: Path, rounds: int | None = None) -> dict[str, Any]:
    shapes = QUICK_SHAPES if quick else FULL_SHAPES
    rounds = rounds or (3 if quick else 7)
    results: dict[str, Any] = {
        "command": "python benchmarks/run.py" + (" --quick" if quick else ""),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "rounds": rounds,
        "ce": [],
    }
    total = 2 * len(shapes) + 2
    for i, (n, v) in enumerate(shapes):
        for j, dtype in enumerate((jnp.float32, jnp.bfloat16)):
            step = f"[{2 * i + j + 1}/{total}]"
            results["ce"].append(bench_ce(n, v, dtype, rounds, step))
    linear = LINEAR_QUICK if quick else LINEAR_FULL
    results["linear"] = bench_linear(*linear, rounds, f"[{total - 1}/{total}]")
    results["linear_memory"] = linear_memory(
        *(LINEAR_MEMORY_QUICK if quick else LINEAR_MEMORY_FULL)
    )
    results["distill_memory"] = distill_memory(*linear)
    results["accumulators"] = kernel_gradient_accumulators(
        *(ACCUMULATORS_QUICK if quick else ACCUMULATORS_FULL), rounds
    )
    if jax.default_backend() == "cpu":
        results["windows"] = kernel_gradient_windows(
            *(WINDOWS_QUICK if quick else WINDOWS_FULL), rounds
        )
    results["contrastive"] = bench_contrastive(
        *_contrastive_shapes(quick), rounds, f"[{total}/{total}]"
    )
    results["options"] = bench_options(*(OPTIONS_QUICK if quick else OPTIONS_FULL), rounds)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "results.md").write_text(to_markdown(results))
    plot(results, out / "results.png")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small shape, few rounds")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="output folder")
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds per row")
    parser.add_argument(
        "--only",
        choices=["linear", "contrastive", "options"],
        default=None,
        help="run one section: `linear`, the fused-head rows (against PyTorch too); "
        "`contrastive`, CLIP fused vs materialised and NT-Xent vs optax; `options`, "
        "cross-entropy with label smoothing and class weights",
    )
    args = parser.parse_args()
    if args.only in ("contrastive", "options"):
        section = run_section_only(args.only, args.quick, args.out, args.rounds)
        print(json.dumps(section, indent=1))
        return
    if args.only == "linear":
        run_linear_only(args.quick, args.out, args.rounds)
        print((args.out / "results.md").read_text())
        return
    results = run(args.quick, args.out, args.rounds)
    print(to_markdown(results))


if __name__ == "__main__":
    main()
