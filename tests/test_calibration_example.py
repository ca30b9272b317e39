"""Smoke run of examples/digits_calibration.py at its reduced size (its own checks included)."""

import importlib.util
import pathlib

import jax

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "digits_calibration.py"


def _load():
    spec = importlib.util.spec_from_file_location("digits_calibration", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_digits_calibration_quick(tmp_path, capsys):
    # The example runs as user code does, under JAX's default promotion (optax's
    # Adam bias correction mixes a Python float with an int32 step count).
    with jax.numpy_dtype_promotion("standard"):
        results = _load().main(["--quick", "--out", str(tmp_path)])
    figure = tmp_path / "figures" / "digits_reliability.png"
    markdown = tmp_path / "digits_results.md"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = markdown.read_text()
    assert "figures/digits_reliability.png" in text
    names = [name for name in results if not name.startswith("_")]
    assert names == ["cross-entropy", "weighted CE", "focal (γ=2)", "label smoothing 0.1"]
    for name in names:
        assert f"| {name} |" in text
        for m in ("raw", "temperature", "vector"):
            assert f"| {name} | {m} |" in text
            measures = results[name]["test"][m]
            low, high = measures["ece_interval"]
            assert 0 <= low <= high and measures["ece_mass"] >= 0
            assert measures["rms_debiased"] <= measures["rms_mass"] + 1e-6
    assert "mean validation ECE" in capsys.readouterr().out
