"""DP sliced-Wasserstein flow experiments (METHODS.md §4f): ``swf_2d`` and ``swf_digits``.

Methods at each privacy level (``epsilons``; ``.inf`` is the non-private flow):

* ``flow``: DPSWflow, one release of ``num_projections`` directions, ``flow_steps`` steps;
* ``flow_r``: DPSWflow-r, a fresh release per step on a Poisson batch (rate ``sampling_rate``);
* ``gen``: DPSWgen, an MLP generator trained on a ``flow_r``-style release (same ε, δ).

Release keys come from OS entropy unless ``reproducible_noise`` (then from ``seed``, which voids the
guarantee; the report says so).

The ε grid of one method on one dataset is one compiled program: ``private_release`` draws a release
per ε (the only step that reads the private rows), and the flows on those releases run as one
``dpflows.sweep`` (the generators as one ``jax.vmap`` of the ``dpflows.fit``-based trainer).
Every member uses the same run key, as the per-ε runs did.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import dpflows
from dpflows import data, metrics, ot, swf
from dpflows.nn import MLPGenerator

from ._common import check_positive, release_key
from ._registry import RunContext, register

METHODS = ("flow", "flow_r", "gen")
DATASETS = ("eight_gaussians", "two_moons")


def _check(cfg) -> None:
    if not cfg.epsilons or any(not e > 0 for e in cfg.epsilons):
        raise ValueError(f"epsilons must be a non-empty list of values > 0 (.inf allowed), got {cfg.epsilons}")
    if not 0 < cfg.delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {cfg.delta}")
    if not 0 < cfg.sampling_rate <= 1:
        raise ValueError(f"sampling_rate must be in (0, 1], got {cfg.sampling_rate}")
    if not cfg.methods or set(cfg.methods) - set(METHODS):
        raise ValueError(f"methods must be a non-empty subset of {METHODS}, got {list(cfg.methods)}")


def _privacy_note(cfg) -> str:
    if cfg.reproducible_noise:
        return "**reproducible_noise: true — the noise is derived from the seed, so no privacy claim holds.**"
    return "Release keys from OS entropy (not recorded)."


def _releases(cfg, method: str, y, rkeys):
    """One release per ε of ``cfg.epsilons`` (keys ``rkeys``) of private rows ``y``, and their certificates.

    Exact tables are padded to the widest Poisson batch of the grid so that the releases stack.
    """
    kwargs = dict(delta=cfg.delta, num_projections=cfg.num_projections)
    if method != "flow":
        kwargs["batch_size"] = max(1, round(cfg.sampling_rate * y.shape[0])) if cfg.sampling_rate < 1 else None
        kwargs["num_releases"] = cfg.resample_steps if method == "flow_r" else cfg.generator_steps
    drawn = [swf.private_release(rk, y, epsilon=eps, **kwargs) for rk, eps in zip(rkeys, cfg.epsilons, strict=True)]
    width = max(release.tables.shape[-1] for release, _ in drawn)
    return [release.pad_tables(width) for release, _ in drawn], [cert for _, cert in drawn]


def _samples(cfg, method: str, releases, x0, key):
    """Samples (len(releases), len(x0), d) of ``method`` on each release: one sweep, or one vmapped fit."""
    if method in ("flow", "flow_r"):
        step_size = cfg.step_size if method == "flow" else cfg.resample_step_size
        num_steps = cfg.flow_steps if method == "flow" else cfg.resample_steps
        flows = [swf.DPSlicedWassersteinFlow(release, step_size=step_size) for release in releases]
        state = flows[0].init(x0)
        if len(flows) == 1:  # a sweep needs two members
            out, _ = dpflows.run(flows[0], state, key, num_steps)
            return out.x[None]
        out, _ = dpflows.sweep(flows, state, key, num_steps, throw=True)
        return out.x
    d = x0.shape[1]
    gen = MLPGenerator(jr.fold_in(key, 1), latent_dim=d, data_dim=d, width=cfg.generator_width, depth=2)
    z = jr.normal(jr.fold_in(key, 2), x0.shape, dtype=x0.dtype)

    def train(release):
        res = swf.train_sliced_generator(
            gen,
            release,
            key=key,
            num_steps=cfg.generator_steps,
            batch_size=cfg.generator_batch,
            learning_rate=cfg.learning_rate,
        )
        return jax.vmap(res.generator)(z)

    stacked = jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *releases)
    return eqx.filter_vmap(train)(stacked)


def _eps_label(eps: float) -> str:
    return "inf" if math.isinf(eps) else f"{eps:g}"


def _mean_sd(values) -> str:
    v = np.asarray(values, np.float64)
    return f"{v.mean():.3f} ± {v.std(ddof=1) if v.size > 1 else 0.0:.3f}"


# ------------------------------------------------------------------------------------------- 2-D
@dataclass(frozen=True)
class SWF2DConfig:
    """Parameters of ``swf_2d``.

    Attributes:
        datasets: subset of ``eight_gaussians``, ``two_moons`` (inside the unit disk).
        epsilons: privacy levels (``.inf``: no noise). delta: δ.
        methods: subset of ``flow``, ``flow_r``, ``gen``.
        num_private: private rows. num_particles: particles (and generator samples).
        num_projections: k. step_size / flow_steps: the fixed-release flow.
        resample_step_size / resample_steps: DPSWflow-r. sampling_rate: its Poisson rate.
        generator_steps / generator_batch / generator_width / learning_rate: DPSWgen.
        num_seeds: repetitions. reproducible_noise: derive release keys from ``seed``.
    """

    datasets: tuple[str, ...] = DATASETS
    epsilons: tuple[float, ...] = (math.inf, 10.0, 5.0, 1.0)
    delta: float = 1e-5
    methods: tuple[str, ...] = METHODS
    num_private: int = 20000
    num_particles: int = 2000
    num_projections: int = 64
    step_size: float = 1.0
    flow_steps: int = 300
    resample_step_size: float = 0.2
    resample_steps: int = 300
    sampling_rate: float = 0.1
    generator_steps: int = 300
    generator_batch: int = 256
    generator_width: int = 64
    learning_rate: float = 3e-3
    num_seeds: int = 1
    reproducible_noise: bool = False

    def __post_init__(self):
        _check(self)
        if not self.datasets or set(self.datasets) - set(DATASETS):
            raise ValueError(f"datasets must be a non-empty subset of {DATASETS}, got {list(self.datasets)}")
        check_positive(
            self,
            (
                "num_private",
                "num_particles",
                "num_projections",
                "step_size",
                "flow_steps",
                "resample_step_size",
                "resample_steps",
                "generator_steps",
                "generator_batch",
                "generator_width",
                "learning_rate",
                "num_seeds",
            ),
        )


def run_swf_2d(cfg: SWF2DConfig, ctx: RunContext):
    """Particles of each method × ε on 8 Gaussians / two moons; sliced W₂² and MMD to fresh data."""
    import matplotlib.pyplot as plt

    rows, results = [], {}
    fig, axes = plt.subplots(
        len(cfg.datasets) * len(cfg.methods),
        len(cfg.epsilons),
        figsize=(2.4 * len(cfg.epsilons), 2.4 * len(cfg.datasets) * len(cfg.methods)),
        squeeze=False,
    )
    total = len(cfg.datasets) * len(cfg.methods) * len(cfg.epsilons) * cfg.num_seeds
    bar = ctx.grid_bar(total, "swf_2d")
    scores, shown = {}, {}
    for di, name in enumerate(cfg.datasets):
        draw = data.eight_gaussians if name == "eight_gaussians" else data.two_moons
        for s in range(cfg.num_seeds):
            key = jr.fold_in(jr.key(ctx.seed), 1000 * di + s)
            y, _ = draw(jr.fold_in(key, 0), cfg.num_private)
            test, _ = draw(jr.fold_in(key, 1), cfg.num_particles)
            x0 = jr.normal(jr.fold_in(key, 2), (cfg.num_particles, 2), dtype=y.dtype)
            dirs = ot.random_directions(jr.fold_in(key, 4), 2, 256)
            for mi, method in enumerate(cfg.methods):
                rkeys = [
                    release_key(ctx.seed, cfg.reproducible_noise, di, mi, ei, s) for ei in range(len(cfg.epsilons))
                ]
                releases, _ = _releases(cfg, method, y, rkeys)
                for ei, x in enumerate(_samples(cfg, method, releases, x0, jr.fold_in(key, 3))):
                    entry = scores.setdefault((di, mi, ei), {"sliced_w2": [], "mmd": []})
                    entry["sliced_w2"].append(float(ot.sliced_wasserstein(x, test, directions=dirs)))
                    entry["mmd"].append(metrics.mmd(x, test))
                    shown[(di, mi, ei)] = (x, test)
                bar.update(len(cfg.epsilons))
    for di, name in enumerate(cfg.datasets):
        for mi, method in enumerate(cfg.methods):
            for ei, eps in enumerate(cfg.epsilons):
                sws, mmds = scores[(di, mi, ei)]["sliced_w2"], scores[(di, mi, ei)]["mmd"]
                x, test = shown[(di, mi, ei)]
                ax = axes[di * len(cfg.methods) + mi, ei]
                ax.scatter(*np.asarray(test).T, s=1, c="0.8")
                ax.scatter(*np.asarray(x).T, s=1, c="C0")
                ax.set(xlim=(-1.2, 1.2), ylim=(-1.2, 1.2), xticks=[], yticks=[])
                ax.set_title(f"{name[:6]} {method} ε={_eps_label(eps)}", fontsize=8)
                results[f"{name}/{method}/eps={_eps_label(eps)}"] = {"sliced_w2": sws, "mmd": mmds}
                rows.append(f"| {name} | {method} | {_eps_label(eps)} | {_mean_sd(sws)} | {_mean_sd(mmds)} |")
    bar.close()
    fig.tight_layout()
    ctx.save_figure(fig, "particles")
    plt.close(fig)
    report = f"""# DP sliced-Wasserstein flow on 2-D toys

{cfg.num_private} private points per law, {cfg.num_particles} particles, k = {cfg.num_projections}, δ = {cfg.delta}.
{_privacy_note(cfg)} Sliced W₂² (256 directions) and MMD against {cfg.num_particles} fresh clean points
(mean ± sd over {cfg.num_seeds} seed(s)).

| law | method | ε | sliced W₂² | MMD |
|---|---|---|---|---|
""" + "\n".join(rows)
    return results, report + "\n"


register(
    "swf_2d",
    SWF2DConfig,
    description="DP sliced-Wasserstein flow (fixed / resampled) and DPSWgen on 8 Gaussians and two moons.",
    sweep_keys={"epsilon": "epsilons"},  # one dpflows.sweep (or vmapped fit) over the ε releases per method
    demo={
        "datasets": ["eight_gaussians"],
        "epsilons": [5.0],
        "methods": ["flow", "gen"],
        "num_private": 1000,
        "num_particles": 200,
        "num_projections": 16,
        "flow_steps": 20,
        "generator_steps": 10,
    },
)(run_swf_2d)


# ---------------------------------------------------------------------------------------- digits
@dataclass(frozen=True)
class SWFDigitsConfig:
    """Parameters of ``swf_digits``.

    Attributes:
        epsilons / delta / methods: as in ``swf_2d``.
        latent_dim: autoencoder code size (codes on the unit sphere). ae_steps: its Adam steps.
        per_class: private rows per class (each class's flow sees only its class: the ten releases
            touch disjoint rows, so together they are (ε, δ)-DP by parallel composition).
        samples_per_class: generated codes per class (decoded and labelled).
        num_projections, step sizes, steps, sampling_rate, generator settings: as in ``swf_2d``.
        num_seeds: repetitions (new noise and particles; same autoencoder and split).
        reproducible_noise: derive release keys from ``seed``.
    """

    epsilons: tuple[float, ...] = (math.inf, 10.0, 5.0, 1.0)
    delta: float = 1e-5
    methods: tuple[str, ...] = METHODS
    latent_dim: int = 8
    ae_steps: int = 3000
    per_class: int = 80
    samples_per_class: int = 100
    num_projections: int = 70
    step_size: float = 1.0
    flow_steps: int = 300
    resample_step_size: float = 0.1
    resample_steps: int = 300
    sampling_rate: float = 0.25
    generator_steps: int = 300
    generator_batch: int = 128
    generator_width: int = 128
    learning_rate: float = 3e-3
    num_seeds: int = 5
    reproducible_noise: bool = False

    def __post_init__(self):
        _check(self)
        check_positive(
            self,
            (
                "latent_dim",
                "ae_steps",
                "per_class",
                "samples_per_class",
                "num_projections",
                "step_size",
                "flow_steps",
                "resample_step_size",
                "resample_steps",
                "generator_steps",
                "generator_batch",
                "generator_width",
                "learning_rate",
                "num_seeds",
            ),
        )


def run_swf_digits(cfg: SWFDigitsConfig, ctx: RunContext):
    """Public half → autoencoder and feature classifier; private half → one DP flow per class."""
    import matplotlib.pyplot as plt
    from sklearn.linear_model import LogisticRegression

    from ._digits_features import DigitsFeatures

    images, labels = dpflows.data.digits()
    rng = np.random.default_rng(ctx.seed)
    perm = rng.permutation(len(images))
    pub, priv = perm[: len(perm) // 2], perm[len(perm) // 2 :]
    x_pub, y_pub = images[pub], labels[pub]
    key = jr.key(ctx.seed)
    ae = dpflows.aeot.MLPAutoencoder(jr.fold_in(key, 0), data_dim=64, latent_dim=cfg.latent_dim, normalize=True)
    ae, _ = dpflows.aeot.train_autoencoder(ae, x_pub, key=jr.fold_in(key, 1), num_steps=cfg.ae_steps)
    feats = DigitsFeatures(x_pub, y_pub, seed=ctx.seed)
    codes_priv = np.asarray(jax.vmap(ae.encode)(jnp.asarray(images[priv])))
    codes_pub = jax.vmap(ae.encode)(jnp.asarray(x_pub))
    by_class = [codes_priv[labels[priv] == c][: cfg.per_class] for c in range(10)]
    if min(len(c) for c in by_class) < cfg.per_class:
        raise ValueError(f"per_class must be <= {min(len(c) for c in by_class)} (the smallest private class)")
    n = cfg.samples_per_class
    gen_labels = np.repeat(np.arange(10), n)
    dirs = ot.random_directions(jr.fold_in(key, 2), cfg.latent_dim, 256)

    def score(codes):
        imgs = np.asarray(jax.vmap(ae.decode)(codes))
        clf = LogisticRegression(max_iter=2000).fit(imgs, gen_labels)
        return (
            imgs,
            {
                "fid": feats.fid(imgs, x_pub),
                "latent_sw2": float(ot.sliced_wasserstein(codes, codes_pub, directions=dirs)),
                "latent_mmd": metrics.mmd(codes, codes_pub),
                "accuracy": float(clf.score(x_pub, y_pub)),
            },
        )

    results, rows, grids = {}, [], {}
    bar = ctx.grid_bar(len(cfg.methods) * len(cfg.epsilons) * cfg.num_seeds * 10, "swf_digits")
    cert_lines = []
    for mi, method in enumerate(cfg.methods):
        runs = {ei: [] for ei in range(len(cfg.epsilons))}
        for s in range(cfg.num_seeds):
            codes, certs = {ei: [] for ei in runs}, None
            for c in range(10):
                k = jr.fold_in(key, 10_000 + 1000 * s + c)
                x0 = jr.normal(jr.fold_in(k, 0), (n, cfg.latent_dim))
                rkeys = [release_key(ctx.seed, cfg.reproducible_noise, mi, ei, s, c) for ei in runs]
                releases, certs = _releases(cfg, method, jnp.asarray(by_class[c]), rkeys)
                for ei, x in enumerate(_samples(cfg, method, releases, x0, jr.fold_in(k, 1))):
                    codes[ei].append(x)
                bar.update(len(cfg.epsilons))
            for ei, eps in enumerate(cfg.epsilons):
                imgs, m = score(jnp.concatenate(codes[ei]))
                runs[ei].append(m)
                if s == 0:
                    grids[(method, eps)] = imgs.reshape(10, n, 8, 8)[:, :6]
                    cert_lines.append(f"- {method}, ε = {_eps_label(eps)}: {certs[ei]}".split("\n")[0])
        for ei, eps in enumerate(cfg.epsilons):
            agg = {name: [r[name] for r in runs[ei]] for name in runs[ei][0]}
            results[f"{method}/eps={_eps_label(eps)}"] = agg
            rows.append(
                f"| {method} | {_eps_label(eps)} | {_mean_sd(agg['fid'])} | {_mean_sd(agg['latent_sw2'])} | "
                f"{_mean_sd(agg['latent_mmd'])} | {_mean_sd(agg['accuracy'])} |"
            )
    bar.close()
    # Reference rows: the private codes themselves (what a perfect generator would give).
    ref_codes = jnp.asarray(np.concatenate([c[: min(n, cfg.per_class)] for c in by_class]))
    ref_imgs = np.asarray(jax.vmap(ae.decode)(ref_codes))
    ref_labels = np.repeat(np.arange(10), min(n, cfg.per_class))
    ref_acc = LogisticRegression(max_iter=2000).fit(ref_imgs, ref_labels).score(x_pub, y_pub)
    ref_fid = feats.fid(ref_imgs, x_pub)
    results["reference/private_codes"] = {"fid": ref_fid, "accuracy": float(ref_acc)}

    nm, ne = len(cfg.methods), len(cfg.epsilons)
    fig, axes = plt.subplots(nm, ne, figsize=(3.2 * ne, 2.2 * nm), squeeze=False)
    for ax, ((method, eps), g) in zip(axes.ravel(), grids.items(), strict=True):
        tile = g.transpose(1, 2, 0, 3).reshape(g.shape[1] * 8, 10 * 8)  # rows: samples, columns: classes
        ax.imshow(tile, cmap="gray_r", vmin=0, vmax=1)
        ax.set_axis_off()
        ax.set_title(f"{method}, ε = {_eps_label(eps)}", fontsize=8)
    fig.tight_layout()
    ctx.save_figure(fig, "samples")
    plt.close(fig)
    report = f"""# DP sliced-Wasserstein flow on the 8×8 digits

Public half ({len(pub)} images): autoencoder (latent {cfg.latent_dim}, unit-sphere codes) and the proxy-FID
feature classifier. Private half: {cfg.per_class} codes per class, one DP model per class (disjoint rows:
parallel composition keeps the overall (ε, δ = {cfg.delta})). {_privacy_note(cfg)}
Metrics against the public half (real images never seen by the models): proxy FID, latent sliced W₂² and
MMD to the public codes, and the accuracy on the public images of a logistic regression trained on the
{n} generated, labelled samples per class. Mean ± sd over {cfg.num_seeds} seed(s).
Reference (the private codes decoded): FID {ref_fid:.3f}, accuracy {ref_acc:.3f}.

| method | ε | proxy FID | latent SW₂² | latent MMD | downstream accuracy |
|---|---|---|---|---|---|
""" + "\n".join(rows)
    report += "\n\nCertificates (per class; the ten compose in parallel):\n" + "\n".join(cert_lines)
    return results, report + "\n"


register(
    "swf_digits",
    SWFDigitsConfig,
    description="DPSWflow / DPSWflow-r / DPSWgen on the digits in an autoencoder latent (FID, SW, accuracy).",
    sweep_keys={"epsilon": "epsilons"},  # one dpflows.sweep (or vmapped fit) over the ε releases per method
    demo={
        "epsilons": [5.0],
        "methods": ["flow"],
        "ae_steps": 100,
        "per_class": 20,
        "samples_per_class": 20,
        "num_projections": 16,
        "flow_steps": 20,
        "resample_steps": 10,
        "generator_steps": 10,
        "num_seeds": 1,
    },
)(run_swf_digits)
