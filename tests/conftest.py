"""Test-wide JAX settings: strict dtype and rank promotion catch silent promotions."""

import os

# The tests read values and compiled programs, not speed, and compile many small programs.
# LLVM's optimisation of the CPU code would be a fifth of the suite's time; the CPU's fusion
# emitters compile slower than its elemental ones by about a third; splitting each program's
# code for parallel compilation costs a tenth more than it saves. The programs whose last bit
# a test compares compile as a user's do (`helpers.SHIPPED`). XLA reads the flags when the
# CPU backend starts.
os.environ["XLA_FLAGS"] = " ".join(
    [
        os.environ.get("XLA_FLAGS", ""),
        "--xla_backend_optimization_level=0",
        "--xla_cpu_use_fusion_emitters=false",
        "--xla_cpu_parallel_codegen_split_count=1",
    ]
).strip()

import jax  # noqa: E402
import pytest  # noqa: E402

# The wheel from `make dist` is installed and tested by `make test-wheel`, which names it in
# $JAXCE_WHEEL; the default run does not build and install it a second time.
collect_ignore = [] if os.environ.get("JAXCE_WHEEL") else ["test_wheel.py"]

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")
if jax.default_backend() != "cpu":
    # A GPU may run float32 matmuls in TF32 (a 10-bit mantissa) at the default
    # precision; the tests hold float32 results to float32 tolerances everywhere.
    jax.config.update("jax_default_matmul_precision", "highest")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items):
    """`make test` runs pytest-xdist with `--dist loadgroup`; tests that share work run on one
    worker. Tests that start a subprocess with 8 host devices run first, each file's on one
    worker: the longest single steps of the suite then overlap the rest of it instead of
    ending it. A file's tests of one registry entry (their parameter `name`) share that
    loss's compiled programs, which another worker would compile again."""
    slow = [item for item in items if item.get_closest_marker("host_devices")]
    for item in items:
        name = getattr(item, "callspec", None) and item.callspec.params.get("name")
        if item in slow:
            item.add_marker(pytest.mark.xdist_group(item.path.stem))
        elif isinstance(name, str):
            item.add_marker(pytest.mark.xdist_group(f"{item.path.stem}:{name}"))
    items[:] = slow + [item for item in items if item not in slow]


@pytest.fixture
def x64():
    """Runs a test with 64-bit types enabled (float64 oracles, order-2 gradient checks)."""
    with jax.enable_x64(True):
        yield
