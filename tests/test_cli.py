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
