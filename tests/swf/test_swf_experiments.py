"""The DP-SW question (issue 21, item 2) at reduced size: in the official unconditional setup, tuned on a
validation split and scored on a test split, DPSWflow has a lower proxy FID than DPSWgen at equal ε."""

import numpy as np
import pytest

from dpflows.experiments import run_experiment


# slow (~115 s here, 2-core CPU shared with other agents): `make test-slow` runs it. The full-size
# evidence is docs/reproductions/swf.md.
@pytest.mark.slow
def test_swf_digits_unconditional_flow_beats_generator_at_equal_epsilon(tmp_path):
    cfg = {
        "experiment": "swf_digits",
        "seed": 0,
        "conditional": False,
        "epsilons": [5.0],
        "methods": ["flow", "gen"],
        "ae_steps": 1000,
        "public_fraction": 0.35,
        "validation_fraction": 0.15,
        "test_fraction": 0.15,
        "num_projections": 70,
        "num_subprojections": 25,
        "step_size_grid": [0.3, 1.0],
        "flow_steps": 300,
        "generator_steps": 300,
        "record_every": 50,
        "generator_epochs": [1.0, 5.0],
        "learning_rate_grid": [0.001, 0.01],
        "generator_batch": 250,
        "num_seeds": 3,
        "reproducible_noise": True,
    }
    m = run_experiment(cfg, tmp_path / "out")
    flow, gen = (np.asarray(m[f"{method}/eps=5"]["fid"]) for method in ("flow", "gen"))
    # The committed run (docs/reproductions/runs/swf_digits, 5 seeds) has FID(gen) - FID(flow) = 8.7 at ε = 5,
    # 3.1 times the larger seed sd (2.85); two sd of the larger seed spread is the margin kept at this size.
    sd = max(flow.std(ddof=1), gen.std(ddof=1))
    assert gen.mean() - flow.mean() > 2 * sd, (flow, gen)
    # What FID penalises (docs/reproductions/swf.md): DPSWgen's samples fall into fewer classes than the flow's
    # (class TV 0.40 ± 0.07 against 0.21 ± 0.04 in the committed run).
    gen_tv, flow_tv = (np.asarray(m[f"{method}/eps=5"]["class_tv"]) for method in ("gen", "flow"))
    assert gen_tv.mean() > flow_tv.mean(), (gen_tv, flow_tv)
