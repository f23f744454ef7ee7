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
