"""Sinkhorn Hopfield memory vs the Euclidean Hopfield baseline on Gaussian point-cloud memories (METHODS.md §2f).

Memories: ξ_k has n points i.i.d. N(m_k, s² I_d), centres m_k ~ N(0, R² I_d), uniform weights. A
query is a stored pattern perturbed by one of

- ``jitter``: x_i + σ z_i with σ = level × ``max_jitter`` × s;
- ``reweight``: a random permutation of the points and weights (1 − level)/n + level × Dirichlet(1);
- ``drop``: a fraction 0.9 × level of the points removed (weight 0: exactly absent);
- ``outliers``: a fraction ½ × level of the points replaced by draws from N(0, (R + 3s)² I_d).

Retrieval runs the SHK flow (``num_steps`` at most) and reports accuracy = 1[argmin_k S_ε(μ_T, ξ_k)
= k_true] over ``trials`` queries (binomial standard errors). The baseline sees the flattened
positions in slot order: it ignores weights, a permutation scrambles it, and a dropped point's slot
is filled with the mean of the kept points (the least-bad imputation for a fixed-size vector).
Scales: ε = ``epsilon_factor`` × s² d (≈ 0.1 × the typical squared spacing, cost ½‖·‖²). β is set
from the memories themselves, as §2d asks (β × gap ≫ log K): β = ``beta_factor`` × log K / g with g
the median over patterns of S_ε to the nearest other pattern; the baseline gets the same rule with
its own score ½‖vec ξ_k − vec ξ_l‖², so neither memory is handicapped by a temperature.

``hopfield_capacity``: K = ⌈exp(c·d)⌉ patterns (capped) for growing d, jitter queries at one level;
the claim checked is that accuracy stays high while K grows exponentially with d.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from dpflows.hopfield import EuclideanHopfield, SinkhornHopfield

from ._common import check_positive
from ._registry import RunContext, register

PERTURBATIONS = ("jitter", "reweight", "drop", "outliers")


# ---------------------------------------------------------------------------------- pieces
def make_memories(key, num_patterns: int, num_points: int, dim: int, spread: float, radius: float):
    """(K, n, d) Gaussian clouds around centres m_k ~ N(0, R² I)."""
    k1, k2 = jr.split(key)
    centres = radius * jr.normal(k1, (num_patterns, 1, dim))
    return centres + spread * jr.normal(k2, (num_patterns, num_points, dim))


def perturb(key, pattern, kind: str, level, *, spread: float, radius: float, max_jitter: float):
    """One perturbed query: (points, weights, baseline points) — all with the pattern's n slots."""
    n, d = pattern.shape
    k1, k2, k3 = jr.split(key, 3)
    uniform = jnp.full((n,), 1.0 / n, pattern.dtype)
    if kind == "jitter":
        x = pattern + level * max_jitter * spread * jr.normal(k1, pattern.shape)
        return x, uniform, x
    if kind == "reweight":
        perm = jr.permutation(k1, n)
        w = (1 - level) * uniform + level * jr.dirichlet(k2, jnp.ones((n,), pattern.dtype))
        return pattern[perm], w / jnp.sum(w), pattern[perm]
    if kind == "drop":
        num_drop = jnp.floor(0.9 * level * n).astype(jnp.int32)
        drop = jr.permutation(k1, n) < num_drop
        w = jnp.where(drop, 0.0, 1.0).astype(pattern.dtype)
        w = w / jnp.sum(w)
        mean = w @ pattern
        return pattern, w, jnp.where(drop[:, None], mean[None, :], pattern)
    if kind == "outliers":
        num_out = jnp.floor(0.5 * level * n).astype(jnp.int32)
        out = jr.permutation(k1, n) < num_out
        far = (radius + 3 * spread) * jr.normal(k3, pattern.shape)
        x = jnp.where(out[:, None], far, pattern)
        return x, uniform, x
    raise ValueError(f"perturbation must be one of {PERTURBATIONS}, got {kind!r}")


def _queries(key, patterns, kind, level, trials, **kw):
    keys = jr.split(key, trials)
    labels = jr.randint(jr.fold_in(key, 1), (trials,), 0, patterns.shape[0])
    x, w, xb = jax.vmap(lambda k, lab: perturb(k, patterns[lab], kind, level, **kw))(keys, labels)
    return x, w, xb, labels


@eqx.filter_jit
def _sinkhorn_batch(memory: SinkhornHopfield, xs, ws, num_steps: int):
    """Retrieve a batch of queries; the predicted index, final divergences and convergence flags.

    ``warn=False``: unconverged solves are counted per query into the report instead.
    """
    _, trace = memory.retrieve_many(xs, ws, num_steps=num_steps, tol=1e-6, warn=False)
    final = trace["divergences"][:, -1]  # entries after a stop repeat the final state's values
    return jnp.argmin(final, axis=1), final, jnp.all(trace["converged"], axis=1)


@eqx.filter_jit
def _baseline_batch(baseline: EuclideanHopfield, xs, num_steps: int):
    out, _ = jax.vmap(lambda q: baseline.retrieve(q, num_steps=num_steps))(xs)
    return jax.vmap(baseline.classify)(out.x)


def _accuracy(memory: SinkhornHopfield, baseline: EuclideanHopfield, x, w, xb, labels, num_steps, batch):
    """Per-query hits of each memory, the final S_ε to the true pattern, and unconverged queries.

    The batch functions are module-level and take the memories as arguments: one compilation per
    memory shape, shared by every perturbation and level.
    """
    hits, hits_b, s_true, unconverged = [], [], [], 0
    for start in range(0, x.shape[0], batch):
        sl = slice(start, start + batch)
        pred, final, conv = _sinkhorn_batch(memory, x[sl], w[sl], num_steps)
        hits.append(np.asarray(pred == labels[sl]))
        s_true.append(np.asarray(jnp.take_along_axis(final, labels[sl][:, None], axis=1)[:, 0]))
        unconverged += int(np.sum(~np.asarray(conv)))
        hits_b.append(np.asarray(_baseline_batch(baseline, xb[sl], num_steps) == labels[sl]))
    return np.concatenate(hits), np.concatenate(hits_b), np.concatenate(s_true), unconverged


def _row(hit, hit_b, s_true, unconverged, **keys) -> dict:
    """One point of a curve: both accuracies with binomial standard errors."""
    p, pb = float(hit.mean()), float(hit_b.mean())
    return {
        **keys,
        "sinkhorn": p,
        "sinkhorn_se": _se(p, hit.size),
        "euclidean": pb,
        "euclidean_se": _se(pb, hit_b.size),
        "final_divergence_true": float(np.median(s_true)),
        "unconverged_sinkhorn": unconverged,
    }


def _se(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 0.0) / n)


# ------------------------------------------------------------------------------ perturbation
@dataclass(frozen=True)
class HopfieldPerturbationConfig:
    """Parameters of ``hopfield_perturbation``.

    Attributes:
        num_patterns: the K values. dims: the d values. num_points: n points per cloud.
        perturbations: any of "jitter", "reweight", "drop", "outliers".
        levels: perturbation strengths in [0, 1] (see the module docstring).
        trials: queries per point of each curve. spread: s. radius: R (centre scale).
        max_jitter: σ at level 1, in units of s. epsilon_factor: ε / (s² d). beta_factor: β × gap / log K.
        step_size: τ. num_steps: retrieval steps at most (both memories). batch: queries per call.
    """

    num_patterns: tuple[int, ...] = (8, 32, 128)
    dims: tuple[int, ...] = (2, 8, 32)
    num_points: int = 32
    perturbations: tuple[str, ...] = PERTURBATIONS
    levels: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    trials: int = 200
    spread: float = 1.0
    radius: float = 2.0
    max_jitter: float = 3.0
    epsilon_factor: float = 0.1
    beta_factor: float = 4.0
    step_size: float = 0.5
    num_steps: int = 20
    batch: int = 100

    def __post_init__(self):
        if not self.perturbations or any(p not in PERTURBATIONS for p in self.perturbations):
            raise ValueError(f"perturbations must be a non-empty subset of {PERTURBATIONS}, got {self.perturbations}")
        if not self.levels or any(not 0 <= lv <= 1 for lv in self.levels):
            raise ValueError(f"levels must lie in [0, 1], got {self.levels}")
        check_positive(self, ("num_patterns", "dims", "num_points", "trials", "spread", "radius", "max_jitter"))
        check_positive(self, ("epsilon_factor", "beta_factor", "step_size", "num_steps", "batch"))


def _median_gap(scores) -> float:
    """Median over patterns of the score to the nearest other pattern."""
    s = np.asarray(scores, np.float64) + np.diag(np.full(scores.shape[0], np.inf))
    return float(np.median(s.min(axis=1)))


def _memories(key, k, d, *, num_points, spread, radius, epsilon_factor, beta_factor, step_size):
    """K random clouds, the Sinkhorn memory and the baseline, each with β from the memories' own gaps."""
    pats = make_memories(key, k, num_points, d, spread, radius)
    eps = epsilon_factor * spread**2 * d
    log_k = math.log(max(k, 2))
    gaps = SinkhornHopfield(pats, epsilon=eps, beta=1.0).pattern_divergences()
    memory = SinkhornHopfield(pats, epsilon=eps, beta=beta_factor * log_k / _median_gap(gaps), step_size=step_size)
    flat = pats.reshape(k, -1)
    sq = 0.5 * jnp.sum((flat[:, None, :] - flat[None, :, :]) ** 2, axis=-1)
    baseline = EuclideanHopfield(pats, beta=beta_factor * log_k / _median_gap(sq))
    return pats, memory, baseline


def _memory_args(cfg) -> dict:
    names = ("num_points", "spread", "radius", "epsilon_factor", "beta_factor", "step_size")
    return {name: getattr(cfg, name) for name in names}


def run_hopfield_perturbation(cfg: HopfieldPerturbationConfig, ctx: RunContext):
    """Accuracy vs perturbation strength, Sinkhorn memory vs Euclidean baseline, per (K, d)."""
    import matplotlib.pyplot as plt

    key = jr.key(ctx.seed)
    kw = {"spread": cfg.spread, "radius": cfg.radius, "max_jitter": cfg.max_jitter}
    metrics: dict = {}
    cells = [(k, d) for k in cfg.num_patterns for d in cfg.dims]
    bar = ctx.grid_bar(len(cells) * len(cfg.perturbations) * len(cfg.levels), "hopfield")
    # A loop, not a sweep: the memories change shape from cell to cell, the perturbation kind is a
    # code path, and within a cell only the queries vary (one compiled retrieval per cell already).
    # Vmapping the level grid measured slower at demo size (benchmarks/bench_hopfield.py, "grid").
    for k, d in cells:
        pats, memory, baseline = _memories(jr.fold_in(key, 1000 * k + d), k, d, **_memory_args(cfg))
        cell = metrics.setdefault(f"K={k},d={d}", {})
        for kind in cfg.perturbations:
            rows = []
            for i, level in enumerate(cfg.levels):
                qkey = jr.fold_in(jr.fold_in(key, PERTURBATIONS.index(kind)), 100 * i + k + d)
                x, w, xb, labels = _queries(qkey, pats, kind, level, cfg.trials, **kw)
                result = _accuracy(memory, baseline, x, w, xb, labels, cfg.num_steps, cfg.batch)
                rows.append(_row(*result, level=level))
                bar.update(1)
            cell[kind] = rows
    bar.close()

    fig, axes = plt.subplots(
        len(cfg.perturbations),
        len(cfg.dims),
        figsize=(3.4 * len(cfg.dims), 2.6 * len(cfg.perturbations)),
        squeeze=False,
        layout="constrained",  # keeps each panel's title clear of the x labels above it
    )
    for r, kind in enumerate(cfg.perturbations):
        for c, d in enumerate(cfg.dims):
            ax = axes[r, c]
            for j, k in enumerate(cfg.num_patterns):
                rows = metrics[f"K={k},d={d}"][kind]
                lv = [row["level"] for row in rows]
                for name, style in (("sinkhorn", "-o"), ("euclidean", "--s")):
                    ax.errorbar(
                        lv,
                        [row[name] for row in rows],
                        yerr=[row[f"{name}_se"] for row in rows],
                        fmt=style,
                        color=f"C{j}",
                        ms=3,
                        capsize=2,
                        label=f"{name} K={k}",
                    )
            ax.set_ylim(-0.03, 1.03)
            ax.set_title(f"{kind}, d = {d}", fontsize=9)
            if r == len(cfg.perturbations) - 1:
                ax.set_xlabel("perturbation level")
            if c == 0:
                ax.set_ylabel("retrieval accuracy")
    axes[0, -1].legend(fontsize=6, loc="lower left")
    fig.suptitle("Sinkhorn memory (solid) vs Euclidean Hopfield (dashed); ± binomial s.e.", fontsize=10)
    ctx.save_figure(
        fig,
        "accuracy",
        caption="Solid (Sinkhorn) vs dashed (Euclidean): under reweighting (level 0 is a pure permutation of the "
        "points) the Sinkhorn memory stays at 1 where the Euclidean one, which reads points by slot, fails.",
    )

    lines = []
    for cell, per_kind in metrics.items():
        for kind, rows in per_kind.items():
            top = rows[-1]
            mid = rows[len(rows) // 2]
            lines.append(
                f"| {cell} | {kind} | {mid['sinkhorn']:.2f} / {mid['euclidean']:.2f} | "
                f"{top['sinkhorn']:.2f} / {top['euclidean']:.2f} | {top['unconverged_sinkhorn']} |"
            )
    mid_level = cfg.levels[len(cfg.levels) // 2]
    report = f"""
{cfg.trials} queries per point, n = {cfg.num_points} points per cloud, ε = {cfg.epsilon_factor}·s²d,
β = {cfg.beta_factor}·log K / (median nearest-pattern gap), τ = {cfg.step_size}, ≤ {cfg.num_steps} steps.
Accuracy Sinkhorn / Euclidean at level {mid_level} and at level {cfg.levels[-1]} (the figure has every
level with error bars); the last column counts queries whose Sinkhorn solves did not all converge
at the strongest level.

| memories | perturbation | level {mid_level} | level {cfg.levels[-1]} | unconverged |
|---|---|---|---|---|
{chr(10).join(lines)}
"""
    return metrics, report


register(
    "hopfield_perturbation",
    HopfieldPerturbationConfig,
    description="Sinkhorn Hopfield vs Euclidean Hopfield: retrieval accuracy vs jitter, reweighting, drops, outliers.",
    # K = 32 clouds in d = 2: close enough that a permuted cloud fools the slot-wise baseline. The same
    # memory shape as the hopfield_capacity demo at d = 2, so the demo compiles one retrieval for both.
    demo={
        "num_patterns": [32],
        "dims": [2],
        "num_points": 12,
        "levels": [0.0, 0.5, 1.0],
        "trials": 32,
        "num_steps": 5,
        "batch": 32,
    },
)(run_hopfield_perturbation)


# -------------------------------------------------------------------------------- capacity
@dataclass(frozen=True)
class HopfieldCapacityConfig:
    """Parameters of ``hopfield_capacity``.

    Attributes:
        dims: the d values. rate: c in K = ⌈exp(c·d)⌉. max_patterns: cap on K.
        num_points: n. trials: queries per d. jitter: σ/s of the queries. spread: s.
        radius: R. epsilon_factor: ε / (s² d). beta_factor: β × gap / log K. step_size: τ. num_steps: at most.
        batch: queries per call.
    """

    dims: tuple[int, ...] = (2, 4, 8, 12, 16)
    rate: float = 0.4
    max_patterns: int = 512
    num_points: int = 16
    trials: int = 200
    jitter: float = 0.5
    spread: float = 1.0
    radius: float = 2.0
    epsilon_factor: float = 0.1
    beta_factor: float = 4.0
    step_size: float = 0.5
    num_steps: int = 20
    batch: int = 50

    def __post_init__(self):
        check_positive(self, ("dims", "rate", "max_patterns", "num_points", "trials", "jitter", "spread"))
        check_positive(self, ("radius", "epsilon_factor", "beta_factor", "step_size", "num_steps", "batch"))


def run_hopfield_capacity(cfg: HopfieldCapacityConfig, ctx: RunContext):
    """Accuracy while K grows like exp(c·d): the exponential-capacity claim."""
    import matplotlib.pyplot as plt

    key = jr.key(ctx.seed)
    kw = {"spread": cfg.spread, "radius": cfg.radius, "max_jitter": cfg.jitter}
    rows = []
    bar = ctx.grid_bar(len(cfg.dims), "capacity")
    for d in cfg.dims:
        k = min(cfg.max_patterns, max(2, math.ceil(math.exp(cfg.rate * d))))
        pats, memory, baseline = _memories(jr.fold_in(key, d), k, d, **_memory_args(cfg))
        x, w, xb, labels = _queries(jr.fold_in(key, 10_000 + d), pats, "jitter", 1.0, cfg.trials, **kw)
        result = _accuracy(memory, baseline, x, w, xb, labels, cfg.num_steps, cfg.batch)
        rows.append(_row(*result, d=d, K=k))
        bar.update(1)
    bar.close()
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ds = [r["d"] for r in rows]
    for name, style in (("sinkhorn", "-o"), ("euclidean", "--s")):
        ax.errorbar(ds, [r[name] for r in rows], yerr=[r[f"{name}_se"] for r in rows], fmt=style, capsize=2, label=name)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("dimension d")
    ax.set_ylabel("retrieval accuracy")
    twin = ax.twinx()
    twin.semilogy(ds, [r["K"] for r in rows], ":", color="gray")
    twin.set_ylabel("K = ⌈exp(c d)⌉ (dotted)")
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(f"capacity: jitter σ = {cfg.jitter}s, n = {cfg.num_points}", fontsize=9)
    ctx.save_figure(
        fig,
        "capacity",
        caption="The Sinkhorn accuracy should stay near 1 while the number of stored clouds K (dotted, log scale) "
        "grows exponentially with d.",
    )
    table = "\n".join(
        f"| {r['d']} | {r['K']} | {r['sinkhorn']:.3f} ± {r['sinkhorn_se']:.3f} | "
        f"{r['euclidean']:.3f} ± {r['euclidean_se']:.3f} | {r['unconverged_sinkhorn']} |"
        for r in rows
    )
    report = f"""
K = ⌈exp({cfg.rate}·d)⌉ random Gaussian clouds (capped at {cfg.max_patterns}), {cfg.trials} jittered queries
per d (σ = {cfg.jitter}·s).

| d | K | Sinkhorn | Euclidean | unconverged |
|---|---|---|---|---|
{table}
"""
    return {"rows": rows}, report


register(
    "hopfield_capacity",
    HopfieldCapacityConfig,
    description="Sinkhorn Hopfield capacity: accuracy while K grows exponentially with d.",
    # rate 1.73: K = ⌈exp(1.73 d)⌉ = 32 at d = 2 (the hopfield_perturbation demo's memory shape) and 180 at d = 3.
    demo={"dims": [2, 3], "rate": 1.73, "num_points": 12, "trials": 32, "num_steps": 5, "batch": 32},
)(run_hopfield_capacity)
