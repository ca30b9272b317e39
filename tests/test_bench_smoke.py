"""The benchmark script's code path on tiny shapes (no timings are asserted)."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench(monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "benchmarks" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "QUICK_SHAPES", [(8, 32)])
    monkeypatch.setattr(module, "LINEAR_QUICK", (8, 4, 32))
    monkeypatch.setattr(module, "LINEAR_MEMORY_QUICK", (8, 4, 32))
    monkeypatch.setattr(module, "CONTRASTIVE_QUICK", ((8, 4),))
    monkeypatch.setattr(module, "NTXENT_QUICK", (8, 4))
    monkeypatch.setattr(module, "FITS_QUICK", (4, 64, 2**17))
    monkeypatch.setattr(module, "OPTIONS_QUICK", (8, 32))
    return module


def test_quick_run_writes_results(bench, tmp_path):
    results = bench.run(quick=True, out=tmp_path, rounds=1)
    assert {path.name for path in tmp_path.iterdir()} == {
        "results.json",
        "results.md",
        "results.png",
    }
    assert json.loads((tmp_path / "results.json").read_text())["ce"][0]["N"] == 8
    assert [row["dtype"] for row in results["ce"]] == ["float32", "bfloat16"]
    for row in results["ce"]:
        for name in ("jaxce", "optax", "log_softmax"):
            assert row["impls"][name]["loss_rel_err"] < (
                1e-5 if row["dtype"] == "float32" else 1e-2
            )
        # The exp counter finds jaxce's forward sum and backward, and optax's one pass.
        assert row["impls"]["jaxce"]["exp_ops"] >= 2 and row["impls"]["optax"]["exp_ops"] >= 1
    # PyTorch's chunked and materialised `linear_cross_entropy`: jaxce's loss and gradients.
    for name in ("torch_chunked", "torch_materialised"):
        torch_row = results["linear"][name]
        assert torch_row["loss_rel_diff"] < 1e-5 and torch_row["grad_rel_diff"] < 1e-5
        assert not torch_row["warnings"]  # no fallback from the chunked path
    assert [row["dtype"] for row in results["linear_memory"]] == ["float32", "bfloat16"]
    assert all(row["temp_bytes"] > 0 for row in results["linear_memory"])
    # CLIP fused and materialised, NT-Xent and optax's `ntxent`: the same loss.
    contrastive = results["contrastive"]
    assert contrastive["clip"][0]["N"] == 8 and contrastive["clip"][0]["loss_rel_diff"] < 1e-5
    assert contrastive["ntxent"]["loss_rel_diff"] < 1e-5
    # Label smoothing: optax's smoothed one-hot labels, and the vocabulary-parallel loss.
    options = results["options"]["rows"]
    smoothed = options["smoothing"]["loss"]
    for name in ("optax smoothing", "vocab-parallel smoothing"):
        assert abs(options[name]["loss"] - smoothed) <= 1e-5 * abs(smoothed), name
    soft, optax_soft = (
        options[name]["loss"] for name in ("probability labels", "optax probability labels")
    )
    assert abs(soft - optax_soft) <= 1e-5 * abs(optax_soft)
    # The largest N that fits 128 KiB is the largest compiled N whose step fits it.
    fits = contrastive["fits"]
    for name, curve in fits["curve"].items():
        fitting = [n for n, size in curve if size <= fits["limit_bytes"]]
        assert fits["largest"][name] == max(fitting, default=0), name
        assert any(size > fits["limit_bytes"] for _, size in curve), name
    text = (tmp_path / "results.md").read_text()
    assert "jaxce / optax" in text and "Accelerator rows" in text
    assert "## Contrastive losses" in text
    assert "### Against PyTorch's `linear_cross_entropy`" in text


def test_torch_peak_sees_the_logits_only_when_materialised(bench):
    # The memory measurement tells the two paths apart by their 256 KiB of logits.
    n, d, v = 8, 2, 8192
    h, w_vd = np.ones((n, d), np.float32), np.full((v, d), 0.01, np.float32)
    rows, _ = bench.torch_linear_heads(h, w_vd, np.arange(n))
    assert rows["torch_materialised"]["peak_bytes"] >= n * v * 4
    assert rows["torch_chunked"]["peak_bytes"] < n * v * 4


def test_torch_rows_skip_without_linear_cross_entropy(bench, monkeypatch):
    monkeypatch.delattr(torch.nn.functional, "linear_cross_entropy")
    reason = bench.torch_linear_heads(np.ones((2, 2)), np.ones((3, 2)), np.zeros(2, np.int32))
    assert "linear_cross_entropy" in reason
    assert f"not run ({reason})" in bench._torch_linear_lines({"torch_skipped": reason})[-1]


def test_accelerator_script_runs_on_small_shapes(tmp_path, monkeypatch):
    # The accelerator rows' code path, on tiny shapes on whatever backend is here.
    spec = importlib.util.spec_from_file_location(
        "bench_accelerator", ROOT / "benchmarks" / "accelerator.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "SMALL", {"ce": (8, 32), "head": (8, 4, 300), "chunks": (128,)})
    argv = ["accelerator.py", "--small", "--rounds", "1", "--out", str(tmp_path)]
    monkeypatch.setattr("sys.argv", argv)
    module.main()
    results = json.loads((tmp_path / "results.json").read_text())
    assert [row["dtype"] for row in results["ce"]] == ["bfloat16", "float32"]
    assert set(results["head"]["variants"]) == {"materialised", "fused", "fused_128"}
    assert all(v["finite"] for v in results["head"]["variants"].values())
    # The float32 accuracy rows hold float32's precision on any backend.
    assert all(err < 1e-5 for k, err in results["accuracy"].items() if "float32" in k)
    assert "| target | goal | measured | met |" in (tmp_path / "results.md").read_text()
