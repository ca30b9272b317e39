"""The accelerator rows of the benchmark: softmax CE and the fused head on a GPU or TPU.

`python benchmarks/accelerator.py [--out DIR]` on a machine whose default JAX
backend is an accelerator (on a CPU it says so and writes nothing, unless
`--small`, which runs the same code on tiny shapes anywhere).

- **CE** (bfloat16 and float32, N=8192, V=131072): jaxce, optax, the floor
  variants of `run.py`, PyTorch on the same device, the copy `x * 2` into a
  fresh buffer and over its donated input, and the forward alone. The loss is
  compared with a float64 oracle of the same logits.
- **Fused head** (bfloat16, N=8192, D=4096, V=131072): the materialised head
  (`h @ W`, then the loss), the fused head at its automatic chunk and at a sweep
  of chunk sizes, and one `h @ W` matmul as the unit of work; time, compiled temp,
  and 8·N·D·V over the time against the matmul's 2·N·D·V rate.
- **Accuracy** on small shapes against the float64 oracles of `tests/reference.py`:
  the loss and its gradients, for the CE and the fused head, in float32 at full
  matmul precision and in bfloat16.

Every timed call is compiled and warmed up first; each sample is the mean of
`repeat` calls queued back to back, and each variant's time is the median of the
alternating rounds (`run.time_alternating`).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

HERE = Path(__file__).resolve().parent
# The checkout's jaxce and test oracles, and run.py beside this file.
sys.path[:0] = [str(HERE), str(HERE.parent)]

import run  # noqa: E402  (the CPU benchmark: its floor, data and timing)

import jaxce  # noqa: E402
from jaxce import _linear_chunks  # noqa: E402  (the automatic chunk, to label its row)
from tests import reference  # noqa: E402  (float64 NumPy oracles)

CE_SHAPE = (8192, 131072)
HEAD_SHAPE = (8192, 4096, 131072)
CHUNKS = (512, 1024, 2048, 4096, 8192, 16384)
MEMORY_SHAPE = run.LINEAR_MEMORY_FULL  # the CPU table's compile-only shape
SMALL = {"ce": (64, 1000), "head": (64, 32, 1000), "chunks": (128, 256)}


def _device() -> dict[str, Any]:
    device = jax.devices()[0]
    return {
        "backend": jax.default_backend(),
        "device": getattr(device, "device_kind", str(device)),
        "jax": jax.__version__,
    }


def _temp(compiled: Any) -> int:
    memory = compiled.memory_analysis()
    return int(getattr(memory, "temp_size_in_bytes", -1)) if memory is not None else -1


class _TorchSync:
    """Waits for PyTorch's queued work, as `jax.block_until_ready` waits for JAX's."""

    def block_until_ready(self) -> None:
        import torch

        torch.cuda.synchronize()


def _torch_ce(x: jax.Array, y: jax.Array, grad: bool) -> Callable[[], Any] | None:
    """`torch.nn.functional.cross_entropy` on the same logits on the GPU, if PyTorch has one."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    dtype = torch.bfloat16 if x.dtype == jnp.bfloat16 else torch.float32
    base = torch.from_numpy(np.asarray(x.astype(jnp.float32))).to("cuda", dtype)
    labels = torch.from_numpy(np.asarray(y)).to("cuda").long()

    def call() -> _TorchSync:
        logits = base.detach().requires_grad_(grad)
        loss = torch.nn.functional.cross_entropy(logits, labels)
        if grad:
            loss.backward()
        return _TorchSync()

    return call


def oracle_loss(x: jax.Array, y: jax.Array) -> float:
    """Mean CE in float64 of the same logits, a block of rows at a time (no jaxce code)."""
    total = 0.0
    labels = np.asarray(y)
    for start in range(0, x.shape[0], 512):
        block = np.asarray(x[start : start + 512].astype(jnp.float32), np.float64)
        shift = block.max(axis=1, keepdims=True)
        lse = shift[:, 0] + np.log(np.exp(block - shift).sum(axis=1))
        rows = np.arange(block.shape[0])
        total += float(np.sum(lse - block[rows, labels[start : start + 512]]))
    return total / x.shape[0]


def bench_ce(
    n: int, v: int, dtype: Any, rounds: int, repeat: int, out: Path | None
) -> dict[str, Any]:
    step = f"ce {jnp.dtype(dtype).name} N={n} V={v}"
    x, y = run.make_data(n, v, dtype)
    row: dict[str, Any] = {"N": n, "V": v, "dtype": jnp.dtype(dtype).name, "impls": {}}
    run.progress(step, "float64 oracle")
    ref = oracle_loss(x, y)
    calls: dict[str, Callable[[], Any]] = {}
    forward: dict[str, Callable[[], Any]] = {}
    for name in ("jaxce", "optax", "floor", "floor_select"):
        run.progress(step, f"{name}: compile")
        loss = run.JAX_IMPLS[name]
        compiled, seconds, temp = run.compile_fn(loss, x, y)
        loss_only, _, forward_temp = run.compile_fn(loss, x, y, grad=False)
        value = float(compiled(x, y)[0])
        row["impls"][name] = {
            "compile_s": seconds,
            "temp_bytes": temp,
            "forward_temp_bytes": forward_temp,
            "loss_rel_err": abs(value - ref) / abs(ref),
        }
        calls[name] = functools.partial(compiled, x, y)
        forward[name] = functools.partial(loss_only, x, y)
        if out is not None and name == "jaxce":
            (out / f"ce_{row['dtype']}.hlo.txt").write_text(compiled.as_text())
    torch_fn = _torch_ce(x, y, grad=True)
    if torch_fn is not None:
        row["impls"]["torch"] = {}
        calls["torch"] = torch_fn
        forward["torch"] = _torch_ce(x, y, grad=False)
    calls.update(run.copy_calls(x))
    run.progress(step, f"timing {', '.join(calls)}: {rounds} rounds of {repeat}")
    times = run.time_alternating(calls, rounds, repeat)
    forward_times = run.time_alternating(forward, rounds, repeat)
    run.record_ce_times(row, times, forward_times, n * v * jnp.dtype(dtype).itemsize)
    return row


def bench_head(
    n: int, d: int, v: int, chunks: tuple[int, ...], rounds: int, out: Path | None
) -> dict[str, Any]:
    step = f"fused head bfloat16 N={n} D={d} V={v}"
    keys = jax.random.split(jax.random.PRNGKey(2), 3)
    h = jax.random.normal(keys[0], (n, d), jnp.bfloat16)
    w = (jax.random.normal(keys[1], (d, v), jnp.float32) / np.sqrt(d)).astype(jnp.bfloat16)
    y = jax.random.randint(keys[2], (n,), 0, v)

    def materialised(h, w):
        return jaxce.softmax_cross_entropy(h @ w, y)

    def fused(chunk: int | None) -> Callable:
        return lambda h, w: jaxce.linear_softmax_cross_entropy(h, w, y, chunk_size=chunk)

    variants: dict[str, Callable] = {"materialised": materialised, "fused": fused(None)}
    variants.update({f"fused_{c}": fused(c) for c in chunks})
    auto = min(max(128, _linear_chunks.auto_chunk_elements() // n), v)
    row: dict[str, Any] = {
        "N": n,
        "D": d,
        "V": v,
        "dtype": "bfloat16",
        "auto_chunk": auto,
        "variants": {},
    }
    calls: dict[str, Callable[[], Any]] = {}
    forward: dict[str, Callable[[], Any]] = {}
    for name, loss in variants.items():
        run.progress(step, f"{name}: compile")
        start = time.perf_counter()
        compiled = jax.jit(jax.value_and_grad(loss, argnums=(0, 1))).lower(h, w).compile()
        seconds = time.perf_counter() - start
        loss_only = jax.jit(loss).lower(h, w).compile()
        value, (dh, dw) = compiled(h, w)
        row["variants"][name] = {
            "compile_s": seconds,
            "temp_bytes": _temp(compiled),
            "loss": float(value),
            "finite": bool(jnp.isfinite(dh).all() & jnp.isfinite(dw).all()),
        }
        calls[name] = functools.partial(compiled, h, w)
        forward[name] = functools.partial(loss_only, h, w)
        if out is not None and name == "fused":
            (out / "fused_bf16.hlo.txt").write_text(compiled.as_text())
    matmul = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
    calls["matmul"] = functools.partial(matmul.lower(h, w).compile(), h, w)
    run.progress(step, f"timing {len(calls)} variants: {rounds} rounds")
    times = run.time_alternating(calls, rounds)
    forward_times = run.time_alternating(forward, rounds)
    row["matmul_s"] = times.pop("matmul")
    row["matmul_flops_per_s"] = 2 * n * d * v / row["matmul_s"]
    for name, seconds in times.items():
        entry = row["variants"][name]
        entry["time_s"] = seconds
        entry["forward_time_s"] = forward_times[name]
        entry["flops_per_s"] = 8 * n * d * v / seconds
        entry["of_matmul"] = entry["flops_per_s"] / row["matmul_flops_per_s"]
    return row


def _rel(a: Any, b: Any) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def accuracy(n: int, d: int, v: int, chunk: int) -> dict[str, float]:
    """Relative errors of loss and gradients against the float64 oracles, on this device."""
    rng = np.random.default_rng(0)
    x = 3 * rng.standard_normal((n, v))
    y = rng.integers(0, v, n)
    y[::7] = -100
    weights = rng.uniform(0.5, 2.0, v)
    h = rng.standard_normal((n, d))
    w = rng.standard_normal((d, v)) / np.sqrt(d)
    where = y != -100
    out: dict[str, float] = {}
    with jax.default_matmul_precision("highest"):
        for dtype in (jnp.float32, jnp.bfloat16):
            name = jnp.dtype(dtype).name
            xd = jnp.asarray(x, dtype)
            x64 = np.asarray(xd.astype(jnp.float32), np.float64)
            loss, grad = jax.value_and_grad(
                lambda a: jaxce.softmax_cross_entropy(
                    a, y, weights=weights, ignore_index=-100, label_smoothing=0.1
                )
            )(xd)
            ref = reference.softmax_cross_entropy(
                x64, y, weights=weights, ignore_index=-100, label_smoothing=0.1
            )
            out[f"ce {name} loss"] = _rel(loss, ref)
            loss, grad = jax.value_and_grad(
                lambda a: jaxce.softmax_cross_entropy(a, y, weights=weights, ignore_index=-100)
            )(xd)
            labels = np.where(where, y, 0)
            ref_grad = reference.softmax_cross_entropy_grad(
                x64, labels, weights=weights, where=where
            )
            out[f"ce {name} grad"] = _rel(grad.astype(jnp.float32), ref_grad)
            hd, wd = jnp.asarray(h, dtype), jnp.asarray(w, dtype)
            h64 = np.asarray(hd.astype(jnp.float32), np.float64)
            w64 = np.asarray(wd.astype(jnp.float32), np.float64)
            loss, (dh, dw) = jax.value_and_grad(
                lambda a, b: jaxce.linear_softmax_cross_entropy(
                    a, b, y, ignore_index=-100, chunk_size=chunk
                ),
                argnums=(0, 1),
            )(hd, wd)
            z = h64 @ w64
            dz = reference.softmax_cross_entropy_grad(z, labels, where=where)
            out[f"fused {name} loss"] = _rel(
                loss, reference.softmax_cross_entropy(z, y, ignore_index=-100)
            )
            out[f"fused {name} d hidden"] = _rel(dh.astype(jnp.float32), dz @ w64.T)
            out[f"fused {name} d kernel"] = _rel(dw.astype(jnp.float32), h64.T @ dz)
    return out


def _targets(results: dict[str, Any]) -> list[str]:
    """The accelerator targets: CE against the copy's bandwidth, the fused head's matmul rate."""
    ce = next(r for r in results["ce"] if r["dtype"] == "bfloat16")["impls"]["jaxce"]
    head = results["head"]["variants"]["fused"]
    rows = [
        ("CE fwd+bwd bfloat16, of copy bandwidth (3-pass model)", 0.8, ce["of_copy"]),
        ("fused head bfloat16, of matmul rate (8·N·D·V)", 0.5, head["of_matmul"]),
    ]
    return [
        "| target | goal | measured | met |",
        "| --- | --- | --- | --- |",
        *(
            f"| {name} | ≥ {goal:.0%} | {value:.0%} | {'yes' if value >= goal else 'no'} |"
            for name, goal, value in rows
        ),
    ]


def to_markdown(results: dict[str, Any]) -> str:
    dev = results["device"]
    head = results["head"]
    lines = [
        "# jaxce benchmark results: accelerator",
        "",
        f"`{results['command']}` on {dev['device']} (jax {dev['jax']}, backend "
        f"{dev['backend']}). Forward + backward (`jax.value_and_grad`, jitted, warmed up); "
        f"median of {results['rounds']} alternating rounds.",
        "",
        f"## Targets (CE at N={results['ce'][0]['N']}, V={results['ce'][0]['V']}; fused head "
        f"at N={head['N']}, D={head['D']}, V={head['V']}, its automatic chunk)",
        "",
        *_targets(results),
        "",
        "## Softmax cross-entropy",
        "",
        "Bytes model: 3 passes over the logits (read twice, write the gradient once). "
        "`of copy` is that rate over the rate of the copy `x * 2` (read once, write once) "
        "into a fresh buffer, timed in the same rounds.",
        "",
        "| N | V | dtype | impl | ms | of copy | vs optax | forward ms | temp MiB "
        "| loss rel. err |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in results["ce"]:
        impls = row["impls"]
        optax_s = impls["optax"]["time_s"]
        for name, e in impls.items():
            temp = e.get("temp_bytes")
            err = e.get("loss_rel_err")
            lines.append(
                f"| {row['N']} | {row['V']} | {row['dtype']} | {name} "
                f"| {e['time_s'] * 1e3:.3f} | {e['of_copy']:.0%} "
                f"| {e['time_s'] / optax_s:.2f}× | {e['forward_time_s'] * 1e3:.3f} "
                f"| {'–' if temp is None else f'{temp / 2**20:.1f}'} "
                f"| {'–' if err is None else f'{err:.1e}'} |"
            )
        lines.append(
            f"| {row['N']} | {row['V']} | {row['dtype']} | copy (fresh / in place) "
            f"| {row['copy_s'] * 1e3:.3f} / {row['copy_in_place_s'] * 1e3:.3f} | 100% "
            f"| – | – | – | – |"
        )
    mat = head["variants"]["materialised"]
    lines += [
        "",
        f"## Fused head, bfloat16, N={head['N']}, D={head['D']}, V={head['V']}",
        "",
        f"One `h @ W` (bfloat16 in, float32 out) takes {head['matmul_s'] * 1e3:.2f} ms: "
        f"{head['matmul_flops_per_s'] / 1e12:.0f} TFLOP/s. `TFLOP/s` counts 8·N·D·V per "
        "training step (the fused head's four matmuls; the materialised head does three, "
        "so its figure is counted the same way for comparison). `fused` is the automatic "
        f"chunk ({head['auto_chunk']} columns here); `fused_c` sets `chunk_size=c`.",
        "",
        "`temp / kernel` is the temp over the bfloat16 kernel's size: below 1, no "
        "kernel-sized buffer is among the temporaries.",
        "",
        "| variant | ms | forward ms | TFLOP/s | of matmul | vs materialised | temp MiB "
        "| temp vs materialised | temp / kernel | compile s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    kernel_bytes = head["D"] * head["V"] * 2
    for name, e in head["variants"].items():
        lines.append(
            f"| {name} | {e['time_s'] * 1e3:.1f} | {e['forward_time_s'] * 1e3:.1f} "
            f"| {e['flops_per_s'] / 1e12:.0f} | {e['of_matmul']:.0%} "
            f"| {e['time_s'] / mat['time_s']:.2f}× | {e['temp_bytes'] / 2**20:.1f} "
            f"| {e['temp_bytes'] / max(mat['temp_bytes'], 1):.1%} "
            f"| {e['temp_bytes'] / kernel_bytes:.2f} | {e['compile_s']:.1f} |"
        )
    memory = results.get("compile_only")
    if memory:
        lines += [
            "",
            "## Fused head, compile only: temp of a training step",
            "",
            "The temp of `jax.value_and_grad` of the fused head over hidden and kernel, "
            "compiled for this device and not run, against the float32 logits and the "
            "kernel's own size; `auto` is the automatic chunk.",
            "",
            "| N | D | V | chunk | dtype | temp MiB | share of float32 logits | temp / kernel |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
            *(
                f"| {r['N']} | {r['D']} | {r['V']} | {r['chunk'] or 'auto'} | {r['dtype']} "
                f"| {r['temp_bytes'] / 2**20:.1f} | {r['share_of_logits']:.1%} "
                f"| {r['kernel_sizes']:.2f} |"
                for r in memory
            ),
        ]
    lines += [
        "",
        "## Accuracy on this device (relative error against float64 oracles)",
        "",
        "| quantity | rel. error |",
        "| --- | --- |",
        *(f"| {k} | {val:.1e} |" for k, val in results["accuracy"].items()),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "results" / "accelerator")
    parser.add_argument("--small", action="store_true", help="tiny shapes, any backend")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument(
        "--markdown", type=Path, help="only write results.md beside this results.json"
    )
    args = parser.parse_args()
    if args.markdown is not None:
        results = json.loads(args.markdown.read_text())
        (args.markdown.parent / "results.md").write_text(to_markdown(results))
        return
    if jax.default_backend() == "cpu" and not args.small:
        print("The default JAX backend is cpu: no accelerator rows to measure.")
        return
    ce_shape = SMALL["ce"] if args.small else CE_SHAPE
    head_shape = SMALL["head"] if args.small else HEAD_SHAPE
    chunks = SMALL["chunks"] if args.small else CHUNKS
    memory_shape = SMALL["head"] if args.small else MEMORY_SHAPE
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/accelerator.py" + (" --small" if args.small else "")
    results: dict[str, Any] = {
        "command": command,
        "device": _device(),
        "rounds": args.rounds,
    }
    run.progress("accuracy", "small shapes against float64")
    results["accuracy"] = accuracy(64, 32, 1000, chunk=256)
    results["ce"] = [
        bench_ce(*ce_shape, dtype, args.rounds, 5, args.out)
        for dtype in (jnp.bfloat16, jnp.float32)
    ]
    run.progress("fused head, compile only", f"N={memory_shape[0]} D={memory_shape[1]}")
    results["compile_only"] = run.linear_memory(*memory_shape, chunks=(None, 256))
    results["head"] = bench_head(*head_shape, chunks, max(3, args.rounds // 2), args.out)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    text = to_markdown(results)
    (args.out / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
