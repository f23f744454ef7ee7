"""Exponential-mechanism logistic regression on breast cancer, sampled by the exact SHK sampler.

The data are scikit-learn's bundled copy; the certificate of the exact pure-reaction sampler covers
the released draw.

Privacy setup (replace-one neighbours, one record = one patient):

* features: the 10 "mean" features, mapped to [−1, 1] with the *documented* ranges printed in the
  dataset's own description (public, not computed from the data), clipped, then
  x̃ = [x/√10, 1]/√2 so that ‖x̃‖ ≤ 1;
* parameters θ in the ball ‖θ‖ ≤ R, so the per-example logistic loss lies in
  [log(1 + e^{−R}), log(1 + e^{R})] and the summed loss has sensitivity Δ = R exactly;
* ρ₀ = uniform on the ball (data-independent), the exact pure-reaction sampler to time t,
  one draw: ε(t) = (1 − e^{−βt}) · ε (``covers="mechanism"``).

The utility reported is the *expected* test accuracy of the released draw, Σᵢ wᵢ acc(θᵢ), averaged
over seeds; the audit A4 (RELIABILITY.md §3.3) of the same sampler code is run next to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import dpflows
from dpflows import privacy, shk

from ._registry import RunContext, register

# Documented ranges of the 10 "mean" features (sklearn's load_breast_cancer().DESCR, "Summary Statistics").
FEATURE_RANGES = np.array(
    [
        [6.981, 28.11],
        [9.71, 39.28],
        [43.79, 188.5],
        [143.5, 2501.0],
        [0.053, 0.163],
        [0.019, 0.345],
        [0.0, 0.427],
        [0.0, 0.201],
        [0.106, 0.304],
        [0.05, 0.097],
    ]
)


@dataclass(frozen=True)
class SHKPrivateRegressionConfig:
    """Parameters of ``shk_private_regression``.

    Attributes:
        epsilons: exponential-mechanism ε values (accuracy vs ε at time ``time``).
        times: flow times t (accuracy and ε(t) vs t at ε = ``epsilon_for_time``).
        time: the flow time of the accuracy-vs-ε curve.
        epsilon_for_time: ε of the accuracy-vs-t curve.
        radius: R, the parameter-ball radius (= the sensitivity Δ of the summed loss).
        reaction: β.
        num_particles: n candidates from ρ₀.
        num_steps: reaction steps per run (the exact integrator is exact at any step count).
        num_seeds: repetitions averaged per point.
        test_fraction: held-out share (a fixed, public split).
        audit_trials: sampler runs per neighbour in the A4 audit (0 skips it).
    """

    epsilons: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
    times: tuple[float, ...] = (0.05, 0.2, 0.5, 1.0, 2.0, 5.0)
    time: float = 5.0
    epsilon_for_time: float = 3.0
    radius: float = 6.0
    reaction: float = 1.0
    num_particles: int = 20000
    num_steps: int = 5
    num_seeds: int = 5
    test_fraction: float = 0.25
    audit_trials: int = 100_000

    def __post_init__(self):
        for name in ("epsilons", "times"):
            if not getattr(self, name) or min(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be a non-empty list of positive numbers, got {getattr(self, name)}")
        for name in ("time", "epsilon_for_time", "radius", "reaction"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("num_particles", "num_steps", "num_seeds"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if self.audit_trials < 0:
            raise ValueError(f"audit_trials must be >= 0, got {self.audit_trials}")


def load_data(test_fraction: float, seed: int = 0):
    """(x_train, y_train, x_test, y_test), x̃ with ‖x̃‖ ≤ 1 and y ∈ {−1, +1}; the split is public."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    lo, hi = FEATURE_RANGES[:, 0], FEATURE_RANGES[:, 1]
    x = np.clip(2 * (data.data[:, :10] - lo) / (hi - lo) - 1, -1, 1) / np.sqrt(10)
    x = np.concatenate([x, np.ones((x.shape[0], 1))], axis=1) / np.sqrt(2)
    y = np.where(data.target == 1, 1.0, -1.0)
    perm = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(test_fraction * len(y)))
    test, train = perm[:n_test], perm[n_test:]
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    return f32(x[train]), f32(y[train]), f32(x[test]), f32(y[test])


def logistic_loss(theta, data):
    """L(θ; D) = Σᵢ log(1 + exp(−yᵢ θᵀx̃ᵢ)) (sum, not mean: Δ = R under replace-one)."""
    x, y = data
    return jnp.sum(jnp.logaddexp(0.0, -y * (x @ theta)))


def uniform_ball(key, n: int, dim: int, radius: float):
    """Draw n points uniform in the d-ball of radius R (data-independent ρ₀)."""
    k1, k2 = jr.split(key)
    g = jr.normal(k1, (n, dim))
    r = radius * jr.uniform(k2, (n, 1)) ** (1.0 / dim)
    return r * g / jnp.linalg.norm(g, axis=1, keepdims=True)


def _zero_log_density(theta):
    return jnp.zeros((), theta.dtype)


def make_flow(data, *, epsilon, radius, time, reaction, num_steps) -> shk.SHKSampler:
    """The exact pure-reaction sampler towards the EM target at ε, run to time t in ``num_steps`` steps.

    ε, t (through the step size t/num_steps) and β are array leaves: flows at different grid points
    stack into one :func:`dpflows.sweep` that compiles once, with the data as one unbatched leaf.
    """
    potential = shk.exponential_mechanism(logistic_loss, data, sensitivity=radius, epsilon=epsilon)
    return shk.SHKSampler(potential, step_size=time / num_steps, transport=0.0, reaction=reaction)


def initial_state(flow: shk.SHKSampler, key, *, dim, radius, num_particles) -> dpflows.Particles:
    """The n data-independent candidates, uniform in the ball, in the exact mode (ρ₀ known: constant)."""
    return flow.init(uniform_ball(key, num_particles, dim, radius), log_density0=_zero_log_density)


def sample_weights(key, data, *, epsilon, radius, time, reaction, num_particles, num_steps):
    """Candidates and their exact pure-reaction weights at one grid point (the released draw picks one ∝ w)."""
    flow = make_flow(data, epsilon=epsilon, radius=radius, time=time, reaction=reaction, num_steps=num_steps)
    state = initial_state(flow, key, dim=data[0].shape[1], radius=radius, num_particles=num_particles)
    final, _ = dpflows.run(flow, state, jr.fold_in(key, 1), num_steps)
    return final


def sweep_weights(key, data, points, *, radius, reaction, num_particles, num_steps) -> list[dpflows.Particles]:
    """:func:`sample_weights` at every (ε, t) in ``points``, as one :func:`dpflows.sweep` (one compilation).

    Every member starts from the same candidates (those of ``key``) and gets the run key
    ``fold_in(key, 1)``, exactly as :func:`sample_weights` does point by point.
    """
    flows = [
        make_flow(data, epsilon=e, radius=radius, time=t, reaction=reaction, num_steps=num_steps) for e, t in points
    ]
    state = initial_state(flows[0], key, dim=data[0].shape[1], radius=radius, num_particles=num_particles)
    final, trace = dpflows.sweep(flows, state, jr.fold_in(key, 1), num_steps, throw=True)
    return [jax.tree_util.tree_map(lambda a, i=i: a[i], final) for i in range(len(points))]


def expected_accuracy(state: dpflows.Particles, x_test, y_test) -> float:
    """E[accuracy of the released θ_I] = Σᵢ wᵢ acc(θᵢ)."""
    acc = jnp.mean((x_test @ state.x.T) * y_test[:, None] > 0, axis=0)
    return float(jnp.sum(state.weights * acc))


# The A4 audit problem (RELIABILITY.md §3.3): one vote record, worst-case loss, ε_EM = 1.
_TAU = 1.6448536269514722  # Φ⁻¹(0.95)


def vote_loss(theta, vote):
    """Δ·1[θ ≤ τ] for vote +1, Δ·1[θ > τ] for vote −1 (Δ = 1)."""
    above = theta[0] > _TAU
    return jnp.where(vote > 0, jnp.where(above, 0.0, 1.0), jnp.where(above, 1.0, 0.0))


def audit_sampler(time: float):
    """The released-draw mechanism of the A4 audit at flow time t."""

    def mechanism(key, vote):
        potential = shk.exponential_mechanism(
            vote_loss, vote, sensitivity=1.0, epsilon=1.0, prior=lambda th: 0.5 * jnp.sum(th**2)
        )
        return shk.private_sample(
            key,
            potential,
            initial=lambda k, n: jr.normal(k, (n, 1)),
            log_density0=lambda th: -0.5 * jnp.sum(th**2),
            num_particles=64,
            time=time,
        )[0]

    return mechanism


def grid_accuracy(cfg: SHKPrivateRegressionConfig, key, data, x_test, y_test):
    """Expected accuracy (mean, SE over seeds) along the ε curve (t = ``time``) and the t curve.

    One :func:`dpflows.sweep` per seed over all (ε, t) points (the seeds differ in their candidate
    sets); every sweep reuses the first one's compiled program.
    """
    points = [(e, cfg.time) for e in cfg.epsilons] + [(cfg.epsilon_for_time, t) for t in cfg.times]
    accs = np.array(
        [
            [
                expected_accuracy(state, x_test, y_test)
                for state in sweep_weights(
                    jr.fold_in(key, s),
                    data,
                    points,
                    radius=cfg.radius,
                    reaction=cfg.reaction,
                    num_particles=cfg.num_particles,
                    num_steps=cfg.num_steps,
                )
            ]
            for s in range(cfg.num_seeds)
        ]
    )  # (seeds, points)
    stats = [(float(np.mean(a)), float(np.std(a) / np.sqrt(len(a)))) for a in accs.T]
    return stats[: len(cfg.epsilons)], stats[len(cfg.epsilons) :]


def run_shk_private_regression(cfg: SHKPrivateRegressionConfig, ctx: RunContext):
    """Accuracy vs ε and vs t, the ε(t) curves, and the A4 audit next to its certificate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.linear_model import LogisticRegression

    x_tr, y_tr, x_te, y_te = load_data(cfg.test_fraction)
    data = (x_tr, y_tr)
    key = jr.key(ctx.seed)

    acc_eps, acc_t = grid_accuracy(cfg, key, data, x_te, y_te)
    eps_t = {
        e: [
            shk.dp_certificate(
                sensitivity=cfg.radius,
                inverse_temperature=shk.inverse_temperature(e, cfg.radius),
                time=t,
                reaction=cfg.reaction,
            ).epsilon
            for t in cfg.times
        ]
        for e in cfg.epsilons
    }
    clf = LogisticRegression(C=1e4, max_iter=5000).fit(np.asarray(x_tr), np.asarray(y_tr))
    nonprivate = float(clf.score(np.asarray(x_te), np.asarray(y_te)))
    majority = float(max(np.mean(np.asarray(y_te) > 0), np.mean(np.asarray(y_te) < 0)))

    audit_rows, audit_metrics = [], {}
    if cfg.audit_trials:
        for t in (0.1, 3.0):
            cert = shk.dp_certificate(sensitivity=1.0, inverse_temperature=0.5, time=t)
            res = privacy.audit_epsilon(
                audit_sampler(t),
                jnp.array(-1.0),
                jnp.array(1.0),
                key=jr.fold_in(key, 99),
                num_trials=cfg.audit_trials,
                threshold=_TAU,
            )
            audit_metrics[str(t)] = {"certified": cert.epsilon, "audited_lower_bound": res.lower}
            verdict = "pass" if res.lower <= cert.epsilon else "FAIL"
            audit_rows.append(f"| {t:g} | {cert.epsilon:.3f} | {res.lower:.3f} | {cert.covers} | {verdict} |")

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    ts = np.linspace(0, max(cfg.times), 200)
    for e in cfg.epsilons:
        axes[0].plot(ts, shk.reaction_epsilon(e, ts, reaction=cfg.reaction), label=f"ε = {e:g}")
    axes[0].set_xlabel("flow time t")
    axes[0].set_ylabel("certified ε(t) (covers the released draw)")
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=7)
    m, se = np.array(acc_eps).T
    axes[1].errorbar(cfg.epsilons, m, yerr=2 * se, marker="o", capsize=3, label=f"SHK exact, t = {cfg.time:g}")
    axes[1].axhline(nonprivate, color="k", ls="--", label="non-private logistic regression")
    axes[1].axhline(majority, color="gray", ls=":", label="majority class")
    axes[1].set_xscale("log")
    axes[1].set_xlabel("ε of the exponential mechanism")
    axes[1].set_ylabel("expected test accuracy")
    axes[1].legend(fontsize=7)
    m, se = np.array(acc_t).T
    eps_of_t = [shk.reaction_epsilon(cfg.epsilon_for_time, t, reaction=cfg.reaction) for t in cfg.times]
    axes[2].errorbar(eps_of_t, m, yerr=2 * se, marker="o", capsize=3)
    for t, e, a in zip(cfg.times, eps_of_t, m, strict=True):
        axes[2].annotate(f"t={t:g}", (e, a), fontsize=7)
    axes[2].set_xscale("log")
    axes[2].set_xlabel(f"ε(t) at ε = {cfg.epsilon_for_time:g} (stopping early spends less)")
    axes[2].set_ylabel("expected test accuracy")
    ctx.save_figure(
        fig,
        "privacy_utility",
        caption="Left: the certified ε(t) grows with t up to ε; middle: accuracy rises with ε towards the "
        "non-private line (at the smallest ε it can sit below the majority class); right: stopping early "
        "spends less ε for less accuracy.",
    )

    metrics = {
        "accuracy_vs_epsilon": {str(e): a for e, a in zip(cfg.epsilons, acc_eps, strict=True)},
        "accuracy_vs_time": {str(t): a for t, a in zip(cfg.times, acc_t, strict=True)},
        "epsilon_of_time": {str(e): v for e, v in eps_t.items()},
        "nonprivate_accuracy": nonprivate,
        "majority_accuracy": majority,
        "audit": audit_metrics,
        "train_size": int(x_tr.shape[0]),
    }
    factor = shk.reaction_epsilon(1.0, cfg.time, reaction=cfg.reaction)  # ε(t)/ε
    eps_rows = "\n".join(f"| {e:g} | {a:.3f} ± {2 * s:.3f} |" for e, (a, s) in zip(cfg.epsilons, acc_eps, strict=True))
    report = f"""
Exponential-mechanism logistic regression on breast cancer ({x_tr.shape[0]} train / {x_te.shape[0]} test,
10 features + bias, ‖x̃‖ ≤ 1 from documented feature ranges), θ in the ball of radius R = {cfg.radius:g}
(sensitivity Δ = R), exact pure-reaction SHK sampler with n = {cfg.num_particles} candidates from the
uniform ball, β = {cfg.reaction:g}. Accuracy is the expected accuracy of the single released draw
(mean ± 2 SE over {cfg.num_seeds} seeds). Non-private logistic regression: {nonprivate:.3f};
majority class: {majority:.3f}.

| ε (t = {cfg.time:g}, so ε(t) = {factor:.4f} ε) | expected test accuracy |
|---|---|
{eps_rows}

At large ε the accuracy levels off near the best of the n random candidates in 11 dimensions: the
exact sampler is an exponential mechanism over a *finite* data-independent candidate set. Transport
(Langevin moves) would refine the candidates, but then only an ideal-flow figure is available.

The certificate ε(t) = (1 − e^(−βt)) ε covers the released draw exactly (`covers="mechanism"`): the
sampler is an exponential mechanism at temperature (1 − e^(−βt))γ over data-independent candidates.

Audit A4 of the same sampler code on the worst-case vote problem (ε_EM = 1, {cfg.audit_trials} runs per
neighbour, 99.9 % Clopper–Pearson):

| t | certified ε(t) | audited lower bound | covers | verdict |
|---|---|---|---|---|
{chr(10).join(audit_rows)}
"""
    return metrics, report


register(
    "shk_private_regression",
    SHKPrivateRegressionConfig,
    description="Exponential-mechanism logistic regression (breast cancer) by the exact SHK sampler, with audit.",
    # every (ε, t) point is in one dpflows.sweep, as two curves (ε at `time`, t at `epsilon_for_time`), not a product
    sweep_keys={"epsilon": "epsilons", "times": "times"},
    sweep_product=[("epsilons",), ("times",)],
    demo={
        "num_particles": 4000,
        "num_seeds": 2,
        "audit_trials": 20000,
        "epsilons": [0.3, 3.0, 30.0],
        "times": [0.2, 1.0, 5.0],
    },
)(run_shk_private_regression)
