"""The benchmark script's code path on tiny shapes (no timings are asserted)."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench(monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "benchmarks" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "QUICK_SHAPES", [(8, 32)])
    monkeypatch.setattr(module, "LINEAR_QUICK", (8, 4, 32))
    monkeypatch.setattr(module, "LINEAR_MEMORY_QUICK", (8, 4, 32))
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
    assert [row["dtype"] for row in results["linear_memory"]] == ["float32", "bfloat16"]
    assert all(row["temp_bytes"] > 0 for row in results["linear_memory"])
    text = (tmp_path / "results.md").read_text()
    assert "jaxce / optax" in text and "Accelerator rows" in text


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
