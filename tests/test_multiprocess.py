"""jaxce across processes: 2 JAX processes on the loopback address (`JAXCE_PROCESSES=4` runs
4 by hand) form one system of 8 host devices, and each loss, statistic and training step
there equals the one-process result in every process (`tests/multiprocess_checks.py`, all
checks in one launch); a process killed mid-run ends the others with an error, not a hang.
"""

import time

import pytest

from tests import multiprocess

pytestmark = pytest.mark.host_devices

CHECKS = [
    # Softmax CE with class weights, ignore_index, smoothing and return_stats, logits split
    # over the classes across processes, on each kind of mesh; a 2-D mesh splits the
    # examples over the processes and the classes over each one's devices.
    "softmax_cross_entropy/stats/Auto",
    "softmax_cross_entropy/stats/Explicit",
    "softmax_cross_entropy/stats/no_set_mesh",
    "softmax_cross_entropy/stats/2d",
    # The fused heads with the kernel split over the vocabulary across processes.
    "linear_softmax_cross_entropy/Explicit",
    "linear_distillation_loss/Explicit",
    # CLIP's towers split over the processes: each device streams its own rows.
    "contrastive_cross_entropy/2d",
    "vocab_parallel_softmax_cross_entropy/shard_map",
    "calibration",  # CalibrationState per process, merged
    "global_mean",  # denominator= the global token count
    "training",  # examples/multihost.py: 20 data-parallel steps
]
PEER_GONE = "another task died"  # JAX's words in the processes left behind


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("processes")
    return multiprocess.run("tests.multiprocess_checks", folder, timeout=120)


@pytest.mark.parametrize("check", CHECKS)
def test_equals_one_process(check, results):
    for i, out in enumerate(results):
        assert out["results"].get(check) == "ok", f"process {i}: {out['results'].get(check)}"


def test_no_check_left_out(results):
    for out in results:
        assert sorted(out["results"]) == sorted(CHECKS)


@pytest.mark.parametrize("victim", [1, 0], ids=["peer", "coordinator"])
def test_killed_process_ends_the_others_with_an_error(victim, tmp_path):
    n = multiprocess.PROCESSES
    with multiprocess.Processes("tests.multiprocess", n, tmp_path, heartbeat_s=3) as procs:
        deadline = time.monotonic() + 60
        while not all("step 1:" in procs.output(i) for i in range(n)):
            assert time.monotonic() < deadline, procs.report()
            assert None in [p.poll() for p in procs.procs], procs.report()
            time.sleep(0.05)
        procs.procs[victim].kill()
        killed = time.monotonic()
        codes = procs.wait(timeout=60, grace=60)
        elapsed = time.monotonic() - killed
        for i in range(n):
            if i != victim:
                assert codes[i] not in (None, 0), procs.report()
                assert PEER_GONE in procs.output(i), procs.report()
        assert elapsed < 60


def test_a_failed_process_fails_the_run_with_every_output(tmp_path):
    with pytest.raises(AssertionError) as failure:
        multiprocess.run("tests.no_such_module", tmp_path, timeout=30)
    for i in range(multiprocess.PROCESSES):
        assert f"--- process {i}: exit status 1 ---" in str(failure.value)
    assert "No module named tests.no_such_module" in str(failure.value)
