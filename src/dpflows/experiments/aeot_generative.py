"""AE-OT generators: semi-discrete OT with a smoothed Brenier potential vs AE-OT pairs vs an MLP push-forward.

``aeot_2d``: the AE-OT toy laws (8 Gaussians, 25 Gaussians, Swiss roll), latent = data. Codes are a
sample of the law; the generators are the smoothed map (τ = ``tau_factor`` × the median score gap),
AE-OT's pair interpolation with its angle test, and an MLP push-forward of N(0, I) trained with a
Sinkhorn-divergence loss. Scored by mode coverage (every mode gets its share) and mode mixture (the
fraction of samples farther than 3σ from every mode; for the roll, from the noiseless curve).

``aeot_digits``: an MLP autoencoder on scikit-learn's 8×8 digits (training split), semi-discrete OT
from the uniform cube to the training codes, decoded samples from the smoothed map at several τ and
from the pairs, against a Gaussian fitted to the codes. Scored by a proxy FID (a digits classifier's
hidden layer, vs held-out images) and by the distance of each sample
to the decoded training codes (a generator that copies its training set sits at 0; held-out digits
through the autoencoder set the reference).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

import dpflows
from dpflows import aeot

from ._common import check_positive
from ._registry import RunContext, register

DATASETS_2D = ("eight_gaussians", "twenty_five_gaussians", "swiss_roll")


@dataclass(frozen=True)
class AEOT2DConfig:
    """Parameters of ``aeot_2d``.

    Attributes:
        datasets: any of "eight_gaussians", "twenty_five_gaussians", "swiss_roll".
        angle_thresholds: θ_thr (radians) of the pair test, one per dataset (the planes' angle scales
            with the codes' spacing, so each law has its own, as in the AE-OT demo).
        num_codes: codes (a sample of the law). num_samples: generated points per method.
        tol: solver tolerance n·max|ĝ|. max_iterations: solver Adam steps.
        tau_factor: τ of the smoothed map in units of the median score gap over the source.
        mlp_steps: Adam steps of the MLP push-forward. mlp_epsilon: its Sinkhorn ε (cost ½‖x−y‖²).
    """

    datasets: tuple[str, ...] = DATASETS_2D
    angle_thresholds: tuple[float, ...] = (0.1, 0.08, 0.12)
    num_codes: int = 500
    num_samples: int = 2000
    tol: float = 0.2
    max_iterations: int = 1500
    tau_factor: float = 2.0
    mlp_steps: int = 1500
    mlp_epsilon: float = 0.005

    def __post_init__(self):
        if not self.datasets or any(d not in DATASETS_2D for d in self.datasets):
            raise ValueError(f"datasets must be a non-empty subset of {DATASETS_2D}, got {self.datasets}")
        if len(self.angle_thresholds) != len(self.datasets):
            raise ValueError(
                f"angle_thresholds must have one entry per dataset ({len(self.datasets)}), got {self.angle_thresholds}"
            )
        check_positive(self, ("angle_thresholds", "num_codes", "num_samples", "tol", "max_iterations"))
        check_positive(self, ("tau_factor", "mlp_steps", "mlp_epsilon"))


def _toy(name: str, key, n: int):
    """(points, scorer): the scorer maps samples to coverage / mixture numbers."""
    data = dpflows.data
    if name == "swiss_roll":
        noise = 0.02
        x, _ = data.swiss_roll(key, n, noise=noise)
        t_grid = jnp.linspace(1.5 * math.pi, 4.5 * math.pi, 4000)
        curve = np.asarray(data.swiss_roll_curve(t_grid))

        def score(s):
            d = dpflows.metrics.nearest_neighbour_distances(s, curve)
            # nearest curve point → arc of the roll (10 equal ranges of t): the roll's "modes".
            s = np.asarray(s, np.float64)
            idx = np.argmin(((s[:, None, :] - curve[None, ::10, :]) ** 2).sum(-1), axis=1) * 10
            arcs = np.minimum(idx * 10 // len(curve), 9)
            on = d <= 3 * noise
            counts = np.bincount(arcs[on], minlength=10)
            shares = counts / max(1, on.sum())
            return {
                "coverage": float(np.mean(counts / len(s) >= 0.25 / 10)),
                "off_mode": float(1 - on.mean()),
                "share_error": float(0.5 * np.abs(shares - 0.1).sum()),
            }

        return x, score
    if name == "eight_gaussians":
        std = 0.06
        x, _ = data.eight_gaussians(key, n, std=std)
        centers = data.eight_gaussians_centers()
    else:
        std = 0.03
        x, _ = data.twenty_five_gaussians(key, n, std=std)
        centers = data.twenty_five_gaussians_centers()
    return x, lambda s: dpflows.metrics.mode_coverage(s, centers, radius=3 * std)


def _median_gap(key, codes, heights, source="uniform", num=4096):
    x = aeot.sample_source(key, num, codes.shape[1], source=source)
    return float(jnp.median(aeot.score_gap(x, codes, heights)))


class _DivergenceLoss(eqx.Module):
    """loss(Gs, key) = Σ_l S_ε(G_l#N(0, I), codes_l): debiased Sinkhorn divergences of L stacked generators.

    Cost ½‖x − y‖², ε given (not matched to any noise), ``batch_size`` latents per law and step, every
    code. The members' weights are disjoint, so each gets the gradient of its own term, and Adam (an
    elementwise rule) on the stack is L independent Adams: one :func:`dpflows.fit` trains every law in
    one compiled loop, with its progress bar. A module holding its arrays as fields (compiles once).
    """

    codes: jax.Array  # (L, n, 2)
    epsilon: jax.Array
    batch_size: int = eqx.field(static=True)

    def __call__(self, gens, key):
        def one(gen, codes, k):
            x = jax.vmap(gen)(jr.normal(k, (self.batch_size, gen.latent_dim), codes.dtype)).astype(codes.dtype)
            res = dpflows.ot.sinkhorn_divergence(
                x, codes, epsilon=self.epsilon, max_iterations=500, threshold=1e-3, warn=False
            )
            return res.value

        keys = jr.split(key, self.codes.shape[0])
        return jnp.sum(eqx.filter_vmap(one)(gens, self.codes, keys))


def _mlp_pushforwards(key, codes, cfg: AEOT2DConfig, progress: bool):
    """MLP push-forwards of N(0, I) for every law at once (codes (L, n, 2)); one sampler ``(key, m)`` per law."""
    k_init, k_train = jr.split(key)
    init_keys = jr.split(k_init, codes.shape[0])
    gens = eqx.filter_vmap(lambda k: dpflows.nn.MLPGenerator(k, latent_dim=2, data_dim=2, width=128, depth=3))(
        init_keys
    )
    optimizer = optax.inject_hyperparams(optax.adam)(learning_rate=1e-3)
    loss = _DivergenceLoss(codes, jnp.asarray(cfg.mlp_epsilon, codes.dtype), 256)
    gens = dpflows.fit(loss, gens, optimizer, k_train, cfg.mlp_steps, progress=progress).model
    out = []
    for i in range(codes.shape[0]):
        gen = jax.tree.map(lambda a, i=i: a[i] if eqx.is_array(a) else a, gens)
        out.append(lambda k, m, gen=gen: jax.vmap(gen)(jr.normal(k, (m, 2))))
    return out


def run_aeot_2d(cfg: AEOT2DConfig, ctx: RunContext):
    """Scatter plots and coverage / mixture scores per toy law and generator."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = jr.key(ctx.seed)
    methods = ("data", "smoothed", "pairs", "mlp")
    fig, axes = plt.subplots(len(cfg.datasets), 4, figsize=(13, 3.3 * len(cfg.datasets)), squeeze=False)
    fig_angles, ax_angles = plt.subplots(1, len(cfg.datasets), figsize=(4.3 * len(cfg.datasets), 3), squeeze=False)
    metrics: dict = {}
    row_keys = [jr.fold_in(key, row) for row in range(len(cfg.datasets))]
    toys = [_toy(name, jr.fold_in(k, 0), cfg.num_codes) for name, k in zip(cfg.datasets, row_keys, strict=True)]
    # The grid over laws varies only leaves (codes of one shape): one compiled solve, one compiled fit.
    solvers = [
        aeot.SemiDiscreteOT(codes, tol=cfg.tol, max_iterations=cfg.max_iterations, max_batch_size=2**17)
        for codes, _ in toys
    ]
    solved = aeot.sweep_solve(solvers, jr.fold_in(key, 1000), progress=ctx.progress, warn=False)
    mlp_samplers = _mlp_pushforwards(jr.fold_in(key, 1001), jnp.stack([codes for codes, _ in toys]), cfg, ctx.progress)
    for row, (name, threshold) in enumerate(zip(cfg.datasets, cfg.angle_thresholds, strict=True)):
        k = row_keys[row]
        (codes, score), res = toys[row], solved[row]
        tau = cfg.tau_factor * _median_gap(jr.fold_in(k, 2), codes, res.heights)
        pairs_gen = aeot.AEOTGenerator(None, codes, res.heights, mode="pairs", angle_threshold=threshold)
        samples = {
            "data": _toy(name, jr.fold_in(k, 3), cfg.num_samples)[0],
            "smoothed": aeot.AEOTGenerator(None, codes, res.heights, tau=tau).sample(jr.fold_in(k, 4), cfg.num_samples),
            "pairs": pairs_gen.sample(jr.fold_in(k, 5), cfg.num_samples),
            "mlp": mlp_samplers[row](jr.fold_in(k, 7), cfg.num_samples),
        }
        metrics[name] = {
            "solver": {
                "iterations": res.num_iterations,
                "converged": bool(res.converged),
                "cell_mass_error": float(res.cell_mass_error),
                "batch_size": res.batch_size,
                "tau": tau,
                "pair_acceptance": pairs_gen.acceptance_rate(jr.fold_in(k, 8)),
            },
            **{m: score(samples[m]) for m in methods},
        }
        for col, m in enumerate(methods):
            ax = axes[row, col]
            s = np.asarray(samples[m])
            ax.scatter(s[:, 0], s[:, 1], s=2, alpha=0.5, color="C0" if m == "data" else "C1")
            ax.scatter(np.asarray(codes)[:, 0], np.asarray(codes)[:, 1], s=1, color="k", alpha=0.3)
            sc = metrics[name][m]
            ax.set_title(f"{name}: {m}\ncoverage {sc['coverage']:.2f}, off-mode {sc['off_mode']:.3f}", fontsize=9)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
        # The pair test's angles: where θ_thr falls in the distribution over source points.
        x = aeot.sample_source(jr.fold_in(k, 9), 8192, 2)
        top = jax.lax.top_k(x @ codes.T + res.heights[None, :], 2)[1]
        theta = np.asarray(aeot.pair_angles(codes, top[:, 0], top[:, 1]))
        ax = ax_angles[0, row]
        ax.hist(theta, bins=80, log=True)
        ax.axvline(threshold, color="r", label=f"θ_thr = {threshold}")
        ax.set_title(f"{name}: angle of the top-2 planes", fontsize=9)
        ax.set_xlabel("θ (rad)")
        ax.legend(fontsize=8)
    ctx.save_figure(
        fig,
        "samples",
        caption="The smoothed map and the pairs put their samples (orange) on the modes, as the data do; the MLP "
        "push-forward smears mass between the modes (mode mixture: a high off-mode share).",
    )
    ctx.save_figure(
        fig_angles,
        "pair_angles",
        caption="Source points whose two best codes' planes meet at an angle above the red θ_thr straddle a gap "
        "between modes: the pair generator rejects them instead of interpolating across the gap.",
    )
    rows = "\n".join(
        f"| {name} | {m} | {v[m]['coverage']:.2f} | {v[m]['off_mode']:.3f} | {v[m]['share_error']:.3f} |"
        for name, v in metrics.items()
        for m in methods
    )
    solver_rows = "\n".join(
        f"| {name} | {v['solver']['iterations']} | {'yes' if v['solver']['converged'] else 'no'} "
        f"| {v['solver']['cell_mass_error']:.3f} | {v['solver']['batch_size']} "
        f"| {v['solver']['tau']:.2e} | {v['solver']['pair_acceptance']:.2f} |"
        for name, v in metrics.items()
    )
    report = f"""
{cfg.num_codes} codes per law, {cfg.num_samples} samples per generator. Coverage: fraction of modes
holding ≥ ¼ of their share; off-mode: fraction of samples farther than 3σ from every mode (mode
mixture); share error: total variation between the on-mode shares and uniform ("data" is a fresh
sample of the law: the floor of each score).

| law | generator | coverage | off-mode | share error |
|---|---|---|---|---|
{rows}

| law | solver steps | met tol | n·max cell-mass error (fresh) | final batch | τ | pair acceptance |
|---|---|---|---|---|---|---|
{solver_rows}
"""
    return metrics, report


register(
    "aeot_2d",
    AEOT2DConfig,
    description="AE-OT on 2-D toys: smoothed Brenier map vs AE-OT pairs vs an MLP push-forward (coverage, mixture).",
    sweep_keys={"dataset": "datasets"},  # one sweep_solve and one vmapped fit over the laws (angle_thresholds follow)
    # Steps are cheap next to compiling at this size: enough for the solver to meet its tolerance and for the
    # MLP to learn the ring (and show its mode mixture); 160 codes give every mode its share of codes.
    demo={
        "datasets": ["eight_gaussians"],
        "angle_thresholds": [0.1],
        "num_codes": 160,
        "num_samples": 1000,
        "max_iterations": 400,
        "mlp_steps": 300,
    },
)(run_aeot_2d)


# ------------------------------------------------------------------------------------------ digits
@dataclass(frozen=True)
class AEOTDigitsConfig:
    """Parameters of ``aeot_digits``.

    Attributes:
        train_fraction: share of the 1797 digits that train the autoencoder and give the codes (the
            rest is held out: the FID reference and the novelty reference).
        latent_dim: d of the codes. ae_width: hidden units of the autoencoder. ae_steps: its Adam steps.
        tol, max_iterations, max_batch_size: the semi-discrete solver's.
        tau_factors: τ of the smoothed map in units of the median score gap (one generator per value).
        pair_angle_quantile: θ_thr of the pair test as this quantile of the top-2 angles over the source
            (the latent has no known modes, so the threshold is set by the rejected fraction).
        num_samples: generated images per generator.
    """

    train_fraction: float = 0.7
    latent_dim: int = 8
    ae_width: int = 256
    ae_steps: int = 4000
    tol: float = 0.3
    max_iterations: int = 800
    max_batch_size: int = 2**17
    tau_factors: tuple[float, ...] = (0.1, 0.5, 2.0, 8.0)
    pair_angle_quantile: float = 0.7
    num_samples: int = 500

    def __post_init__(self):
        if not 0 < self.train_fraction < 1:
            raise ValueError(f"train_fraction must lie in (0, 1), got {self.train_fraction}")
        if not 0 < self.pair_angle_quantile <= 1:
            raise ValueError(f"pair_angle_quantile must lie in (0, 1], got {self.pair_angle_quantile}")
        check_positive(self, ("latent_dim", "ae_width", "ae_steps", "tol", "max_iterations", "max_batch_size"))
        check_positive(self, ("tau_factors", "num_samples"))


def _smoothed_codes(codes, heights, taus, key, num: int):
    """Codes of the smoothed map at every τ in one call: ``jax.vmap`` over τ (a leaf of the generator).

    No rejection test is set, so every proposal is kept; member i uses ``fold_in(key, 10 + i)``.
    """
    base = aeot.AEOTGenerator(None, codes, heights, tau=taus[0])
    taus = jnp.asarray(taus, codes.dtype)
    keys = jnp.stack([jr.fold_in(key, 10 + i) for i in range(len(taus))])

    def one(tau, k):
        return eqx.tree_at(lambda g: g.tau, base, tau).propose(k, num)[0]

    return jax.vmap(one)(taus, keys)


def run_aeot_digits(cfg: AEOTDigitsConfig, ctx: RunContext):
    """Sample grids, proxy FID and nearest-training-image distances of AE-OT generators on the digits."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ._digits_features import DigitsFeatures

    key = jr.key(ctx.seed)
    images, labels = dpflows.data.digits()
    perm = np.random.default_rng(ctx.seed).permutation(len(images))
    n_train = int(cfg.train_fraction * len(images))
    train, test = images[perm[:n_train]], images[perm[n_train:]]
    feats = DigitsFeatures(train, labels[perm[:n_train]], seed=ctx.seed)

    ae = dpflows.nn.MLPAutoencoder(jr.fold_in(key, 0), data_dim=64, latent_dim=cfg.latent_dim, width=cfg.ae_width)
    ae, ae_loss = aeot.train_autoencoder(
        ae, train, key=jr.fold_in(key, 1), num_steps=cfg.ae_steps, progress=ctx.progress
    )
    codes = jax.vmap(ae.encode)(jnp.asarray(train))
    # The cube source is [0, 1]ᵈ; centring and scaling the codes changes nothing in the OT problem's
    # structure (an affine change of y) but keeps the heights and τ in readable units.
    shift, scale = jnp.mean(codes, axis=0, keepdims=True), jnp.std(codes)
    codes = (codes - shift) / scale

    solver = aeot.SemiDiscreteOT(
        codes, tol=cfg.tol, max_iterations=cfg.max_iterations, max_batch_size=cfg.max_batch_size
    )
    res = solver.solve(jr.fold_in(key, 2), progress=ctx.progress, warn=False)  # reported in metrics
    gap = _median_gap(jr.fold_in(key, 3), codes, res.heights)

    def decode(z):
        return np.asarray(jax.vmap(ae.decode)(z * scale + shift))

    x_src = aeot.sample_source(jr.fold_in(key, 4), 8192, cfg.latent_dim)
    top = jax.lax.top_k(x_src @ codes.T + res.heights[None, :], 2)[1]
    threshold = float(np.quantile(np.asarray(aeot.pair_angles(codes, top[:, 0], top[:, 1])), cfg.pair_angle_quantile))

    generated: dict[str, np.ndarray] = {}
    smoothed = _smoothed_codes(codes, res.heights, [f * gap for f in cfg.tau_factors], key, cfg.num_samples)
    for factor, z in zip(cfg.tau_factors, smoothed, strict=True):
        generated[f"smoothed τ={factor:g}·gap"] = decode(z)
    pairs = aeot.AEOTGenerator(None, codes, res.heights, mode="pairs", angle_threshold=threshold)
    generated["pairs"] = decode(pairs.sample_codes(jr.fold_in(key, 5), cfg.num_samples))
    generated["hard map (copies)"] = decode(
        res.transport(aeot.sample_source(jr.fold_in(key, 6), cfg.num_samples, cfg.latent_dim))
    )
    mean, cov = np.mean(np.asarray(codes), 0), np.cov(np.asarray(codes), rowvar=False)
    gauss = np.random.default_rng(ctx.seed).multivariate_normal(mean, cov, cfg.num_samples)
    generated["Gaussian latent"] = decode(jnp.asarray(gauss, codes.dtype))
    generated["reconstructions"] = np.asarray(jax.vmap(ae)(jnp.asarray(test)))

    # Copies are measured against the decoder's images of the training codes (the hard map outputs
    # exactly those); held-out digits through the autoencoder set the reference distance.
    train_recon = decode(codes)
    test_nn = dpflows.metrics.nearest_neighbour_distances(generated["reconstructions"], train_recon)
    metrics: dict = {
        "autoencoder_loss": float(ae_loss[-100:].mean()),
        "solver": {
            "iterations": res.num_iterations,
            "converged": bool(res.converged),
            "cell_mass_error": float(res.cell_mass_error),
            "batch_size": res.batch_size,
            "median_gap": gap,
            "pair_threshold": threshold,
        },  # fmt: skip
        "held_out": {
            "fid": feats.fid(train, test),
            "median_nn": float(np.median(test_nn)),
            # per-pixel squared error of the autoencoder on held-out digits, and of the constant guess
            # "the mean training image" (a collapsed autoencoder scores about the latter)
            "reconstruction_mse": float(np.mean((generated["reconstructions"] - test) ** 2)),
            "mean_image_mse": float(np.mean((train.mean(axis=0) - test) ** 2)),
        },
    }
    for name, x in generated.items():
        nn = dpflows.metrics.nearest_neighbour_distances(x, train_recon)
        metrics[name] = {
            "fid": feats.fid(x, test),
            "median_nn": float(np.median(nn)),
            "near_copies": float(np.mean(nn < 0.25 * np.median(test_nn))),
        }

    names = list(generated)
    fig, axes = plt.subplots(len(names), 1, figsize=(10, 1.3 * len(names)))
    for ax, name in zip(np.atleast_1d(axes), names, strict=True):
        row = generated[name][:16].reshape(-1, 8, 8)
        ax.imshow(np.concatenate(list(row), axis=1), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(f"{name}: proxy FID {metrics[name]['fid']:.2f}", fontsize=9)
        ax.axis("off")
    ctx.save_figure(
        fig,
        "samples",
        caption="Every row should show varied, recognisable digits; the hard map's are copies of decoded training "
        "codes, the smoothed map's are new images between them, and the reconstructions are the ceiling.",
    )

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6))
    bins = np.linspace(0, max(1e-6, float(np.quantile(test_nn, 0.99)) * 1.3), 40)
    ax1.hist(test_nn, bins=bins, histtype="step", color="k", lw=2, label="held-out (reconstructed)", density=True)
    for name in names[:-1]:
        ax1.hist(dpflows.metrics.nearest_neighbour_distances(generated[name], train_recon), bins=bins, histtype="step",
                 density=True, label=name)  # fmt: skip
    ax1.set_xlabel("distance to the nearest decoded training code")
    ax1.legend(fontsize=7)
    smooth = [n for n in names if n.startswith("smoothed")]
    ax2.plot(
        [metrics[n]["median_nn"] for n in smooth], [metrics[n]["fid"] for n in smooth], "o-", label="smoothed (τ ↑)"
    )
    for n in ("pairs", "hard map (copies)", "Gaussian latent"):
        ax2.plot(metrics[n]["median_nn"], metrics[n]["fid"], "s", label=n)
    ax2.axvline(metrics["held_out"]["median_nn"], color="k", ls=":", label="held-out median")
    ax2.set_xlabel("median distance to the nearest decoded training code")
    ax2.set_ylabel("proxy FID vs held-out")
    ax2.legend(fontsize=7)
    ctx.save_figure(
        fig,
        "novelty_vs_fid",
        caption="The hard map sits at distance 0 (it copies); the smoothed map moves right (novel samples) as τ "
        "grows, at some cost in proxy FID; the dotted line is where held-out digits sit.",
    )

    rows = "\n".join(
        f"| {n} | {metrics[n]['fid']:.2f} | {metrics[n]['median_nn']:.3f} | {metrics[n]['near_copies']:.2f} |"
        for n in names
    )
    held = metrics["held_out"]
    report = f"""
Autoencoder (latent {cfg.latent_dim}) on {n_train} training digits; {len(test)} held out (per-pixel
reconstruction error on them {held["reconstruction_mse"]:.4f}, against {held["mean_image_mse"]:.4f} for the
constant guess "mean training image"). Semi-discrete
OT from [0, 1]^{cfg.latent_dim} to the {n_train} codes: {res.num_iterations} Adam steps (tol
met: {bool(res.converged)}), fresh n·max cell-mass error {float(res.cell_mass_error):.3f}. τ in units of
the median score gap ({gap:.3g}); pair threshold θ_thr = {threshold:.3g} rad (the
{cfg.pair_angle_quantile:g} quantile of the top-2 angles).

Proxy FID: Fréchet distance in the hidden layer of a digits classifier trained on the training split,
against the held-out images (training vs held-out images: {metrics["held_out"]["fid"]:.2f}). Novelty:
median distance of a sample to its nearest *decoded training code* (the images the hard OT map can
produce: its samples sit at 0); reference: held-out digits through the autoencoder,
{metrics["held_out"]["median_nn"]:.3f}. Near copies: the fraction closer than a quarter of that.

| generator | proxy FID | median NN distance | near copies |
|---|---|---|---|
{rows}
"""
    return metrics, report


register(
    "aeot_digits",
    AEOTDigitsConfig,
    description="AE-OT on scikit-learn digits: smoothed map at several τ, pairs, Gaussian latent (FID, novelty).",
    sweep_keys={"tau_factor": "tau_factors"},  # one jax.vmap of the smoothed generator over τ
    # A narrower autoencoder trained long enough to reconstruct digits (50 steps collapsed it to one blob),
    # 539 training codes (train_fraction 0.3) so that 150 solver steps balance the cells, and two τ for the
    # copy/novelty trade-off.
    demo={
        "train_fraction": 0.3,
        "latent_dim": 4,
        "ae_width": 64,
        "ae_steps": 1000,
        "max_iterations": 150,
        "max_batch_size": 2**14,
        "tau_factors": [0.5, 4.0],
        "num_samples": 64,
    },
)(run_aeot_digits)
