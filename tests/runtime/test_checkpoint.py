import pickle

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import dpflows
from dpflows import CheckpointError, Particles, ResumeMismatchError
from dpflows.langevin import ULA
from helpers import gaussian_target


@pytest.fixture
def ula():
    return ULA(gaussian_target(), step_size=0.05)


@pytest.fixture
def state(key):
    return Particles.uniform(jr.normal(key, (32, 2)))


def test_resume_from_a_partial_checkpoint_folder_is_bitwise_equal(ula, state, key, tmp_path):
    reference, ref_trace = dpflows.run(ula, state, key, 100, record_every=10)
    folder = tmp_path / "ckpt"
    full, _ = dpflows.run(ula, state, key, 100, record_every=10, checkpoint=folder, checkpoint_every=10)
    assert bool(jnp.all(full.x == reference.x))
    # Drop the newest checkpoints to emulate a run killed after step 40, then resume.
    files = sorted(folder.glob("step-*.npz"))
    assert [f.name for f in files] == ["step-0000000090.npz", "step-0000000100.npz"]  # keeps 2
    folder2 = tmp_path / "ckpt2"
    _run_until(ula, state, key, folder2, stop=40)
    resumed, trace = dpflows.run(ula, state, key, 100, record_every=10, checkpoint=folder2, checkpoint_every=10)
    assert bool(jnp.all(resumed.x == reference.x))
    assert bool(jnp.all(trace["energy"] == ref_trace["energy"]))  # each step's info exactly once
    assert trace["energy"].shape == (100,)
    assert bool(jnp.all(trace.states.x == ref_trace.states.x))
    assert not list(folder2.glob("*.tmp"))


def _run_until(flow, state, key, folder, stop, num_steps=100, every=10):
    """Write the checkpoints a run of `num_steps` would have written up to step `stop`."""
    import os

    os.environ["DPFLOWS_DEBUG_CHUNK_DELAY"] = "0"
    calls = {"n": 0}

    class Stop(Exception):
        pass

    from dpflows import _checkpoint

    original = _checkpoint.save

    def save_then_maybe_stop(folder_, step, *args, **kwargs):
        path = original(folder_, step, *args, **kwargs)
        calls["n"] += 1
        if step >= stop:
            raise Stop
        return path

    _checkpoint.save = save_then_maybe_stop
    try:
        with pytest.raises(Stop):
            dpflows.run(flow, state, key, num_steps, record_every=10, checkpoint=folder, checkpoint_every=every)
    finally:
        _checkpoint.save = original


def test_mismatched_resume_is_refused_naming_the_field(ula, state, key, tmp_path):
    folder = tmp_path / "ckpt"
    _run_until(ula, state, key, folder, stop=30)
    with pytest.raises(ResumeMismatchError, match="key differs"):
        dpflows.run(ula, state, jr.fold_in(key, 1), 100, record_every=10, checkpoint=folder, checkpoint_every=10)
    other = ULA(gaussian_target(), step_size=0.06)
    with pytest.raises(ResumeMismatchError, match="flow differs"):
        dpflows.run(other, state, key, 100, record_every=10, checkpoint=folder, checkpoint_every=10)
    with pytest.raises(ResumeMismatchError, match="chunk differs"):
        dpflows.run(ula, state, key, 100, record_every=10, checkpoint=folder, checkpoint_every=20)
    with pytest.raises(ResumeMismatchError, match="num_steps differs"):
        dpflows.run(ula, state, key, 200, record_every=10, checkpoint=folder, checkpoint_every=10)


def test_truncated_checkpoint_falls_back_to_the_previous_one(ula, state, key, tmp_path):
    reference, _ = dpflows.run(ula, state, key, 100, record_every=10)
    folder = tmp_path / "ckpt"
    _run_until(ula, state, key, folder, stop=50)
    newest = sorted(folder.glob("step-*.npz"))[-1]
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match=newest.name):
        resumed, _ = dpflows.run(ula, state, key, 100, record_every=10, checkpoint=folder, checkpoint_every=10)
    assert bool(jnp.all(resumed.x == reference.x))


def test_pickle_in_place_of_a_checkpoint_is_refused(ula, state, key, tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()

    class Boom:
        def __reduce__(self):  # would run on unpickling
            return (print, ("unpickled!",))

    (folder / "step-0000000010.npz").write_bytes(pickle.dumps(Boom()))
    with pytest.raises(CheckpointError, match="pickled data"):
        dpflows.run(ula, state, key, 100, checkpoint=folder, checkpoint_every=10)


def test_stale_tmp_files_are_removed(ula, state, key, tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "step-0000000010.npz.tmp").write_bytes(b"torn")
    dpflows.run(ula, state, key, 20, checkpoint=folder, checkpoint_every=10)
    assert not list(folder.glob("*.tmp"))
    with np.load(sorted(folder.glob("step-*.npz"))[-1], allow_pickle=False) as data:
        assert "__meta__" in data.files


def test_random_bytes_in_place_of_a_checkpoint_are_skipped_not_called_pickle(ula, state, key, tmp_path):
    # Regression: random bytes were reported as "pickled data" and blocked the resume.
    reference, _ = dpflows.run(ula, state, key, 100, record_every=10)
    folder = tmp_path / "ckpt"
    _run_until(ula, state, key, folder, stop=50)
    newest = sorted(folder.glob("step-*.npz"))[-1]
    newest.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.warns(UserWarning, match=rf"{newest.name}: not an npz archive"):
        resumed, _ = dpflows.run(ula, state, key, 100, record_every=10, checkpoint=folder, checkpoint_every=10)
    assert bool(jnp.all(resumed.x == reference.x))  # fell back to the previous checkpoint


def test_only_garbage_checkpoints_start_fresh(ula, state, key, tmp_path):
    reference, _ = dpflows.run(ula, state, key, 20)
    folder = tmp_path / "ckpt"
    folder.mkdir()
    for seed, name in enumerate(["step-0000000010.npz", "step-0000000020.npz"]):
        (folder / name).write_bytes(np.random.default_rng(seed).bytes(1000))
    with pytest.warns(UserWarning, match="not an npz archive"):
        fresh, _ = dpflows.run(ula, state, key, 20, checkpoint=folder, checkpoint_every=10)
    assert bool(jnp.all(fresh.x == reference.x))


@pytest.mark.parametrize("protocol", [0, 1, 2, 5])
def test_pickles_of_every_protocol_are_refused(ula, state, key, tmp_path, protocol):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "step-0000000010.npz").write_bytes(pickle.dumps({"state": [1.0, 2.0]}, protocol=protocol))
    with pytest.raises(CheckpointError, match="pickled data"):
        dpflows.run(ula, state, key, 100, checkpoint=folder, checkpoint_every=10)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_checkpoint_with_non_finite_state_is_refused_naming_the_leaf(ula, state, key, tmp_path, bad):
    from dpflows import _checkpoint

    folder = tmp_path / "ckpt"
    _run_until(ula, state, key, folder, stop=30)
    arrays, meta = _checkpoint.load_latest(folder)
    arrays["state/0"] = arrays["state/0"].copy()
    arrays["state/0"][3, 1] = bad
    _checkpoint.save(folder, meta["step"], arrays, {k: v for k, v in meta.items() if k not in ("format", "step")})
    with pytest.raises(CheckpointError, match=r"1 NaN(/inf)? entries in (leaf|the particles' x \(leaf) 'state/0'"):
        dpflows.run(ula, state, key, 100, record_every=10, checkpoint=folder, checkpoint_every=10)


def test_check_finite_allows_zero_weights():
    from dpflows._checkpoint import check_finite

    check_finite({"state/1": np.array([-np.inf, 0.0]), "info/energy": np.array([np.nan])}, "p")
    check_finite({"state/2": np.array([np.inf])}, "p")  # +inf sentinels in a carry are kept
    with pytest.raises(CheckpointError, match="leaf 'state/2'"):
        check_finite({"state/1": np.zeros(2), "state/2": np.array([np.nan])}, "p")


def test_resume_under_another_dtype_names_the_dtype(state, key, tmp_path):
    import jax

    folder = tmp_path / "ckpt"
    _run_until(ULA(gaussian_target(), step_size=0.05), state, key, folder, stop=30)
    with jax.enable_x64(True):
        ula64 = ULA(gaussian_target(dtype=jnp.float64), step_size=0.05)
        state64 = Particles.uniform(state.x.astype(jnp.float64))
        with pytest.raises(ResumeMismatchError, match="dtype differs: checkpoint float32, now float64"):
            dpflows.run(ula64, state64, key, 100, record_every=10, checkpoint=folder, checkpoint_every=10)


def test_tmp_files_are_per_writer_and_only_dead_writers_tmp_are_cleaned(tmp_path):
    import os
    import subprocess
    import sys

    from dpflows import _checkpoint

    # A live writer's temporary file (this process, just written) survives a cleaner.
    live = tmp_path / f"step-0000000010.npz.{os.getpid()}.0123456789abcdef.tmp"
    live.write_bytes(b"being written")
    dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = tmp_path / f"step-0000000020.npz.{int(dead_pid.stdout)}.fedcba9876543210.tmp"
    dead.write_bytes(b"torn")
    legacy = tmp_path / "step-0000000030.npz.tmp"  # the old single-name scheme: no live writer uses it
    legacy.write_bytes(b"torn")
    _checkpoint.clean_tmp(tmp_path)
    assert live.exists()
    assert not dead.exists()
    assert not legacy.exists()
    _checkpoint.clean_tmp(tmp_path, all_stale=True)  # only for a holder of the folder lock
    assert not live.exists()
    # Writers never share a temporary name, and leave none behind.
    _checkpoint.atomic_write_bytes(tmp_path / "a.bin", b"1")
    _checkpoint.atomic_write_bytes(tmp_path / "a.bin", b"2")
    assert (tmp_path / "a.bin").read_bytes() == b"2"
    assert not list(tmp_path.glob("*.tmp"))
    assert _checkpoint._tmp_name(tmp_path / "a.bin") != _checkpoint._tmp_name(tmp_path / "a.bin")
