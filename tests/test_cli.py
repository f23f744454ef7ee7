import json
from pathlib import Path

import pytest
import yaml

from dpflows.cli import main
from dpflows.experiments import load_config, names

ROOT = Path(__file__).resolve().parents[1]
TINY = {"experiment": "langevin_gaussian", "seed": 1, "num_particles": 300, "num_steps": 40, "record_every": 10}


def _write(tmp_path, cfg, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_run_writes_metrics_config_figures_and_report(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(_write(tmp_path, TINY)), "--out", str(out), "--no-progress"]) == 0
    assert "report.md" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"kl_particles_final", "kl_exact_ula_final", "wall_time_s"} <= set(metrics)
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["num_particles"] == 300
    assert resolved["condition_number"] == 10.0
    assert (out / "samples.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "kl.png").exists()
    report = (out / "report.md").read_text()
    assert "![kl.png](kl.png)" in report
    assert str(Path.home()) not in report
    # The particles must sit on the exact ULA curve: the run is scored, not just drawn.
    assert metrics["max_abs_z_mean_vs_exact_ula"] < 5


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_particle": 10}, "unknown config key 'num_particle'"),
        ({"step_size": -0.1}, "step_size must be > 0"),
        ({"step_size": 0.5}, "must be in (0, 2) for ULA to be stable"),
        ({"num_particles": "many"}, "config key 'num_particles' must be an int"),
        ({"record_every": 7}, "record_every (7) must divide num_steps (40)"),
        ({"experiment": "nope"}, "experiment must be one of"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_config_errors_name_the_key_and_leave_no_output(tmp_path, capsys, change, message):
    out = tmp_path / "out"
    assert main(["run", str(_write(tmp_path, {**TINY, **change})), "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_config_without_experiment_and_unsafe_yaml(tmp_path, capsys):
    cfg = {k: v for k, v in TINY.items() if k != "experiment"}
    assert main(["run", str(_write(tmp_path, cfg)), "--out", str(tmp_path / "o")]) == 2
    assert "must name its experiment" in capsys.readouterr().err
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text("experiment: !!python/object/apply:os.system ['echo pwned']\n")
    assert main(["run", str(unsafe), "--out", str(tmp_path / "o")]) == 2
    assert "not plain YAML" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2


def test_existing_output_needs_resume_or_overwrite(tmp_path, capsys):
    cfg = _write(tmp_path, TINY)
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert (
        main(["run", str(cfg), "--out", str(out), "--no-progress", "--resume"]) == 0
    )  # already done: resumes at the end
    changed = _write(tmp_path, {**TINY, "seed": 2}, "changed.yaml")
    assert main(["run", str(changed), "--out", str(out), "--resume"]) == 2
    assert "config key 'seed' differs" in capsys.readouterr().err
    assert main(["run", str(changed), "--out", str(out), "--overwrite", "--no-progress"]) == 0


def test_list_shows_kinds_and_configs(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    assert "langevin_gaussian" in text
    assert "configs/langevin_gaussian.yaml" in text


def test_every_committed_config_is_valid():
    configs = sorted((ROOT / "configs").glob("*.yaml"))
    assert configs
    for path in configs:
        exp, seed, _ = load_config(path)
        assert exp.name in names()
        assert seed >= 0


def test_demo_writes_a_report_with_figures(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--no-progress"]) == 0
    report = (out / "report.md").read_text()
    for name in names():
        assert f"## {name}" in report
    pngs = list(out.rglob("*.png"))
    assert pngs
    assert all(f"]({p.relative_to(out)})" in report for p in pngs)


# ----------------------------------------------------------------- errors: one line, exit 2, no traceback

import dataclasses  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402
import time  # noqa: E402

from dpflows import CheckpointError, FlowError, ResumeMismatchError  # noqa: E402
from dpflows.experiments import _registry  # noqa: E402


@dataclasses.dataclass(frozen=True)
class _StubConfig:
    fail: str = ""


_STUB_ERRORS = {
    "checkpoint": CheckpointError("checkpoint /x/step-1.npz holds pickled data"),
    "resume": ResumeMismatchError("cannot resume from /x: flow differs from the run that wrote it"),
    "flow": FlowError("run ended with non-finite particles:\nreduce step_size"),
    "value": ValueError("step_size must be > 0, got -1"),
    "type": TypeError("num_particles must be an int, got str 'many'"),
    "missing": FileNotFoundError("data file /nope.npz does not exist"),
}


def _stub(cfg, ctx):
    if cfg.fail:
        raise _STUB_ERRORS[cfg.fail]
    return {"ok": 1}, "stub ran"


@pytest.fixture
def stub(monkeypatch, tmp_path):
    """A tiny experiment kind, registered for one test only, that raises the error its config names."""
    exp = _registry.Experiment("errstub", _StubConfig, _stub, "test stub")
    monkeypatch.setitem(_registry._REGISTRY, "errstub", exp)
    return lambda fail: _write(tmp_path, {"experiment": "errstub", "fail": fail}, f"{fail or 'ok'}.yaml")


@pytest.mark.parametrize(
    ("fail", "message"),
    [
        ("checkpoint", "holds pickled data"),
        ("resume", "flow differs"),
        ("flow", "non-finite particles: reduce step_size"),  # a multi-line message becomes one line
        ("value", "step_size must be > 0"),
        ("type", "num_particles must be an int"),
        ("missing", "/nope.npz does not exist"),
    ],
)
def test_expected_errors_print_one_line_and_exit_2(stub, tmp_path, capsys, fail, message):
    assert main(["run", str(stub(fail)), "--out", str(tmp_path / "o")]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith("dpflows: error: ")
    assert message in captured.err
    assert "Traceback" not in captured.err


@pytest.mark.parametrize("how", ["flag", "flag-after", "env"])
def test_debug_shows_the_traceback(stub, tmp_path, monkeypatch, how):
    argv = ["run", str(stub("flow")), "--out", str(tmp_path / "o")]
    if how == "flag":
        argv = ["--debug", *argv]
    elif how == "flag-after":
        argv = [*argv, "--debug"]
    else:
        monkeypatch.setenv("DPFLOWS_DEBUG", "1")
    with pytest.raises(FlowError, match="non-finite"):
        main(argv)


def test_override_and_missing_file_errors_exit_2(stub, tmp_path, capsys):
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert err == f"dpflows: error: config file {tmp_path / 'missing.yaml'} does not exist\n"
    assert main(["run", str(stub("")), "--out", str(tmp_path / "o"), "--resume", "--overwrite"]) == 2
    assert "resume and overwrite exclude each other" in capsys.readouterr().err


def test_real_checkpoint_error_from_a_run_is_one_line(tmp_path, capsys):
    # A pickle planted among a real run's checkpoints: --resume must refuse it, in one line.
    cfg = _write(tmp_path, TINY)
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    ckpts = sorted(out.rglob("step-*.npz"))
    assert ckpts
    ckpts[-1].write_bytes(b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01.")  # pickle.dumps(1)
    capsys.readouterr()
    assert main(["run", str(cfg), "--out", str(out), "--no-progress", "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "pickled data" in err


# ----------------------------------------------------------------- the run folder lock

_LOCK_SCRIPT = textwrap.dedent(
    """
    import dataclasses, os, sys, time
    from pathlib import Path

    from dpflows.experiments import register
    from dpflows.cli import main


    @dataclasses.dataclass(frozen=True)
    class Cfg:
        gate: str = ""
        parts: int = 5


    @register("lock_stub", Cfg, description="holds its folder until the gate file appears")
    def _stub(cfg, ctx):
        gate = Path(cfg.gate)
        (gate.parent / f"started-{os.getpid()}").write_text("")
        for i in range(cfg.parts):
            (ctx.out / f"part-{i}.txt").write_text(str(os.getpid()))
        deadline = time.time() + 120
        while not gate.exists() and time.time() < deadline:
            time.sleep(0.02)
        return {"pid": os.getpid()}, "held"


    sys.exit(main(sys.argv[1:]))
    """
)


def _wait(pred, timeout=120.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


@dataclasses.dataclass(frozen=True)
class _LockConfig:
    gate: str = ""
    parts: int = 5


def _never_runs(cfg, ctx):
    raise AssertionError("a refused run must not start its experiment")


def test_two_racing_runs_on_one_folder_exactly_one_wins(tmp_path, capsys, monkeypatch):
    # Regression: `--overwrite` 8 s into a live run deleted its folder; `--resume` start-up deleted
    # a live run's temporary files. Two processes race with --overwrite onto one folder: one runs,
    # the other is refused at once, in one line naming the folder and the winner's pid.
    script = tmp_path / "lock_stub.py"
    script.write_text(_LOCK_SCRIPT)
    gate = tmp_path / "gate"
    cfg = _write(tmp_path, {"experiment": "lock_stub", "gate": str(gate)})
    out = tmp_path / "out"
    argv = [sys.executable, str(script), "run", str(cfg), "--out", str(out), "--no-progress", "--overwrite"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in "ab"]
    try:
        # The loser exits on its own while the winner waits at the gate.
        assert _wait(lambda: sum(p.poll() is not None for p in procs) >= 1), "neither run finished"
        loser = next(p for p in procs if p.poll() is not None)
        winner = next(p for p in procs if p is not loser)
        _, err = loser.communicate()
        assert loser.returncode == 2, err
        assert err.count("\n") == 1, err
        assert err.startswith("dpflows: error: ")
        assert f"{out} is in use by another dpflows run (pid {winner.pid})" in err
        assert winner.poll() is None
        assert [p.name for p in tmp_path.glob("started-*")] == [f"started-{winner.pid}"]
        assert _wait(lambda: len(list(out.glob("part-*.txt"))) == 5)
        # While the winner runs, no second run may touch its folder, whatever the flags.
        exp = _registry.Experiment("lock_stub", _LockConfig, _never_runs, "in-process twin of the stub")
        monkeypatch.setitem(_registry._REGISTRY, "lock_stub", exp)
        for flags in ([], ["--resume"], ["--overwrite"]):
            assert main(["run", str(cfg), "--out", str(out), "--no-progress", *flags]) == 2
            assert f"(pid {winner.pid})" in capsys.readouterr().err
        assert sorted(p.name for p in out.iterdir()) == ["config.resolved.json"] + [f"part-{i}.txt" for i in range(5)]
    finally:
        gate.write_text("")
        for p in procs:
            p.wait(timeout=120)
    out_text, err = winner.communicate()
    assert winner.returncode == 0, err
    assert json.loads((out / "metrics.json").read_text())["pid"] == winner.pid
    assert {(out / f"part-{i}.txt").read_text() for i in range(5)} == {str(winner.pid)}
    assert not list(tmp_path.rglob("*.tmp"))
    assert not list(tmp_path.glob(".*.lock"))  # released and removed


def test_resume_cleans_dead_runs_tmp_files_under_the_lock(stub, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["run", str(stub("")), "--out", str(out)]) == 0
    ckpt = out / "checkpoints" / "a"
    ckpt.mkdir(parents=True)
    (ckpt / "step-0000000010.npz.123.0123456789abcdef.tmp").write_bytes(b"torn")
    (out / "metrics.json.tmp").write_bytes(b"torn")
    assert main(["run", str(stub("")), "--out", str(out), "--resume"]) == 0
    assert not list(out.rglob("*.tmp"))


def test_folder_lock_is_exclusive_and_released(tmp_path):
    from dpflows._checkpoint import FolderLockedError, folder_lock

    out = tmp_path / "deep" / "out"
    with folder_lock(out) as lock_path:
        assert lock_path.read_text() == f"{os.getpid()}\n"
        # flock locks belong to open file descriptions: a second open in this process conflicts too.
        with pytest.raises(FolderLockedError, match=rf"{out} is in use .*\(pid {os.getpid()}\)"), folder_lock(out):
            pass
        assert lock_path.exists()  # the refused attempt did not remove the holder's lock file
    assert not lock_path.exists()
    with pytest.raises(RuntimeError, match="boom"), folder_lock(out):
        raise RuntimeError("boom")
    with folder_lock(out):  # released after an exception
        pass
