"""The muon_meanfield experiment's headline claims at reduced size (issue 21; docs/reproductions/muon.md).

Propagation of chaos and the blockwise MoE are tested in test_muon_flow.py; these two read the
experiment's own metrics: H never rises along the flow, and J − J* decays at the linearised rate on
the PL problem.
"""

import json

import pytest
import yaml

from dpflows.cli import main


def _run(tmp_path, **overrides):
    cfg = {"experiment": "muon_meanfield", "seed": 0, "num_inputs": 128, "num_seeds": 3, **overrides}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--no-progress"]) == 0
    return json.loads((out / "metrics.json").read_text())


# slow (23–47 s measured on the shared 2-core CPU): the experiment end to end; `make test-slow` runs it.
@pytest.mark.slow
def test_hamiltonian_never_rises_along_the_teacher_student_flow(tmp_path):
    metrics = _run(tmp_path, particle_counts=[16, 128], num_steps=200, pl_num_steps=100)
    for n, row in metrics["per_N"].items():
        # H is non-increasing: every step's rise, over every seed, stays below float32 round-off of H
        # (H ≤ J(0) ≈ 0.05 here, 1e-6 ≈ 100 ulps). In the committed paper run (20 seeds, N ≤ 1024) H
        # fell at every step (largest step change −1.8e-6) with no energy flags.
        assert row["H_max_rise"] < 1e-6, (n, row)
        assert row["energy_flags"] == 0, (n, row)
        # and the flow moves: J falls by far more than the seeds' spread of J(T) (sd ≈ 10 % of the mean)
        assert row["J_final_muon_mean"] < 0.5 * row["J_initial_mean"], (n, row)
    assert metrics["pl"]["H_max_rise"] < 1e-6
    assert metrics["pl"]["energy_flags"] == 0


# slow (10–14 s measured): the PL rate, measured by the experiment.
@pytest.mark.slow
def test_objective_gap_decays_at_the_linearised_rate_on_the_pl_problem(tmp_path):
    pl = _run(tmp_path, particle_counts=[16], num_steps=50, pl_num_steps=500)["pl"]
    # METHODS §3e.6: J − J* decays exponentially (negative log-linear slope). Sharper: the envelope's
    # fitted rate matches the rate of the discrete scheme linearised at the optimum (1.026 at ε = 0.1,
    # γ = 1, h = 0.05; the ODE's is γ = 1). Measured: 1.023 ± 0.0004 over seeds (sd), so the seeds' spread is
    # far below the fit's own bias (0.3 %); the margin, 5 % of the prediction, covers that bias 15 times
    # over and still fails if the decay slows below 0.975 (the ODE's rate minus 2.5 %) or is not
    # exponential over the window (the fit is then NaN).
    assert len(pl["rate_fitted_per_seed"]) == 3
    for rate in pl["rate_fitted_per_seed"]:
        assert rate == pytest.approx(pl["rate_predicted_scheme"], rel=0.05)
    assert pl["rate_predicted_ode"] == pytest.approx(1.0)  # γ = 1 and every mode underdamped: rate = γ
