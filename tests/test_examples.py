"""The example scripts run, with few steps, and do what they claim."""

import importlib.util
import math
import pathlib

import jax

ROOT = pathlib.Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(
        f"example_{name}", ROOT / "examples" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_linear_loss_falls(capsys):
    losses = _load("train_linear").train(steps=11)
    assert len(losses) == 11
    assert all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < 0.9 * losses[0], losses
    assert "Step 10" in capsys.readouterr().out


def test_plot_figures_writes_every_figure(tmp_path, capsys):
    paths = _load("plot_figures").main(["--out", str(tmp_path)])
    written = sorted(tmp_path.glob("*.png"))
    assert len(written) >= 5
    assert sorted(paths) == written
    for path in written:
        assert path.read_bytes()[:8] == PNG_SIGNATURE, path.name
        assert path.stat().st_size < 200_000, f"{path.name} is too large for the repository"
    out = capsys.readouterr().out
    assert "fitted temperature" in out


def test_contrastive_towers_learn_a_temperature(capsys):
    with jax.numpy_dtype_promotion("standard"):  # optax's Adam mixes integers and floats
        losses, model, _ = _load("contrastive").train(steps=30, every=10)
    assert all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < 0.8 * losses[0], losses
    assert abs(float(model.temperature()) - 0.07) > 1e-4  # learned, moved from its start
    assert "temperature" in capsys.readouterr().out
