"""The SHK experiments run end to end through the CLI, and their numbers are scored."""

import json

import pytest
import yaml

from dpflows.cli import main


def _run(tmp_path, cfg):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--no-progress"]) == 0
    return json.loads((out / "metrics.json").read_text()), out


def test_shk_mixture_small(tmp_path):
    metrics, out = _run(tmp_path, {"experiment": "shk_mixture", "seed": 0, "num_particles": 300, "num_steps": 150})
    # SHK fixes the 0.9/0.1 weights from a 50/50 start; ULA and MALA cannot cross the barrier.
    assert metrics["shk_weighted"]["final_mode_weight_error"] < 0.05
    assert metrics["shk_jump"]["final_mode_weight_error"] < 0.05
    assert metrics["ula"]["final_mode_weight_error"] > 0.3
    assert metrics["mala"]["final_mode_weight_error"] > 0.3
    assert (out / "mode_weights.png").exists()
    assert (out / "samples.png").exists()


def test_shk_private_regression_small(tmp_path):
    cfg = {
        "experiment": "shk_private_regression",
        "seed": 0,
        "num_particles": 1000,
        "num_seeds": 1,
        "epsilons": [0.3, 30.0],
        "times": [0.2, 5.0],
        "audit_trials": 20000,
    }
    metrics, out = _run(tmp_path, cfg)
    acc = metrics["accuracy_vs_epsilon"]
    assert acc["30.0"][0] > acc["0.3"][0] + 0.05  # more privacy budget, better accuracy
    assert acc["30.0"][0] > metrics["majority_accuracy"]
    for entry in metrics["audit"].values():
        assert entry["audited_lower_bound"] <= entry["certified"]
    assert "covers" in (out / "report.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("config", ["shk_mixture.yaml", "shk_mixture_4modes_10d.yaml", "shk_private_regression.yaml"])
def test_full_configs(tmp_path, config):
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "out"
    assert main(["run", str(root / "configs" / config), "--out", str(out), "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    if config.startswith("shk_mixture"):
        assert metrics["shk_weighted"]["final_mode_weight_error"] < 0.02
        assert metrics["ula"]["final_mode_weight_error"] > 0.1
    else:
        assert metrics["audit"]["3.0"]["audited_lower_bound"] <= metrics["audit"]["3.0"]["certified"]
