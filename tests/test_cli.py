import json
from pathlib import Path

import pytest
import yaml

from dpflows.cli import main
from dpflows.experiments import get, load_config, names, plan_sweep

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


def _committed_configs():
    configs = sorted((ROOT / "configs").rglob("*.yaml"))
    assert configs
    return configs


def test_list_shows_every_config_with_its_claim_and_wall_time_and_every_kind(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(["list"]) == 0
    configs_part, kinds_part = capsys.readouterr().out.split("Experiment kinds:")
    lines = configs_part.splitlines()
    claim_columns = set()
    for path in _committed_configs():
        about = yaml.safe_load(path.read_text())["about"]
        name = path.relative_to(ROOT / "configs").with_suffix("").as_posix()
        (line,) = [ln for ln in lines if ln.split()[:1] == [name]]
        assert about["claim"] in line
        assert about["wall_time"] in line
        claim_columns.add(line.index(about["claim"]))
    assert len(claim_columns) == 1  # aligned columns
    for kind in names():  # kinds without a config still show, with their description
        assert any(ln.startswith(f"{kind} ") and get(kind).description in ln for ln in kinds_part.splitlines()), kind


def test_list_recurses_into_subfolders_and_reports_unreadable_configs(tmp_path, capsys, monkeypatch):
    (tmp_path / "paper").mkdir()
    about = {"claim": "a claim in a subfolder", "wall_time": "1 s (measured)"}
    _write(tmp_path / "paper", {**TINY, "about": about}, "fig1.yaml")
    (tmp_path / "broken.yaml").write_text("experiment: [unclosed\n")
    monkeypatch.setenv("DPFLOWS_CONFIGS", str(tmp_path))
    assert main(["list"]) == 0
    text = capsys.readouterr().out.split("Experiment kinds:")[0]
    (line,) = [ln for ln in text.splitlines() if ln.startswith("paper/fig1 ")]
    assert "langevin_gaussian" in line
    assert "a claim in a subfolder" in line
    assert "1 s (measured)" in line
    assert "unreadable" in next(ln for ln in text.splitlines() if ln.startswith("broken "))


def test_every_committed_config_is_valid_and_says_what_it_claims_and_how_long_it_takes():
    for path in _committed_configs():
        exp, seed, _ = load_config(path)
        assert exp.name in names()
        assert seed >= 0
        about = yaml.safe_load(path.read_text()).get("about")
        assert isinstance(about, dict), f"{path}: no about: mapping"
        for key in ("claim", "wall_time"):
            assert isinstance(about.get(key), str), f"{path}: about.{key} missing"
            assert about[key].strip(), f"{path}: about.{key} is empty"
            assert "\n" not in about[key].strip(), f"{path}: about.{key} must be one line"


def test_demo_writes_a_report_with_figures(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--no-progress"]) == 0
    report = (out / "report.md").read_text()
    for name in names():
        assert f"## {name}" in report
    pngs = list(out.rglob("*.png"))
    assert pngs
    assert all(f"]({p.relative_to(out)})" in report for p in pngs)
    assert report.count("*Look for:*") == len(pngs)  # one "what to look for" line under every figure
    _check_demo_headlines({name: json.loads((out / name / "metrics.json").read_text()) for name in names()})


def _check_demo_headlines(m):
    """The demo's headline numbers show each method's point, with margins that hold over seeds 0-2.

    Each check fails for a broken, collapsed or stalled method; the margins were checked by hand on
    seeds 0, 1 and 2, each with fresh privacy noise (``reproducible_noise`` is off in the demo).
    """
    # AE-OT digits: the autoencoder reconstructs held-out digits far better than the constant "mean
    # training image" (a collapsed one scores about 1x), and the semi-discrete solver balances the cells
    # (n·max cell-mass error; ~100 when it has not moved).
    held = m["aeot_digits"]["held_out"]
    assert held["reconstruction_mse"] < 0.5 * held["mean_image_mse"]
    assert m["aeot_digits"]["solver"]["cell_mass_error"] < 5.0
    # AE-OT 2-D: the smoothed map covers every mode without mode mixture, unlike the MLP push-forward.
    toy = m["aeot_2d"]["eight_gaussians"]
    assert toy["smoothed"]["coverage"] == 1.0
    assert toy["smoothed"]["off_mode"] < 0.5 * toy["mlp"]["off_mode"]
    # Hopfield: a permuted stored cloud (reweight, level 0) is retrieved by the Sinkhorn memory (exactly
    # invariant) and much less often by the slot-wise Euclidean one; capacity: accuracy stays high as K grows.
    cells = [v for k, v in m["hopfield_perturbation"].items() if k.startswith("K=")]
    assert cells
    for cell in cells:
        permuted = cell["reweight"][0]
        assert permuted["level"] == 0.0
        assert permuted["sinkhorn"] == 1.0
        assert permuted["euclidean"] <= 0.9
    rows = m["hopfield_capacity"]["rows"]
    assert rows[-1]["K"] > 2 * rows[0]["K"]
    assert all(row["sinkhorn"] >= 0.9 for row in rows)
    # ULA particles on the exact discrete ULA law (z-scores of the mean).
    assert m["langevin_gaussian"]["max_abs_z_mean_vs_exact_ula"] < 5
    # LDP: the matched entropic loss deconvolves, the divergence fits the noisy law (W₂ to clean data).
    runs = m["ldp_2d"]["runs"]
    matched = [k for k in runs if k.endswith("/matched")]
    assert matched
    for k in matched:
        assert runs[k]["w2"][0] < 0.6 * runs[k.replace("/matched", "/divergence")]["w2"][0]
    for sigma in (v for k, v in m["ldp_digits"].items() if k.startswith("sigma=")):
        assert sigma["mmd"]["matched"][0] < 0.5 * sigma["mmd"]["privatized"][0]
    # Muon: the Hamiltonian never rises (float32 round-off allowed), no step flagged, J falls.
    for v in m["muon_meanfield"]["per_N"].values():
        assert v["energy_flags"] == 0
        assert v["H_max_rise"] <= 1e-6 * v["J_initial_mean"]
        assert v["J_final_muon_mean"] < 0.5 * v["J_initial_mean"]
    moe = m["muon_moe"]
    assert moe["energy_flags"] == 0
    assert moe["H_max_rise"] <= 1e-6 * moe["J_initial"]
    assert moe["J_final_muon"] < 0.5 * moe["half_var_y"]  # beats the constant predictor
    # SHK fixes the mode weights that ULA leaves at the initial split.
    shk = m["shk_mixture"]
    for method in ("shk_weighted", "shk_jump"):
        assert shk[method]["final_mode_weight_error"] < 0.25 * shk["ula"]["final_mode_weight_error"]
    # The exact SHK exponential mechanism: audits below the certificate, accuracy above the majority class.
    reg = m["shk_private_regression"]
    assert reg["audit"]
    assert all(a["audited_lower_bound"] <= a["certified"] for a in reg["audit"].values())
    assert max(mean for mean, _ in reg["accuracy_vs_epsilon"].values()) > reg["majority_accuracy"] + 0.05
    # DP sliced-Wasserstein flow: without noise (ε = ∞) it moves N(0, I) particles onto the data.
    swf = m["swf_2d"]
    for name in ("eight_gaussians",):
        start = swf[f"{name}/initial"]["sliced_w2"][0]
        assert swf[f"{name}/flow/eps=inf"]["sliced_w2"][0] < 0.2 * start
    assert m["swf_digits"]["flow/eps=inf"]["accuracy"][0] > 0.5  # chance: 0.1


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


# ----------------------------------------------------------------- --set overrides and sweeps


@dataclasses.dataclass(frozen=True)
class _TypedConfig:
    rate: float = 0.5
    steps: int = 1
    use_x: bool = False
    epsilons: tuple[float, ...] = (1.0,)
    label: str = "a"

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")


def _typed(cfg, ctx):
    """Echo the config it got (and the seed), so a test can see what the overrides became."""
    return {**dataclasses.asdict(cfg), "seed": ctx.seed, "num_eps": len(cfg.epsilons)}, f"ran {cfg}"


@pytest.fixture
def typed(monkeypatch, tmp_path):
    """A stub kind with typed fields and a declared sweep key (epsilon -> epsilons), for this test only."""
    monkeypatch.setattr(_registry, "_REGISTRY", dict(_registry._REGISTRY))
    _registry.register("typed_stub", _TypedConfig, description="typed stub", sweep_keys={"epsilon": "epsilons"})(_typed)
    return _write(tmp_path, {"experiment": "typed_stub", "about": {"claim": "c", "wall_time": "1 s"}}, "typed.yaml")


def test_set_parses_yaml_values_with_exponent_floats_lists_bools_and_seed(typed, tmp_path):
    out = tmp_path / "o"
    argv = ["run", str(typed), "--out", str(out), "--set", "rate=1e-5", "--set", "steps=200", "--set", "use_x=true"]
    argv += ["--set", "epsilons=[1,5]", "--set", "seed=7", "--set", "label=1E-3x"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["rate"] == 1e-5
    assert isinstance(metrics["rate"], float)
    assert metrics["steps"] == 200
    assert metrics["use_x"] is True
    assert metrics["epsilons"] == [1.0, 5.0]
    assert metrics["seed"] == 7
    assert metrics["label"] == "1E-3x"
    resolved = yaml.safe_load((out / "config.yaml").read_text())  # the resolved config carries the overrides
    assert (resolved["rate"], resolved["steps"], resolved["seed"], resolved["epsilons"]) == (1e-5, 200, 7, [1.0, 5.0])
    assert "about" not in resolved  # about is not part of the resolved config


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["nope=1"], "unknown config key 'nope'"),
        (["steps=many"], "config key 'steps' must be an int"),
        (["rate=fast"], "config key 'rate' must be a number"),
        (["use_x=3"], "config key 'use_x' must be true or false"),
        (["epsilons=5"], "config key 'epsilons' must be a list"),
        (["steps=0"], "steps must be >= 1"),
        (["seed=-1"], "config key 'seed' must be a non-negative int"),
        (["steps"], "--set expects KEY=VALUE, got 'steps'"),
        (["=3"], "--set expects KEY=VALUE"),
        (["steps="], "--set steps: the value is empty"),
        (["epsilons=[1,"], "--set epsilons: '[1,' is not a YAML value"),
        (["steps=1", "steps=2"], "--set steps is given twice"),
    ],
)
def test_bad_set_is_one_line_naming_the_key_and_writes_nothing(typed, tmp_path, capsys, sets, message):
    out = tmp_path / "o"
    argv = ["run", str(typed), "--out", str(out)]
    for text in sets:
        argv += ["--set", text]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("dpflows: error: "), err
    assert err.count("\n") == 1, err
    assert message in err
    assert not out.exists()


def test_resume_with_a_different_override_is_refused(typed, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["run", str(typed), "--out", str(out), "--set", "steps=2"]) == 0
    assert main(["run", str(typed), "--out", str(out), "--resume", "--set", "steps=3"]) == 2
    assert "config key 'steps' differs from the run that wrote it (2 vs 3)" in capsys.readouterr().err
    assert main(["run", str(typed), "--out", str(out), "--resume", "--set", "seed=1"]) == 2
    assert "config key 'seed' differs" in capsys.readouterr().err
    assert main(["run", str(typed), "--out", str(out), "--resume"]) == 2  # dropping the override changes steps too
    assert main(["run", str(typed), "--out", str(out), "--resume", "--set", "steps=2"]) == 0
    assert json.loads((out / "metrics.json").read_text())["steps"] == 2


@pytest.mark.parametrize(
    ("grids", "message"),
    [
        (["epsilon"], "--grid expects KEY=VALUE, got 'epsilon'"),
        (["=1,2"], "--grid expects KEY=VALUE"),
        (["epsilon="], "--grid 'epsilon=' has an empty value"),
        (["epsilon=1,,2"], "--grid 'epsilon=1,,2' has an empty value"),
        (["steps=1,"], "--grid 'steps=1,' has an empty value"),
        (["steps=1,[2"], "--grid steps: '[2' is not a YAML value"),
        (["steps=1,2", "steps=3"], "--grid steps is given twice"),
        (["steps=1,1"], "--grid steps repeats the value 1"),
        (["nope=1,2"], "unknown --grid key 'nope' for experiment 'typed_stub'"),
        (["epsilon=1", "epsilons=2"], "--grid epsilon and --grid epsilons both set 'epsilons'"),
        (["epsilon=[1,2],3"], "--grid epsilon takes single values"),
        (["steps=1,0"], "run steps=0: steps must be >= 1"),  # every run is validated before any starts
        (["steps=1,x"], "config key 'steps' must be an int"),
        (["experiment=typed_stub"], "--grid experiment: 'experiment' cannot be gridded"),
    ],
)
def test_bad_grid_is_one_line_naming_the_argument_and_writes_nothing(typed, tmp_path, capsys, grids, message):
    out = tmp_path / "o"
    argv = ["sweep", str(typed), "--out", str(out)]
    for text in grids:
        argv += ["--grid", text]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("dpflows: error: "), err
    assert err.count("\n") == 1, err
    assert message in err
    assert not out.exists()


def test_grid_and_set_on_the_same_key_and_uncrossed_sweep_keys_are_refused(typed, tmp_path, capsys):
    assert main(["sweep", str(typed), "--grid", "epsilon=1,2", "--set", "epsilons=[3]", "--out", str(tmp_path)]) == 2
    assert "--grid epsilon and --set epsilons set the same config key" in capsys.readouterr().err
    # shk_private_regression runs its ε list at `time` and its t list at `epsilon_for_time`: two curves, no product
    cfg = str(ROOT / "configs" / "shk_private_regression.yaml")
    assert main(["sweep", cfg, "--grid", "epsilon=1,3", "--grid", "times=1,2", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "--grid epsilon and --grid times cannot be combined in one shk_private_regression run" in err
    assert not (tmp_path / "x").exists()


def test_sweep_of_separate_runs_writes_one_folder_per_run_and_an_index(typed, tmp_path, capsys):
    out = tmp_path / "sw"
    argv = ["sweep", str(typed), "--out", str(out), "--grid", "steps=1,2", "--grid", "label=a,b"]
    argv += ["--grid", "epsilon=1e-5,5", "--set", "rate=0.25"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "4 separate runs because steps, label are not swept inside typed_stub" in text
    assert "each run sweeps epsilon=[1e-05, 5] in one dpflows.sweep" in text
    assert len([ln for ln in text.splitlines() if ln.startswith("[")]) == 4  # one progress line per run
    folders = ["steps=1,label=a", "steps=1,label=b", "steps=2,label=a", "steps=2,label=b"]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == folders
    for folder in folders:
        metrics = json.loads((out / folder / "metrics.json").read_text())
        steps, label = (part.split("=")[1] for part in folder.split(","))
        assert (metrics["steps"], metrics["label"]) == (int(steps), label)
        assert metrics["epsilons"] == [1e-5, 5.0]  # every run sweeps the sweep key itself
        assert metrics["rate"] == 0.25  # --set applies to every run
    index = json.loads((out / "sweep.json").read_text())
    assert [r["folder"] for r in index["runs"]] == folders
    assert index["runs"][3]["overrides"] == {"steps": 2, "label": "b"}
    assert index["runs"][3]["metrics"]["num_eps"] == 2  # scalar metrics only
    assert "epsilons" not in index["runs"][3]["metrics"]
    report = (out / "report.md").read_text()
    assert "| run | steps | label | rate | steps | use_x | label | seed | num_eps | wall_time_s |" in report
    assert "| [report](steps=2,label=b/report.md) | 2 | b | 0.25 | 2 | false | b | 0 | 2 |" in report
    # the same folder again: refused, then resumed with the same grid, refused with another
    assert main(argv) == 2
    assert "--resume" in capsys.readouterr().err
    assert main([*argv, "--resume"]) == 0
    other = ["sweep", str(typed), "--out", str(out), "--grid", "steps=1,3", "--resume"]
    assert main(other) == 2
    assert "cannot resume" in capsys.readouterr().err


def test_sweep_over_sweep_keys_only_is_one_run_holding_every_value(typed, tmp_path, capsys, monkeypatch):
    calls = []
    exp = get("typed_stub")
    monkeypatch.setitem(
        _registry._REGISTRY, "typed_stub", dataclasses.replace(exp, fn=lambda c, x: calls.append(c) or exp.fn(c, x))
    )
    out = tmp_path / "sw"
    assert main(["sweep", str(typed), "--grid", "epsilon=1,.inf,2.5", "--set", "seed=3", "--out", str(out)]) == 0
    assert "one dpflows.sweep over epsilon=[1, inf, 2.5] inside a single typed_stub run" in capsys.readouterr().out
    assert [c.epsilons for c in calls] == [(1.0, float("inf"), 2.5)]  # one run, every value
    assert not [p for p in out.iterdir() if p.is_dir()]  # no per-value folders: out is the run
    assert json.loads((out / "metrics.json").read_text())["num_eps"] == 3
    assert json.loads((out / "sweep.json").read_text())["runs"][0]["overrides"] == {"epsilon": [1, "inf", 2.5]}


def test_declared_sweep_keys_of_the_real_experiments_plan_one_run(tmp_path):
    # Planning only (nothing runs): the grid keys each experiment sweeps itself stay in one run.
    cases = {
        "ldp_tiny": {"epsilon": [5, 10], "dataset": ["eight_gaussians", "two_moons"]},
        "ldp_digits": {"sigma": [0.3, 1.0]},
        "swf_2d": {"epsilon": [1, 5]},
        "swf_digits": {"epsilons": [1, 5]},
        "shk_private_regression": {"epsilon": [1, 3]},
        "aeot_digits": {"tau_factor": [0.5, 2]},
        "aeot_2d": {"dataset": ["eight_gaussians", "swiss_roll"]},
    }
    for name, grid in cases.items():
        overrides = {"angle_thresholds": [0.1, 0.12]} if name == "aeot_2d" else {}
        plan = plan_sweep(ROOT / "configs" / f"{name}.yaml", grid, overrides)
        assert [folder for folder, _ in plan.runs] == ["."], name
        assert plan.message.startswith("one dpflows.sweep over"), name
    plan = plan_sweep(ROOT / "configs" / "muon_meanfield.yaml", {"particle_counts": [[16], [64]]})
    assert [folder for folder, _ in plan.runs] == ["particle_counts=16", "particle_counts=64"]  # shapes: separate


@pytest.mark.slow
def test_sweep_over_a_sweep_key_is_one_run_with_one_sweep(tmp_path, capsys, monkeypatch):
    # ldp_2d declares epsilon -> epsilons: the grid becomes ONE run whose particle fits are ONE
    # dpflows.sweep over both ε (one vmapped program), not two runs.
    import dpflows

    exp = get("ldp_2d")
    calls, sweeps = [], []
    real_sweep = dpflows.sweep

    def counting_fn(cfg, ctx):
        calls.append(cfg.epsilons)
        return exp.fn(cfg, ctx)

    def counting_sweep(flows, *args, **kwargs):
        sweeps.append(len(flows))
        return real_sweep(flows, *args, **kwargs)

    monkeypatch.setitem(_registry._REGISTRY, "ldp_2d", dataclasses.replace(exp, fn=counting_fn))
    monkeypatch.setattr(dpflows, "sweep", counting_sweep)
    out = tmp_path / "sw"
    tiny = ["num_private=100", "data_batch_size=100", "num_particles=20", "particle_steps=2", "num_test=50"]
    argv = ["sweep", str(ROOT / "configs" / "ldp_tiny.yaml"), "--grid", "epsilon=5,10", "--out", str(out)]
    for text in tiny:
        argv += ["--set", text]
    assert main([*argv, "--no-progress"]) == 0
    assert "one dpflows.sweep over epsilon=[5, 10] inside a single ldp_2d run" in capsys.readouterr().out
    assert calls == [(5.0, 10.0)]  # the experiment ran once, with both values
    assert sweeps == [2]  # and fitted both ε in one sweep (one compiled program)
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"eight_gaussians/gaussian/5/particles/matched", "eight_gaussians/gaussian/10/particles/matched"} == set(
        metrics["runs"]
    )
    assert yaml.safe_load((out / "config.yaml").read_text())["epsilons"] == [5.0, 10.0]
    index = json.loads((out / "sweep.json").read_text())
    assert [r["folder"] for r in index["runs"]] == ["."]


def test_a_runs_config_yaml_with_infinite_epsilon_runs_again(tmp_path):
    """config.yaml keeps ε = ∞ as YAML's .inf, and older runs' "inf" strings still load as floats."""
    exp, seed, cfg = load_config({"experiment": "swf_2d", "epsilons": [float("inf"), 10.0], "seed": 4})
    out = tmp_path / "config.yaml"
    out.write_text(yaml.safe_dump(_registry._yamlable(_registry.resolved_config(exp, seed, cfg)), sort_keys=False))
    assert "- .inf" in out.read_text()
    assert load_config(out) == (exp, seed, cfg)
    old = {"experiment": "swf_2d", "epsilons": ["inf", "+Infinity", 10.0]}
    assert load_config(old)[2].epsilons == (float("inf"), float("inf"), 10.0)
    with pytest.raises(TypeError, match="'epsilons' must be a number"):
        load_config({"experiment": "swf_2d", "epsilons": ["infinite", 10.0]})
