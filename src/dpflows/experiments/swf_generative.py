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
import optax

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
        sub = getattr(cfg, "num_subprojections", None)
        flows = [swf.DPSlicedWassersteinFlow(r, step_size=step_size, num_subprojections=sub) for r in releases]
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


def _digit_tile(grid) -> np.ndarray:
    """(classes, rows, 8, 8) images → one image with a column per class and NaN one-pixel gutters."""
    classes, rows = grid.shape[:2]
    tile = np.full((9 * rows - 1, 9 * classes - 1), np.nan)
    for c in range(classes):
        for r in range(rows):
            tile[9 * r : 9 * r + 8, 9 * c : 9 * c + 8] = grid[c, r]
    return tile


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
            # Reference: the particles before any step (N(0, I)), scored like every method's output.
            start = scores.setdefault((di, "initial"), {"sliced_w2": [], "mmd": []})
            start["sliced_w2"].append(float(ot.sliced_wasserstein(x0, test, directions=dirs)))
            start["mmd"].append(metrics.mmd(x0, test))
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
        start = scores[(di, "initial")]
        results[f"{name}/initial"] = start
        rows.append(f"| {name} | initial N(0, I) | — | {_mean_sd(start['sliced_w2'])} | {_mean_sd(start['mmd'])} |")
        for mi, method in enumerate(cfg.methods):
            for ei, eps in enumerate(cfg.epsilons):
                sws, mmds = scores[(di, mi, ei)]["sliced_w2"], scores[(di, mi, ei)]["mmd"]
                x, test = shown[(di, mi, ei)]
                ax = axes[di * len(cfg.methods) + mi, ei]
                ax.scatter(*np.asarray(test).T, s=1, c="0.8")
                ax.scatter(*np.asarray(x).T, s=1, c="C0")
                ax.set(xlim=(-1.2, 1.2), ylim=(-1.2, 1.2), xticks=[], yticks=[])
                ax.set_title(f"{name.replace('_', ' ')}: {method}, ε = {_eps_label(eps)}", fontsize=8)
                results[f"{name}/{method}/eps={_eps_label(eps)}"] = {"sliced_w2": sws, "mmd": mmds}
                rows.append(f"| {name} | {method} | {_eps_label(eps)} | {_mean_sd(sws)} | {_mean_sd(mmds)} |")
    bar.close()
    fig.tight_layout()
    ctx.save_figure(
        fig,
        "particles",
        caption="Blue: samples, grey: fresh clean data. At ε = inf the flow's particles should lie on the data; a "
        "finite ε spreads them (the release's noise); where DPSWgen runs, the flow should beat it at equal ε.",
    )
    plt.close(fig)
    report = f"""
{cfg.num_private} private points per law, {cfg.num_particles} particles, k = {cfg.num_projections}, δ = {cfg.delta}.
{_privacy_note(cfg)} Sliced W₂² (256 directions) and MMD against {cfg.num_particles} fresh clean points
(mean ± sd over {cfg.num_seeds} seed(s)); "initial" scores the N(0, I) particles every method starts from.

| law | method | ε | sliced W₂² | MMD |
|---|---|---|---|---|
""" + "\n".join(rows)
    return results, report + "\n"


register(
    "swf_2d",
    SWF2DConfig,
    description="DP sliced-Wasserstein flow (fixed / resampled) and DPSWgen on 8 Gaussians and two moons.",
    sweep_keys={"epsilon": "epsilons"},  # one dpflows.sweep (or vmapped fit) over the ε releases per method
    # ε = ∞ (the flow alone) next to one private level; steps are cheap next to compiling at this size, and
    # each method is its own compiled programs (release tables, loop), so the demo runs the flow only.
    demo={
        "datasets": ["eight_gaussians"],
        "epsilons": [math.inf, 10.0],
        "methods": ["flow"],
        "num_private": 2000,
        "num_particles": 300,
        "num_projections": 16,
        "flow_steps": 100,
        "generator_steps": 200,
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
        conditional: True (the default): one model per class on ``per_class`` rows, scored against
            the public half. False: the official setup (METHODS §4c/§4d), one unconditional model on
            every private code, with hyper-parameters tuned on a validation split and scored on a
            test split (see :func:`_run_unconditional`); the fields below apply to it only.
        public_fraction / validation_fraction / test_fraction: the split of the digits (private:
            the rest). max_private: keep only this many private rows (None: all; an ablation of the
            rows per release). num_subprojections: L directions per flow step (None: all k; both modes).
        private_batch: expected Poisson batch B of DPSWflow-r and DPSWgen (rate B / private rows).
        step_size_grid: flow step sizes tried (one sweep per release; empty: ``step_size``, and
            ``resample_step_size`` for flow_r). record_every: step counts tried, read off each
            trajectory every this many steps up to ``flow_steps`` / ``resample_steps`` /
            ``generator_steps``. resample_epochs / generator_epochs: passes E over the private rows,
            each its own release of T = E · rows / B (the accountant's σ grows with T).
        learning_rate_grid: DPSWgen learning rates tried (one vmapped fit; empty: ``learning_rate``).
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
    conditional: bool = True
    public_fraction: float = 0.5
    validation_fraction: float = 0.0
    test_fraction: float = 0.0
    max_private: int | None = None
    num_subprojections: int | None = None
    private_batch: int = 250
    step_size_grid: tuple[float, ...] = ()
    record_every: int = 100
    resample_epochs: tuple[float, ...] = (35.0,)
    generator_epochs: tuple[float, ...] = (35.0,)
    learning_rate_grid: tuple[float, ...] = ()

    def __post_init__(self):
        _check(self)
        if not self.conditional:
            fractions = (self.public_fraction, self.validation_fraction, self.test_fraction)
            if any(not f > 0 for f in fractions) or sum(fractions) >= 1:
                raise ValueError(
                    "public_fraction, validation_fraction and test_fraction must be > 0 and sum to < 1 (the private "
                    f"rows are the rest) with conditional: false, got {fractions}"
                )
            for name in ("flow_steps", "resample_steps", "generator_steps"):
                if getattr(self, name) % self.record_every:
                    raise ValueError(
                        f"record_every must divide {name}, got {self.record_every} and {getattr(self, name)}"
                    )
        if self.max_private is not None and not self.max_private > 1:
            raise ValueError(f"max_private must be None or > 1, got {self.max_private}")
        if self.num_subprojections is not None and not self.num_subprojections > 0:
            raise ValueError(f"num_subprojections must be None or > 0, got {self.num_subprojections}")
        for name in ("step_size_grid", "learning_rate_grid"):
            if any(not v > 0 for v in getattr(self, name)):
                raise ValueError(f"{name} must hold values > 0, got {getattr(self, name)}")
        check_positive(self, ("private_batch", "record_every", "resample_epochs", "generator_epochs"))
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
    """Public half → autoencoder and feature classifier; private half → one DP flow per class.

    With ``conditional: false``, the official unconditional setup instead (:func:`_run_unconditional`).
    """
    if not cfg.conditional:
        return _run_unconditional(cfg, ctx)
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
                "projected_spread": float(jnp.mean(jnp.std(codes @ dirs.T, axis=0))),
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
    shown = next(iter(grids.values())).shape[1]
    # 0.3 inch per 8×8 digit, drawn with square pixels and a grey one-pixel gutter between digits.
    fig, axes = plt.subplots(nm, ne, figsize=(3.3 * ne, (0.3 * shown + 0.5) * nm), squeeze=False)
    cmap = plt.get_cmap("gray_r").with_extremes(bad="0.75")
    for ax, ((method, eps), g) in zip(axes.ravel(), grids.items(), strict=True):
        ax.imshow(_digit_tile(g), cmap=cmap, vmin=0, vmax=1, aspect="equal", interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(f"{method}, ε = {_eps_label(eps)}", fontsize=8)
    fig.tight_layout()
    ctx.save_figure(
        fig,
        "samples",
        caption="One column per class (0–9), decoded generated codes: each column should read as its digit; "
        "more privacy (smaller ε) blurs them, the ε = inf panel is the non-private flow.",
    )
    plt.close(fig)
    report = f"""
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


# ------------------------------------------------------------------- digits, unconditional (official)
def _positions(state):
    """What a tuning trajectory records: the particles' positions."""
    return state.x


class _GeneratorSamples(eqx.Module):
    """G(z) on fixed latents z: what a DPSWgen run records along training."""

    z: jax.Array

    def __call__(self, generator):
        return jax.vmap(generator)(self.z)


def _num_releases(cfg, method: str, epochs: float, rows: int) -> int:
    """T: 1 for DPSWflow, else E passes over the rows in Poisson batches of ``private_batch``."""
    return 1 if method == "flow" else max(1, round(epochs * rows / min(cfg.private_batch, rows)))


def _draw(cfg, method: str, y, num_releases: int, epsilons, rkeys):
    """One release per ε of ``epsilons`` (keys ``rkeys``; the only step reading ``y``), padded to stack."""
    kwargs = dict(delta=cfg.delta, num_projections=cfg.num_projections, num_releases=num_releases)
    if method != "flow":
        kwargs["batch_size"] = min(cfg.private_batch, y.shape[0])
    drawn = [swf.private_release(rk, y, epsilon=eps, **kwargs) for rk, eps in zip(rkeys, epsilons, strict=True)]
    width = max(release.tables.shape[-1] for release, _ in drawn)
    return [release.pad_tables(width) for release, _ in drawn], [cert for _, cert in drawn]


def _stack(trees):
    return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *trees)


def _flow_paths(cfg, releases, step_sizes, states, key, num_steps, record_every):
    """Recorded positions (len(releases), len(step_sizes), records, n, d): one sweep over release × step size.

    ``states``: one initial state for all, or a list with one per release (then each member has its own key).
    """
    flows = [
        swf.DPSlicedWassersteinFlow(r, step_size=h, num_subprojections=cfg.num_subprojections)
        for r in releases
        for h in step_sizes
    ]
    if isinstance(states, list):
        state = _stack([st for st in states for _ in step_sizes])
        kw = dict(state_in_axes=0, independent_keys=True)
    else:
        state, kw = states, {}
    if len(flows) == 1:  # a sweep needs two members
        one = jax.tree_util.tree_map(lambda a: a[0], state) if kw else state
        _, trace = dpflows.run(flows[0], one, key, num_steps, record_every=record_every, record=_positions)
        rec = trace.states[None]
    else:
        _, trace = dpflows.sweep(flows, state, key, num_steps, record_every=record_every, record=_positions, **kw)
        rec = trace.states
    return rec.reshape(len(releases), len(step_sizes), *rec.shape[1:])


def _generator_paths(cfg, releases, learning_rates, zs, keys, num_steps, record_every):
    """Recorded G(z) (len(releases), len(learning_rates), records, n, d): one vmapped ``dpflows.fit``.

    Release r, latents ``zs[r]`` and key ``keys[r]`` go together; every learning rate sees them all.
    """
    d = releases[0].dim

    def train(release, z, key, lr):
        gen = MLPGenerator(jr.fold_in(key, 1), latent_dim=d, data_dim=d, width=cfg.generator_width, depth=2)
        loss = swf.SlicedLoss(release, True, batch_size=cfg.generator_batch, latent_dim=d)
        opt = optax.inject_hyperparams(optax.adam)(learning_rate=lr)
        res = dpflows.fit(
            loss, gen, opt, key, num_steps, has_aux=True, with_step=True,
            record_every=record_every, record=_GeneratorSamples(z),
        )  # fmt: skip
        return res.trace.states

    per_lr = eqx.filter_vmap(train, in_axes=(None, None, None, 0))
    both = eqx.filter_vmap(per_lr, in_axes=(0, 0, 0, None))
    return both(_stack(releases), jnp.stack(zs), jnp.stack(keys), jnp.asarray(learning_rates, zs[0].dtype))


def _run_unconditional(cfg: SWFDigitsConfig, ctx: RunContext):
    """The official setup (METHODS §4c/§4d): one unconditional model on all private codes, tuned, then tested.

    Split: public (autoencoder, proxy-FID features), private (the mechanism's rows), validation
    (tuning), test (scoring). Per (method, ε), every setting on the grid runs on one tuning release
    (flow: step sizes as one sweep, step counts read off the recorded trajectory; flow_r / DPSWgen:
    each number of passes E is its own release, since T changes σ) and is scored by proxy FID
    against the validation images. The chosen setting then runs ``num_seeds`` times on fresh
    releases and particles and is scored against the test images.
    """
    import matplotlib.pyplot as plt

    from ._digits_features import DigitsFeatures

    images, labels = dpflows.data.digits()
    perm = np.random.default_rng(ctx.seed).permutation(len(images))
    sizes = [round(f * len(images)) for f in (cfg.public_fraction, cfg.validation_fraction, cfg.test_fraction)]
    pub, val, test, priv = np.split(perm, np.cumsum(sizes))
    priv = priv[: cfg.max_private]
    key = jr.key(ctx.seed)
    ae = dpflows.aeot.MLPAutoencoder(jr.fold_in(key, 0), data_dim=64, latent_dim=cfg.latent_dim, normalize=True)
    ae, _ = dpflows.aeot.train_autoencoder(ae, images[pub], key=jr.fold_in(key, 1), num_steps=cfg.ae_steps)
    feats = DigitsFeatures(images[pub], labels[pub], seed=ctx.seed)
    encode, decode = jax.jit(jax.vmap(ae.encode)), jax.jit(jax.vmap(ae.decode))
    y = encode(jnp.asarray(images[priv]))  # the private rows: read only by swf.private_release
    codes_pub, codes_test = encode(jnp.asarray(images[pub])), encode(jnp.asarray(images[test]))
    d, m = cfg.latent_dim, len(priv)
    dirs = ot.random_directions(jr.fold_in(key, 2), d, 256)
    # The signal a release must resolve: the spread of the projected codes (public codes: same law).
    spread = float(jnp.mean(jnp.std(codes_pub @ dirs.T, axis=0)))
    test_hist = np.bincount(labels[test], minlength=10) / len(test)

    def val_fid(codes):
        codes = np.asarray(codes)
        if not np.all(np.isfinite(codes)):
            return math.inf
        return feats.fid(np.asarray(decode(jnp.asarray(codes))), images[val])

    def score(codes):
        imgs = np.asarray(decode(codes))
        hist = np.bincount(feats.clf.predict(imgs.astype(np.float64)), minlength=10) / len(imgs)
        return imgs, {
            "fid": feats.fid(imgs, images[test]),
            "latent_sw2": float(ot.sliced_wasserstein(codes, codes_test, directions=dirs)),
            "latent_mmd": metrics.mmd(codes, codes_test),
            "class_tv": float(0.5 * np.abs(hist - test_hist).sum()),
            "projected_spread": float(jnp.mean(jnp.std(codes @ dirs.T, axis=0))),
        }

    x0_val = jr.normal(jr.fold_in(key, 3), (len(val), d))
    z_val = jr.normal(jr.fold_in(key, 4), (len(val), d))
    tune_key = jr.fold_in(key, 5)
    ne = len(cfg.epsilons)
    bar = ctx.grid_bar(len(cfg.methods) * ne * 2, "swf_digits")
    tuned, chosen_grid, curves, results, rows, noise_rows, shown, cert_lines = {}, {}, {}, {}, [], [], {}, []
    grid_rows = []
    for mi, method in enumerate(cfg.methods):
        if method == "gen":
            knobs, epochs_grid, max_steps = (
                cfg.learning_rate_grid or (cfg.learning_rate,),
                cfg.generator_epochs,
                cfg.generator_steps,
            )
        elif method == "flow_r":
            knobs, epochs_grid, max_steps = (
                cfg.step_size_grid or (cfg.resample_step_size,),
                cfg.resample_epochs,
                cfg.resample_steps,
            )
        else:
            knobs, epochs_grid, max_steps = cfg.step_size_grid or (cfg.step_size,), (1.0,), cfg.flow_steps
        steps = cfg.record_every * np.arange(1, max_steps // cfg.record_every + 1)
        # ---- tuning: one release per (E, ε), every (knob, steps) scored on the validation images
        best = {ei: (math.inf, None) for ei in range(ne)}
        for gi, epochs in enumerate(epochs_grid):
            num_rel = _num_releases(cfg, method, epochs, m)
            rkeys = [release_key(ctx.seed, cfg.reproducible_noise, 1, mi, gi, ei) for ei in range(ne)]
            releases, _ = _draw(cfg, method, y, num_rel, cfg.epsilons, rkeys)
            if method == "gen":
                paths = _generator_paths(
                    cfg, releases, knobs, [z_val] * ne, [tune_key] * ne, max_steps, cfg.record_every
                )
            else:
                state = _init(cfg, releases[0], x0_val)
                paths = _flow_paths(cfg, releases, knobs, state, tune_key, max_steps, cfg.record_every)
            paths = np.asarray(paths)
            for ei in range(ne):
                for ki, knob in enumerate(knobs):
                    fids = [val_fid(paths[ei, ki, ri]) for ri in range(len(steps))]
                    curves[(method, ei, gi, ki)] = fids
                    ri = int(np.argmin(fids))
                    grid_rows.append(
                        f"| {method} | {_eps_label(cfg.epsilons[ei])} | {num_rel} | {epochs:g} | {knob:g} | "
                        f"{float(releases[ei].noise_std[0]):.3f} | {fids[ri]:.3f} | {int(steps[ri])} | {fids[-1]:.3f} |"
                    )
                    results[f"tuning/{method}/eps={_eps_label(cfg.epsilons[ei])}/E={epochs:g}/knob={knob:g}"] = {
                        "validation_fid": fids,
                        "steps": steps.tolist(),
                        "noise_std": float(releases[ei].noise_std[0]),
                        "num_releases": num_rel,
                    }
                    if fids[ri] < best[ei][0]:
                        best[ei] = (
                            fids[ri],
                            dict(
                                epochs=float(epochs),
                                knob=float(knob),
                                steps=int(steps[ri]),
                                releases=num_rel,
                                sigma=float(releases[ei].noise_std[0]),
                                grid=(gi, ki),
                            ),
                        )
        bar.update(ne)
        # ---- test: the chosen setting on fresh releases and particles, num_seeds times
        for ei, eps in enumerate(cfg.epsilons):
            fid_val, choice = best[ei]
            seeds = range(cfg.num_seeds)
            skeys = [release_key(ctx.seed, cfg.reproducible_noise, 2, mi, ei, s) for s in seeds]
            rel_seeds, _ = _draw(cfg, method, y, choice["releases"], [eps] * len(skeys), skeys)
            eval_keys = [jr.fold_in(key, 10_000 + s) for s in seeds]
            x0s = [jr.normal(jr.fold_in(k, 0), (len(test), d)) for k in eval_keys]
            if method == "gen":
                out = _generator_paths(
                    cfg, rel_seeds, (choice["knob"],), x0s, eval_keys, choice["steps"], choice["steps"]
                )
            else:
                states = [_init(cfg, rel_seeds[0], x) for x in x0s]
                out = _flow_paths(
                    cfg, rel_seeds, (choice["knob"],), states, jr.fold_in(key, 6), choice["steps"], choice["steps"]
                )
            out = np.asarray(out)[:, 0, -1]
            runs = []
            for si in range(cfg.num_seeds):
                imgs, sc = score(jnp.asarray(out[si]))
                runs.append(sc)
                if si == 0:
                    shown[(method, eps)] = imgs[:60].reshape(6, 10, 8, 8).transpose(1, 0, 2, 3)
            agg = {name: [r[name] for r in runs] for name in runs[0]}
            label = _eps_label(eps)
            knob_name = "learning_rate" if method == "gen" else "step_size"
            rows_per = m if method == "flow" else min(cfg.private_batch, m)
            sigma = choice["sigma"]
            chosen_grid[(method, ei)] = choice["grid"]
            tuned[(method, ei)] = dict(
                epochs=choice["epochs"] if method != "flow" else None, **{knob_name: choice["knob"]},
                num_steps=choice["steps"], validation_fid=fid_val, num_releases=choice["releases"],
                rows_per_release=rows_per, noise_std=sigma, projected_spread=spread,
                noise_to_signal=sigma / spread, noise_to_signal_per_row=sigma / (spread * math.sqrt(rows_per)),
            )  # fmt: skip
            results[f"{method}/eps={label}"] = {**agg, "tuned": tuned[(method, ei)]}
            setting = (f"E = {choice['epochs']:g}, " if method != "flow" else "") + f"{knob_name} = {choice['knob']:g}"
            rows.append(
                f"| {method} | {label} | {setting}, {choice['steps']} steps | {fid_val:.3f} | {_mean_sd(agg['fid'])} | "
                f"{_mean_sd(agg['latent_sw2'])} | {_mean_sd(agg['latent_mmd'])} | {_mean_sd(agg['class_tv'])} | "
                f"{_mean_sd(agg['projected_spread'])} |"
            )
            noise_rows.append(
                f"| {method} | {label} | {choice['releases']} | {rows_per} | {sigma:.3f} | {sigma / spread:.1f} | "
                f"{sigma / (spread * math.sqrt(rows_per)):.3f} |"
            )
            cert = rel_seeds[0].certificate
            cert_lines.append(f"- {method}, ε = {label}: {cert}".split("\n")[0])
            bar.update(1)
    bar.close()
    # References: the private codes decoded (what a perfect model of the private rows gives) and the start.
    ref = {"private_codes": y[: len(test)], "initial_particles": jr.normal(jr.fold_in(key, 7), (len(test), d))}
    for name, codes in ref.items():
        results[f"reference/{name}"] = {k: [v] for k, v in score(jnp.asarray(codes))[1].items()}
    # Per-class setting of the conditional mode, for comparison: one release of k directions on 80 rows.
    per_class = {}
    for ei, eps in enumerate(cfg.epsilons):
        if ("flow", ei) in tuned:
            sig = tuned[("flow", ei)]["noise_std"]
            per_class[_eps_label(eps)] = sig / (spread * math.sqrt(80))
    results["noise_to_signal_per_row/per_class_80_rows"] = per_class
    results["split"] = {"public": len(pub), "private": m, "validation": len(val), "test": len(test)}

    ref_p, ref_i = results["reference/private_codes"], results["reference/initial_particles"]
    verdict_lines = []
    for eps in cfg.epsilons:
        label = _eps_label(eps)
        f = {mt: np.asarray(results[f"{mt}/eps={label}"]["fid"]) for mt in cfg.methods}
        if "gen" in f and len(f) > 1:
            flows = [mt for mt in f if mt != "gen"]
            bf = min(flows, key=lambda mt: f[mt].mean())
            diff = f["gen"].mean() - f[bf].mean()
            sd = max(f[bf].std(ddof=1), f["gen"].std(ddof=1)) if cfg.num_seeds > 1 else math.nan
            winner = bf if diff > 0 else "gen"
            verdict_lines.append(
                f"- ε = {label}: {winner} wins; FID(gen) − FID({bf}) = {diff:+.3f} (larger seed sd {sd:.3f}, "
                f"margin {abs(diff) / sd if sd > 0 else math.inf:.1f} sd)"
            )
    nm = len(cfg.methods)
    fig, axes = plt.subplots(nm, ne, figsize=(3.3 * ne, 2.4 * nm), squeeze=False)
    cmap = plt.get_cmap("gray_r").with_extremes(bad="0.75")
    for mi, method in enumerate(cfg.methods):
        for ei, eps in enumerate(cfg.epsilons):
            ax = axes[mi, ei]
            ax.imshow(
                _digit_tile(shown[(method, eps)]), cmap=cmap, vmin=0, vmax=1, aspect="equal", interpolation="nearest"
            )
            ax.set_axis_off()
            ax.set_title(f"{method}, ε = {_eps_label(eps)}", fontsize=8)
    fig.tight_layout()
    ctx.save_figure(
        fig, "samples",
        caption="Sixty decoded samples of the unconditional model (seed 0, tuned setting): at ε = inf they should "
        "read as digits of every class; a finite ε blurs them, and the better method at that ε keeps more digits.",
    )  # fmt: skip
    fig, axes = plt.subplots(1, nm, figsize=(3.6 * nm, 2.8), squeeze=False)
    for mi, method in enumerate(cfg.methods):
        ax = axes[0, mi]
        for ei, eps in enumerate(cfg.epsilons):
            gi, ki = chosen_grid[(method, ei)]
            fids = curves[(method, ei, gi, ki)]
            ax.plot(cfg.record_every * np.arange(1, len(fids) + 1), fids, label=f"ε = {_eps_label(eps)}")
        ax.set(xlabel="steps", ylabel="validation proxy FID", title=method, yscale="log")
        ax.legend(fontsize=7)
    fig.tight_layout()
    ctx.save_figure(
        fig, "tuning",
        caption="Validation proxy FID along the chosen setting's trajectory (the step count is read off these "
        "curves): lower is better; a curve that rises again means more steps overfit the release's noise.",
    )  # fmt: skip
    report = f"""
Official setup (METHODS §4c/§4d), unconditional: split {len(pub)} public (autoencoder, latent {d}, unit-sphere
codes; proxy-FID features) / {m} private (every code is a row of the mechanism) / {len(val)} validation
(tuning) / {len(test)} test (scoring). k = {cfg.num_projections} projections, L = {cfg.num_subprojections}
sub-projections per flow step, Poisson batch B = {min(cfg.private_batch, m)} for flow_r and gen, δ = {cfg.delta}.
{_privacy_note(cfg)} Particles (and generator samples) start from N(0, I): {len(val)} for tuning,
{len(test)} for testing. Each (method, ε) is tuned on the validation images (step size or learning rate,
passes E, step count), then run {cfg.num_seeds} times on fresh releases and particles; mean ± sd over them.
Tuning releases are separate draws: they spend privacy too (not composed into the certificates below).

Class TV: total-variation distance between the feature classifier's labels of the samples and the test
labels (0: balanced as the data; a collapsed model scores high). Spread: mean std of the samples'
projections (the data's: {spread:.3f}).

| method | ε | chosen | validation FID | test proxy FID | latent SW₂² | latent MMD | class TV | spread |
|---|---|---|---|---|---|---|---|---|
""" + "\n".join(rows)
    report += f"""

Reference (test split): the private codes decoded: FID {ref_p["fid"][0]:.3f}, latent SW₂² {ref_p["latent_sw2"][0]:.3f};
the N(0, I) start decoded: FID {ref_i["fid"][0]:.3f}, latent SW₂² {ref_i["latent_sw2"][0]:.3f}, spread
{ref_i["projected_spread"][0]:.3f}.

Noise against signal per release: σ is the release's noise std per projection, the spread
{spread:.3f} is the mean std of the projected (public) codes over 256 directions; σ/(spread·√rows) is the
noise a quantile of one release carries relative to the spread.

| method | ε | releases T | rows per release | σ | σ / spread | σ / (spread·√rows) |
|---|---|---|---|---|---|---|
""" + "\n".join(noise_rows)
    if per_class:
        report += "\n\nThe same single release on 80 rows (the per-class setting): σ/(spread·√80) = " + ", ".join(
            f"{v:.3f} at ε = {k}" for k, v in per_class.items()
        )
    report += "\n\nWinner per ε (proxy FID on the test split):\n" + "\n".join(verdict_lines)
    report += """

The tuning grid (one tuning release per row; knob: step size, or DPSWgen's learning rate): the best
validation FID along the trajectory, the step count where it was reached, and the value at the last step.

| method | ε | releases T | E | knob | σ | best validation FID | at step | at the last step |
|---|---|---|---|---|---|---|---|---|
""" + "\n".join(grid_rows)
    report += "\n\nCertificates (first evaluation seed):\n" + "\n".join(cert_lines)
    return results, report + "\n"


def _init(cfg, release, x0):
    """The flow's initial state at ``x0`` (the same for every flow on a release of this shape)."""
    return swf.DPSlicedWassersteinFlow(release, step_size=1.0, num_subprojections=cfg.num_subprojections).init(x0)


register(
    "swf_digits",
    SWFDigitsConfig,
    description="DPSWflow / DPSWflow-r / DPSWgen on the digits in an autoencoder latent (FID, SW, accuracy).",
    sweep_keys={"epsilon": "epsilons"},  # one dpflows.sweep (or vmapped fit) over the ε releases per method
    # An autoencoder trained long enough to decode readable digits, ε = ∞ next to one private level.
    demo={
        "epsilons": [math.inf, 10.0],
        "methods": ["flow"],
        "ae_steps": 1000,
        "per_class": 40,
        "samples_per_class": 20,
        "num_projections": 16,
        "flow_steps": 100,
        "resample_steps": 10,
        "generator_steps": 10,
        "num_seeds": 1,
    },
)(run_swf_digits)
