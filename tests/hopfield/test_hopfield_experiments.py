"""The Hopfield experiments: the capacity config reaches past K = 512 stored clouds (issue 21) and runs there;
the Sinkhorn memory against the Euclidean baseline (docs/reproductions/hopfield.md) at reduced size."""

import json
import math
from pathlib import Path

import pytest
import yaml

from dpflows.cli import main

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "hopfield_capacity.yaml"


def _stored_patterns(cfg: dict) -> list[int]:
    """K at every d of the config, as the experiment computes it (⌈exp(c·d)⌉, at least 2, capped)."""
    return [min(cfg["max_patterns"], max(2, math.ceil(math.exp(cfg["rate"] * d)))) for d in cfg["dims"]]


def test_capacity_config_stores_every_k_uncapped():
    cfg = yaml.safe_load(CONFIG.read_text())
    uncapped = [math.ceil(math.exp(cfg["rate"] * d)) for d in cfg["dims"]]
    assert _stored_patterns(cfg)[-1] == uncapped[-1] == 602  # d = 16: ⌈e^{6.4}⌉, past the old cap of 512
    assert max(uncapped) <= cfg["max_patterns"]  # the cap never bites: K really grows like e^{cd}


@pytest.mark.slow
def test_capacity_config_at_its_largest_memory(tmp_path):
    # The config's d = 16 point as configured (K = 602, n = 16, 20 steps), with 50 of its 200 queries.
    # The full config took 7.4 min and 1.6 GB on the 2-core CPU; every query retrieved, d = 16 included.
    cfg = yaml.safe_load(CONFIG.read_text())
    cfg.pop("about")
    cfg.update(dims=[16], trials=50)
    path = tmp_path / "capacity.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--no-progress"]) == 0
    (row,) = json.loads((out / "metrics.json").read_text())["rows"]
    assert row["K"] == 602
    assert row["unconverged_sinkhorn"] == 0
    assert row["sinkhorn"] >= 0.9, row  # measured 1.000 over 200 queries (full config)


def _perturbation_accuracies(tmp_path, seed: int) -> dict:
    """One reduced hopfield_perturbation run: {(kind, level): (Sinkhorn, Euclidean) accuracy}."""
    cfg = {
        "experiment": "hopfield_perturbation",
        "seed": seed,
        "num_patterns": [32],  # K = 32 overlapping clouds in d = 2, as the d = 2 cell of the paper config
        "dims": [2],
        "num_points": 12,
        "perturbations": ["jitter", "reweight", "drop"],
        "levels": [0.0, 0.5],
        "trials": 48,
        "num_steps": 5,
        "batch": 48,
    }
    path = tmp_path / f"perturbation_{seed}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / f"out_{seed}"
    assert main(["run", str(path), "--out", str(out), "--no-progress"]) == 0
    cell = json.loads((out / "metrics.json").read_text())["K=32,d=2"]
    return {(kind, row["level"]): (row["sinkhorn"], row["euclidean"]) for kind, rows in cell.items() for row in rows}


@pytest.mark.slow
def test_sinkhorn_vs_euclidean_under_permutation_jitter_and_drops(tmp_path):
    # The headline comparison of docs/reproductions/hopfield.md at reduced size (n = 12 points, 5 steps,
    # 48 queries per point instead of n = 16, 20 steps, 64 queries), over the paper run's seeds 0, 1, 2.
    import numpy as np

    acc = [_perturbation_accuracies(tmp_path, seed) for seed in range(3)]

    def both(kind, level):
        return np.array([a[kind, level] for a in acc]).T  # (2: sinkhorn, euclidean) × seeds

    # Margins from the seeds' spread over seeds 0–2 in the paper config's d = 2 cell
    # (docs/reproductions/hopfield.md), which this reduced run matches within them. Measured there and
    # here (Sinkhorn vs Euclidean, mean ± sd over 3 seeds):
    #   permutation   1.00 ± 0.00 vs 0.65 ± 0.09 (paper config)   1.00 ± 0.00 vs 0.54 ± 0.02 (here)
    #   jitter 0.5    0.64 ± 0.08 vs 0.97 ± 0.03                  0.63 ± 0.07 vs 0.95 ± 0.04
    #   drop 0.5      0.89 ± 0.06 vs 0.99 ± 0.01                  0.95 ± 0.03 vs 0.99 ± 0.02
    # Permutation (reweight at level 0: the stored points in a random order). The Sinkhorn memory is
    # exactly invariant, so every permuted query is retrieved; the slot-wise baseline reads shuffled
    # slots and misses about 4 in 10 (margin 3 × 0.09).
    sink, eucl = both("reweight", 0.0)
    assert np.all(sink == 1.0), sink
    assert sink.mean() - eucl.mean() > 0.27, (sink, eucl)
    # Jitter in stored order (σ = 1.5 s): the baseline has the slot correspondence for free and wins at
    # d = 2 (margin about 2 × 0.08); the Sinkhorn memory still retrieves far above chance (1/32): its
    # mean minus 3 sds is 0.40 in the paper config, 0.43 here.
    sink, eucl = both("jitter", 0.5)
    assert sink.mean() > 0.4, sink
    assert eucl.mean() - sink.mean() > 0.15, (sink, eucl)
    # 45 % of the points dropped: neither memory collapses (the baseline's dropped slots are filled with
    # the kept points' mean, in stored order). Floor: 0.89 − 3 × 0.06 ≈ 0.7.
    sink, eucl = both("drop", 0.5)
    assert min(sink.mean(), eucl.mean()) > 0.7, (sink, eucl)
