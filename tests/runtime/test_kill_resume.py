"""RUN-2: a CLI run killed with SIGKILL (twice) and resumed ends exactly where an uninterrupted run does."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "tiny_long.yaml"  # 200 steps, checkpoint every 10 (20 chunks)


class _Proc:
    """A CLI process whose stderr goes to a file (pipes left open would warn)."""

    def __init__(self, out, extra, env):
        cmd = [sys.executable, "-m", "dpflows.cli", "run", str(CONFIG), "--out", str(out), "--no-progress", *extra]
        self.log = Path(str(out) + f".{time.monotonic_ns()}.log")
        with open(self.log, "w") as fh:
            self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=fh)

    def wait(self, timeout=None):
        return self.proc.wait(timeout=timeout)

    def poll(self):
        return self.proc.poll()

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        return self.proc.returncode

    def stderr(self):
        return self.log.read_text()


def _cli(out, *extra, env=None):
    return _Proc(out, extra, env)


def _latest_step(out: Path) -> int:
    files = sorted((out / "checkpoints" / "ula").glob("step-*.npz"))
    return int(files[-1].stem.split("-")[1]) if files else 0


def _kill_when(proc, out, step, timeout=90):
    deadline = time.time() + timeout
    while _latest_step(out) < step:
        assert proc.poll() is None, proc.stderr()
        assert time.time() < deadline, "run did not reach the kill point"
        time.sleep(0.02)
    assert proc.kill() == -signal.SIGKILL


def _final_arrays(out: Path):
    latest = sorted((out / "checkpoints" / "ula").glob("step-*.npz"))[-1]
    with np.load(latest, allow_pickle=False) as data:
        return latest.name, {k: data[k] for k in data.files if k.startswith("a/state")}


def test_sigkill_twice_then_resume_matches_uninterrupted(tmp_path):
    env = {**os.environ, "DPFLOWS_DEBUG_CHUNK_DELAY": "0.15", "MPLBACKEND": "Agg"}
    reference = tmp_path / "reference"
    ref = _cli(reference, env={**os.environ, "MPLBACKEND": "Agg"})  # runs alongside the first kill

    out = tmp_path / "killed"
    _kill_when(_cli(out, env=env), out, 60)  # ≥ 30 % of 200 steps
    assert ref.wait(timeout=300) == 0, ref.stderr()
    first_kill = _latest_step(out)
    _kill_when(_cli(out, "--resume", env=env), out, max(140, first_kill + 10))
    assert not (out / "metrics.json").exists()
    # Without --resume an existing run is refused, and nothing is touched.
    refused = _cli(out, env=env)
    assert refused.wait(timeout=120) == 2
    assert "--resume" in refused.stderr()
    done = _cli(out, "--resume", env=env)
    assert done.wait(timeout=300) == 0, done.stderr()

    name_ref, arrays_ref = _final_arrays(reference)
    name_out, arrays_out = _final_arrays(out)
    assert name_ref == name_out == "step-0000000200.npz"
    for k, v in arrays_ref.items():
        np.testing.assert_array_equal(arrays_out[k], v)  # bitwise
    m_ref = json.loads((reference / "metrics.json").read_text())
    m_out = json.loads((out / "metrics.json").read_text())
    m_ref.pop("wall_time_s"), m_out.pop("wall_time_s")
    assert m_ref == m_out
    assert len(m_out["kl_curve"]["step"]) == 20  # every recorded step exactly once
    assert not list(out.rglob("*.tmp"))
