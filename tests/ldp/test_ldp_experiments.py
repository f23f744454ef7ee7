"""The LDP experiments: a small ldp_2d run shows the matched loss winning; the noise seed is never written."""

import base64
import json
from pathlib import Path

import pytest

from dpflows.experiments import run_experiment
from dpflows.privacy import mechanisms

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


# slow (~40 s): the headline claim of docs/reproductions/ldp.md at small size; `make test-slow` runs it.
@pytest.mark.slow
def test_ldp_2d_small_matched_beats_the_comparators(tmp_path):
    """Matched entropic OT recovers the clean law; the divergence, a 10x smaller λ and W₂ fit the noisy one.

    Margins: in the committed 3-seed run (docs/reproductions/runs/ldp_2d, 3000 records) the matched W₂ is
    2.1-5x below the best comparator's at ε = 10, a gap of 8-33 seed sd; 0.75 leaves room for this
    smaller run's single seed.
    """
    cfg = {
        "experiment": "ldp_2d",
        "datasets": ["eight_gaussians"],
        "epsilons": [10.0],
        "laplace_epsilons": [10.0],
        "losses": ["matched", "divergence", "small_eps", "w2"],
        "models": ["particles"],
        "num_private": 1500,
        "num_test": 300,
        "num_particles": 300,
        "particle_steps": 30,
        "data_batch_size": 1500,
        "num_seeds": 1,
        "reproducible_noise": True,
    }
    m = run_experiment(cfg, tmp_path / "out")
    for noise in ("gaussian/10", "laplace/10"):
        w2 = {v: m["runs"][f"eight_gaussians/{noise}/particles/{v}"]["w2"][0] for v in cfg["losses"]}
        assert w2["matched"] < 0.75 * min(w2["divergence"], w2["small_eps"], w2["w2"]), (noise, w2)
        assert w2["matched"] < 0.6 * m["privatized"][f"eight_gaussians/{noise}"]["w2"][0]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Noise seed disclosed" in report
    assert "none (noise seed disclosed)" in report
    assert m["noise_seed"] == "derived from seed (disclosed)"


def test_noise_seed_is_never_written(tmp_path, monkeypatch):
    """NOISE-3 (RELIABILITY.md §2.4): the secret noise key leaves no trace in any output file."""
    words = iter([0x9E3779B9, 0x7F4A7C15] * 1000)
    monkeypatch.setattr(mechanisms.secrets, "randbits", lambda bits: next(words))
    run_experiment(CONFIGS / "ldp_tiny.yaml", tmp_path / "out")
    forms = []
    for w in (0x9E3779B9, 0x7F4A7C15):
        raw = w.to_bytes(4, "big")
        forms += [str(w), f"{w:x}", f"{w:X}", f"{w:#x}", base64.b64encode(raw).decode().rstrip("=")]
    joint = (0x9E3779B9 << 32) | 0x7F4A7C15
    forms += [str(joint), f"{joint:x}"]
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert files
    for path in files:
        text = path.read_bytes().decode("latin-1")
        for form in forms:
            assert form not in text, (path.name, form)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["noise_seed"] == "<secret>"
    assert "noise seed secret" in (tmp_path / "out" / "report.md").read_text()


# slow (~5 min): the digits reproduction config end to end. configs/ldp_2d.yaml and configs/paper/ldp_2d.yaml
# (≥ 16 CPU-minutes) share its code path with the 2-D claim test above, which runs in well under a minute.
@pytest.mark.slow
def test_ldp_digits_reproduction_config(tmp_path):
    m = run_experiment(CONFIGS / "paper" / "ldp_digits.yaml", tmp_path / "out")
    for sigma in ("sigma=0.6", "sigma=1"):  # every fitted model is far closer to the clean digits than the release
        mmd = m[sigma]["mmd"]
        assert max(mmd[loss][0] for loss in ("matched", "divergence", "w2")) < 0.7 * mmd["privatized"][0], mmd
