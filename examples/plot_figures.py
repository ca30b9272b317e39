"""Draws the documentation's figures from jaxce's own functions.

Run with `make docs`, or directly:

    MPLBACKEND=Agg python examples/plot_figures.py --out docs/figures

Every curve is computed by jaxce (losses, gradients through `jax.grad`,
`softmax`, `calibration_curve`, `fit_temperature`), but the contrastive losses'
memory, which `make bench` measures from the compiled programs
(`benchmarks/results/results.json`); the script prints the numbers the guide
quotes and ends by checking that every figure was written.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import jaxce  # noqa: E402

DPI = 100
FIGSIZE = (6.4, 4.0)
BENCH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "results.json"


def _save(fig, out: pathlib.Path, name: str) -> pathlib.Path:
    path = out / name
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def bce_vs_mse(out: pathlib.Path) -> pathlib.Path:
    """Loss for a positive example as a function of the predicted probability."""
    z = jnp.linspace(-7.0, 7.0, 400)
    p = jax.nn.sigmoid(z)
    ones = jnp.ones_like(z)
    bce = jaxce.sigmoid_binary_cross_entropy(z, ones, reduction="none")
    mse = (p - 1.0) ** 2
    fig, ax = plt.subplots(figsize=FIGSIZE)
    ax.plot(p, bce, lw=2.5, label="cross-entropy  $-\\log p$")
    ax.plot(p, mse, lw=2.5, ls="--", label="squared error  $(1-p)^2$")
    ax.set(xlabel="predicted probability $p$ of the true class (label $y = 1$)", ylabel="loss")
    ax.set(title="Loss of a positive example", ylim=(0, 5))
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, out, "bce_vs_mse.png")


def gradient_magnitude(out: pathlib.Path) -> pathlib.Path:
    """|dL/dz| for y = 1 through jax.grad: cross-entropy keeps it near 1 when wrong."""
    z = jnp.linspace(-10.0, 10.0, 401)
    ones = jnp.ones_like(z)
    grad_bce = jax.grad(lambda t: jaxce.sigmoid_binary_cross_entropy(t, ones, reduction="sum"))(z)
    grad_mse = jax.grad(lambda t: jnp.sum((jax.nn.sigmoid(t) - 1.0) ** 2))(z)
    fig, ax = plt.subplots(figsize=FIGSIZE)
    ax.semilogy(z, jnp.abs(grad_bce), lw=2.5, label="cross-entropy: $|\\sigma(z) - 1|$")
    ax.semilogy(z, jnp.abs(grad_mse), lw=2.5, ls="--", label="squared error")
    ax.axvspan(-10, -2, color="tab:red", alpha=0.08, label="confidently wrong")
    ax.set(xlabel="logit $z$ (label $y = 1$)", ylabel="$|\\partial L / \\partial z|$")
    ax.set(title="Gradient magnitude with respect to the logit", ylim=(1e-5, 2))
    ax.legend(loc="lower left")
    ax.grid(alpha=0.3, which="both")
    return _save(fig, out, "gradient_magnitude.png")


def focal_loss(out: pathlib.Path) -> pathlib.Path:
    """Focal loss against the probability of the true class for several gammas."""
    p_t = jnp.linspace(0.01, 0.99, 300)
    z = jnp.log(p_t) - jnp.log1p(-p_t)
    ones = jnp.ones_like(z)
    fig, ax = plt.subplots(figsize=FIGSIZE)
    for gamma in (0.0, 0.5, 1.0, 2.0, 5.0):
        loss = jaxce.sigmoid_focal_loss(z, ones, alpha=None, gamma=gamma, reduction="none")
        label = f"$\\gamma = {gamma:g}$" + (" (cross-entropy)" if gamma == 0 else "")
        ax.plot(p_t, loss, lw=2, label=label)
    ax.axvspan(0.6, 1.0, color="tab:green", alpha=0.08, label="well-classified")
    ax.set(xlabel="probability of the true class $p_t$", ylabel="loss", ylim=(0, 4))
    ax.set(title="Focal loss $-(1 - p_t)^\\gamma \\log p_t$")
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, out, "focal_loss.png")


def softmax_temperature(out: pathlib.Path) -> pathlib.Path:
    """softmax(logits / T) for a fixed logit vector at several temperatures."""
    logits = jnp.array([3.0, 1.5, 1.0, 0.2, -1.0])
    temperatures = (0.5, 1.0, 2.0, 5.0)
    width = 0.8 / len(temperatures)
    classes = np.arange(logits.shape[0])
    fig, ax = plt.subplots(figsize=FIGSIZE)
    for i, t in enumerate(temperatures):
        probs = jaxce.softmax(logits, temperature=t)
        ax.bar(classes + (i - 1.5) * width, probs, width, label=f"$T = {t:g}$")
    ticks = [f"class {c}\n$x = {float(v):g}$" for c, v in enumerate(logits)]
    ax.set_xticks(classes, ticks)
    ax.set(ylabel="probability", title="softmax(logits / T)")
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, out, "softmax_temperature.png")


def label_smoothing(out: pathlib.Path) -> pathlib.Path:
    """Smoothed cross-entropy against the logit gap; the minimum is log(1 + K(1 - eps)/eps)."""
    k = 10
    gap = jnp.linspace(0.0, 12.0, 1201)
    logits = jnp.zeros((gap.shape[0], k)).at[:, 0].set(gap)
    labels = jnp.zeros(gap.shape, jnp.int32)
    fig, ax = plt.subplots(figsize=FIGSIZE)
    for eps in (0.0, 0.05, 0.1, 0.2):
        loss = jaxce.softmax_cross_entropy(logits, labels, label_smoothing=eps, reduction="none")
        (line,) = ax.plot(gap, loss, lw=2, label=f"$\\varepsilon = {eps:g}$")
        if eps:
            best = float(gap[jnp.argmin(loss)])
            closed_form = float(jnp.log1p(k * (1 - eps) / eps))
            assert abs(best - closed_form) < 0.02, (eps, best, closed_form)
            ax.plot(best, float(jnp.min(loss)), "o", color=line.get_color())
            print(f"label smoothing eps={eps:g}, K={k}: optimal logit gap {best:.2f}")
    ax.set(xlabel="logit gap  $x_y - x_c$  (all other logits equal)", ylabel="loss")
    ax.set(title=f"Label smoothing caps the logit gap (K = {k})", ylim=(0, 3))
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, out, "label_smoothing.png")


def overconfident_logits(n: int = 20000, k: int = 10, scale: float = 3.0, seed: int = 0):
    """Labels drawn from softmax(base); the model reports `scale * base` (over-confident)."""
    key_logits, key_labels = jax.random.split(jax.random.key(seed))
    base = 1.5 * jax.random.normal(key_logits, (n, k))
    labels = jax.random.categorical(key_labels, base)
    return scale * base, labels


def reliability_diagram(out: pathlib.Path) -> pathlib.Path:
    """Reliability diagram of over-confident logits, before and after temperature scaling.

    The temperature is fitted on one half of the examples (a validation split)
    and the diagram drawn on the other half.
    """
    logits, labels = overconfident_logits()
    half = logits.shape[0] // 2
    temperature = jaxce.fit_temperature(logits[:half], labels[:half])
    logits, labels = logits[half:], labels[half:]
    accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == labels)
    print(f"held-out accuracy {float(accuracy):.4f} (unchanged by temperature)")
    n_bins = 15
    fig, ax = plt.subplots(figsize=(5.2, 5.0))
    ax.plot([0, 1], [0, 1], color="gray", lw=1, ls=":", label="perfect calibration")
    for name, t in (("raw logits", 1.0), (f"T = {float(temperature):.2f}", temperature)):
        x = logits / t
        curve = jaxce.calibration_curve(x, labels, n_bins=n_bins)
        ece = jaxce.expected_calibration_error(x, labels, n_bins=n_bins)
        nll = jaxce.softmax_cross_entropy(x, labels)
        confidence = jnp.mean(jnp.max(jaxce.softmax(x), axis=-1))
        print(
            f"{name}: mean confidence {float(confidence):.4f}, ECE {float(ece):.4f}, "
            f"NLL {float(nll):.4f}"
        )
        ax.plot(curve.confidence, curve.accuracy, "o-", lw=2, label=f"{name} (ECE {ece:.3f})")
    ax.set(xlabel="confidence (mean top-label probability in bin)", ylabel="accuracy in bin")
    ax.set(title="Reliability diagram (held-out half)", xlim=(0, 1), ylim=(0, 1))
    ax.set_aspect("equal")
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    print(f"fitted temperature {float(temperature):.4f}")
    return _save(fig, out, "reliability_diagram.png")


def contrastive_memory(out: pathlib.Path) -> pathlib.Path:
    """A float32 training step's memory against N = M, as `make bench` measured it."""
    fits = json.loads(BENCH.read_text())["contrastive"]["fits"]
    fig, ax = plt.subplots(figsize=FIGSIZE)
    for name, curve in fits["curve"].items():
        n, size = np.array(curve, dtype=float).T
        largest = fits["largest"][name]
        ax.loglog(n, size / 2**30, marker="o", ms=3, label=f"{name}: largest N {largest:,}")
        print(f"{name}: the largest N that fits is {largest:,}")
    ax.axhline(fits["limit_bytes"] / 2**30, color="gray", ls=":", label="this machine's memory")
    ax.set(xlabel="N = M (rows of each tower)", ylabel="GiB: arguments, outputs and temp")
    ax.set(title=f"Contrastive training step, float32, D = {fits['D']} (compiled)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return _save(fig, out, "contrastive_memory.png")


FIGURES = (
    bce_vs_mse,
    gradient_magnitude,
    focal_loss,
    softmax_temperature,
    label_smoothing,
    reliability_diagram,
    contrastive_memory,
)


def main(argv: list[str] | None = None) -> list[pathlib.Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("docs/figures"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, draw in enumerate(FIGURES, 1):
        print(f"[{i}/{len(FIGURES)}] drawing {draw.__name__}", flush=True)
        paths.append(draw(args.out))
    for path in paths:
        print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths), "a figure is missing"
    assert len(set(paths)) == len(FIGURES), "figures must have distinct names"
    return paths


if __name__ == "__main__":
    main()
