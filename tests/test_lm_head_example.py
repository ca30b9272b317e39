"""Smoke test: the fused-head language model example trains and its loss falls."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_lm_head_example_quick():
    out = subprocess.run(
        [sys.executable, "examples/lm_head.py", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "fused" in out.stdout and "materialised" in out.stdout
