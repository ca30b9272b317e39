"""The wheel, installed in an empty virtual environment outside the checkout, works.

The wheel under test is `$JAXCE_WHEEL`, what `make dist` built: `make test-wheel`
runs this file, and the default test run leaves it out (`conftest.py`), so the
wheel is built and installed once per CI run. It is installed with pip into a fresh
virtual environment in a temporary folder, with jax and numpy resolved from the
package index like any user's install, and every check runs there with
`python -I` from that folder, so nothing can be imported from the source tree.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Iterator

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README_BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)

# One call of every family, with its value checked against a plain jax.numpy formula.
FAMILIES = {
    "softmax": """
        x = jnp.array([[2.0, 1.0, 0.1], [0.0, 5.0, 0.2]]); y = jnp.array([0, 1])
        loss, g = jax.value_and_grad(jaxce.softmax_cross_entropy)(x, y)
        want = jnp.mean(jax.nn.logsumexp(x, axis=-1) - x[jnp.arange(2), y])
        assert jnp.allclose(loss, want, rtol=1e-6), (loss, want)
        assert jnp.allclose(g, (jax.nn.softmax(x) - jax.nn.one_hot(y, 3)) / 2, atol=1e-6)
        """,
    "binary": """
        x = jnp.array([-3.0, 0.5, 4.0]); y = jnp.array([0.0, 1.0, 1.0])
        loss = jaxce.sigmoid_binary_cross_entropy(x, y)
        p = jax.nn.sigmoid(x)
        want = -jnp.mean(y * jnp.log(p) + (1 - y) * jnp.log1p(-p))
        assert jnp.allclose(loss, want, rtol=1e-5), (loss, want)
        assert jnp.allclose(jaxce.binary_cross_entropy(p, y), want, rtol=1e-5)
        """,
    "focal": """
        x = jnp.array([[2.0, 1.0, 0.1], [0.0, 5.0, 0.2]]); y = jnp.array([0, 1])
        assert jnp.allclose(jaxce.softmax_focal_loss(x, y, gamma=0.0),
                            jaxce.softmax_cross_entropy(x, y), rtol=1e-6)
        q = jax.nn.softmax(x)[jnp.arange(2), y]
        want = jnp.mean(-((1 - q) ** 2) * jnp.log(q))
        assert jnp.allclose(jaxce.softmax_focal_loss(x, y, gamma=2.0), want, rtol=1e-5)
        assert jnp.allclose(jaxce.poly1_cross_entropy(x, y, epsilon=1.0),
                            jaxce.softmax_cross_entropy(x, y) + jnp.mean(1 - q), rtol=1e-5)
        assert jnp.isfinite(jaxce.sigmoid_focal_loss(x[:, 0], jnp.array([1.0, 0.0])))
        """,
    "divergence": """
        s = jnp.array([[2.0, 1.0, 0.1]]); t = jnp.array([[0.5, 1.5, -1.0]])
        p = jax.nn.softmax(t)
        want = jnp.sum(p * (jnp.log(p) - jax.nn.log_softmax(s)))
        assert jnp.allclose(jaxce.kl_divergence(s, p), want, rtol=1e-5)
        assert jnp.allclose(jaxce.distillation_loss(s, t), want, rtol=1e-5)
        h = jaxce.entropy(t)
        assert jnp.allclose(h, -jnp.sum(p * jnp.log(p), axis=-1), rtol=1e-5)
        """,
    "calibration": """
        k1, k2 = jax.random.split(jax.random.key(0))
        base = jax.random.normal(k1, (4000, 5))
        labels = jax.random.categorical(k2, base)
        temperature = jaxce.fit_temperature(3.0 * base, labels)
        assert abs(float(temperature) - 3.0) < 0.5, temperature
        ece = jaxce.expected_calibration_error(base, labels)
        assert 0.0 <= float(ece) < 0.05, ece
        curve = jaxce.calibration_curve(base, labels, n_bins=10)
        assert int(curve.counts.sum()) == 4000
        """,
    "linear": """
        k1, k2 = jax.random.split(jax.random.key(1))
        h = jax.random.normal(k1, (16, 8)); w = jax.random.normal(k2, (8, 300))
        y = jnp.arange(16) * 17
        got = jax.grad(jaxce.linear_softmax_cross_entropy, argnums=(0, 1))(h, w, y)
        want = jax.grad(lambda h, w: jaxce.softmax_cross_entropy(h @ w, y), argnums=(0, 1))(h, w)
        for a, b in zip(got, want):
            assert jnp.allclose(a, b, atol=1e-5), float(jnp.max(jnp.abs(a - b)))
        t = jax.random.normal(k2, (16, 300))
        got = jaxce.linear_distillation_loss(h, w, t, temperature=2.0, chunk_size=64)
        want = jaxce.distillation_loss(h @ w, t, temperature=2.0)
        assert jnp.allclose(got, want, rtol=1e-5), (got, want)
        """,
    "parallel": """
        from jax.sharding import AxisType, PartitionSpec as P
        assert jax.device_count() == 2, jax.devices()
        mesh = jax.make_mesh((2,), ("vocab",), axis_types=(AxisType.Auto,))
        x = jax.random.normal(jax.random.key(2), (6, 10)); y = jnp.array([0, 9, 4, 5, 1, 7])
        local = lambda x, y: jaxce.vocab_parallel_softmax_cross_entropy(x, y, axis_name="vocab")
        specs = (P(None, "vocab"), P())
        run = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=P()))
        assert jnp.allclose(run(x, y), jaxce.softmax_cross_entropy(x, y), rtol=1e-6)
        """,
    "contrastive": """
        a, b = jax.random.normal(jax.random.key(3), (2, 5, 4))
        s = a @ b.T / 0.5
        rows = jax.nn.logsumexp(s, axis=1) - jnp.diag(s)
        columns = jax.nn.logsumexp(s, axis=0) - jnp.diag(s)
        got = jaxce.contrastive_cross_entropy(a, b, temperature=0.5, chunk_size=2)
        assert jnp.allclose(got, (rows.mean() + columns.mean()) / 2, rtol=1e-5), got
        """,
}


def _run(python: pathlib.Path, code: str, cwd: pathlib.Path) -> str:
    """Runs `code` in isolated mode from `cwd`; the environment's own packages only."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [str(python), "-I", "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def wheel() -> pathlib.Path:
    return pathlib.Path(os.environ["JAXCE_WHEEL"]).resolve()


@pytest.fixture(scope="module")
def env(wheel, tmp_path_factory) -> Iterator[tuple[pathlib.Path, pathlib.Path]]:
    """(python of the fresh environment, an empty working folder outside the checkout).

    The environment (about 600 MB with jaxlib) is removed when the module is done.
    """
    base = tmp_path_factory.mktemp("installed")
    assert ROOT not in base.parents, "the environment must lie outside the checkout"
    venv, work = base / "venv", base / "work"
    work.mkdir()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
        check=True,
        timeout=600,
    )
    yield python, work
    shutil.rmtree(base, ignore_errors=True)


def test_wheel_holds_the_library_only(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    version = wheel.name.split("-")[1]
    dist_info = f"jaxce-{version}.dist-info/"
    strays = [n for n in names if not n.startswith(("jaxce/", dist_info))]
    assert not strays, f"the wheel holds more than the library: {strays}"
    modules = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "jaxce").glob("*.py"))
    missing = [m for m in modules + ["jaxce/py.typed"] if m not in names]
    assert not missing, f"missing from the wheel: {missing}"
    assert f"{dist_info}licenses/LICENSE" in names


def test_wheel_metadata_names_license_and_dependencies(wheel):
    version = wheel.name.split("-")[1]
    metadata = zipfile.ZipFile(wheel).read(f"jaxce-{version}.dist-info/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata
    assert re.search(r"^Requires-Dist: jax>=", metadata, flags=re.M)
    assert re.search(r"^Requires-Dist: numpy>=", metadata, flags=re.M)
    assert "Requires-Python: >=3.11" in metadata


def test_imports_from_the_environment_not_the_checkout(env):
    python, work = env
    out = _run(python, "import jaxce, sys; print(jaxce.__file__); print(sys.prefix)", work)
    module, prefix = out.split()
    assert pathlib.Path(module).is_relative_to(prefix), (module, prefix)
    assert not pathlib.Path(module).is_relative_to(ROOT)


def test_version_equals_installed_metadata(env):
    python, work = env
    code = "import importlib.metadata as m, jaxce; print(jaxce.__version__, m.version('jaxce'))"
    module_version, dist_version = _run(python, code, work).split()
    assert module_version == dist_version


def test_py_typed_and_license_are_installed(env):
    python, work = env
    code = textwrap.dedent(
        """
        import importlib.metadata as m, json
        files = {f.as_posix(): str(f.locate()) for f in m.files("jaxce")}
        print(json.dumps(files))
        """
    )
    files = json.loads(_run(python, code, work))
    assert "jaxce/py.typed" in files
    licenses = [name for name in files if name.endswith("licenses/LICENSE")]
    assert licenses, f"no license file among {sorted(files)}"
    text = pathlib.Path(files[licenses[0]]).read_text()
    assert "Apache License" in text and "Version 2.0" in text


@pytest.mark.parametrize("index", range(len(README_BLOCKS)))
def test_readme_example_runs_installed(env, index):
    python, work = env
    _run(python, README_BLOCKS[index], work)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_runs_installed(env, family):
    python, work = env
    header = "import jax\nimport jax.numpy as jnp\nimport jaxce\n"
    _run(python, header + textwrap.dedent(FAMILIES[family]), work)
