# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The DP sliced-Wasserstein flow: one private release, then free post-processing
#
# The flow moves particles toward private data ν along the Wasserstein gradient of ½ SW²_σ(μ, ν),
# the sliced Wasserstein distance whose 1-D projections are smoothed by N(0, σ²) (METHODS.md §4).
# Its drift needs only the 1-D quantile functions of *noisy projections of the data*, which is what
# the DP-SWD Gaussian mechanism publishes:
#
#     V = Θ Yᵀ + Z,   Θ ∈ ℝ^{k×d} with uniform unit rows,   Z ~ N(0, σ²) i.i.d.
#
# `swf.private_release` draws V once and returns it with its (ε, δ) certificate. It is the only code
# below that reads the private rows to build something released. The flow, its re-runs and the
# DPSWgen generator read only the release: they are post-processing and spend no more privacy.
# The notebook also reads the private rows to *score* the results; those scores are for the reader
# and are not private.
#
# Set `DPFLOWS_NOTEBOOK_SMALL=1` to run everything at a small size (the tests do).

# %%
import math
import os

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import matplotlib.pyplot as plt
import numpy as np

import dpflows
from dpflows import data, metrics, ot, swf
from dpflows.nn import MLPGenerator

SMALL = os.environ.get("DPFLOWS_NOTEBOOK_SMALL") == "1"
M = 4000 if SMALL else 20000  # private rows
N = 300 if SMALL else 1000  # particles, and generator samples
K = 16 if SMALL else 32  # directions in the release
STEPS = 40 if SMALL else 300  # flow steps
RECORD = 5 if SMALL else 15  # score every RECORD steps
GEN_STEPS = 60 if SMALL else 1500  # DPSWgen Adam steps
DELTA = 1e-5
TAU = 1.0  # the flow's step size τ

# %% [markdown]
# ## 1. The release and its certificate
# The private data are M points from eight Gaussians inside the unit disk. The mechanism clips rows
# to ‖y‖ ≤ 1, the domain of its sensitivity bound. We release k noisy projections of every row at
# ε = 10, δ = 1e-5.
#
# **About the key.** The release key is fixed here so that the figures reproduce, and section 2
# reuses it across ε on purpose. Both void the guarantee in practice: whoever knows the key knows the
# noise, and two releases drawn with one key share Z up to its scale. A real release passes
# `key=None`, which draws a secret key from the OS, and is drawn once.

# %%
key = jr.key(0)
y, _ = data.eight_gaussians(jr.fold_in(key, 0), M)  # the private rows
RELEASE_KEY = jr.key(2024)  # demo only: use key=None for a real release
release, certificate = swf.private_release(RELEASE_KEY, y, num_projections=K, epsilon=10.0, delta=DELTA)
print(certificate)

# %% [markdown]
# The numbers behind the certificate. ε and δ cover **the mechanism** (`covers="mechanism"`): the
# published projections V, and so everything computed from them. The sensitivity Δ bounds
# ‖Θ(y − y′)‖ when one row is replaced. It depends on the random Θ, so it holds only with
# probability 1 − δ_s over the directions, and δ_s is charged to δ. The other two bounds are printed
# for comparison only: the paper's CLT form is an approximation, not a bound, and Bernstein is loose.

# %%
p = certificate.parameters
sigma = float(release.noise_std[0])
print(f"target (ε, δ)                : ({p['epsilon']:g}, {p['delta']:g}), covers: {certificate.covers}")
print(f"sensitivity Δ, Chernoff (used): {p['sensitivity']:.4f}   (always ≤ 2√k = {2 * math.sqrt(K):.4f})")
print(f"  failure probability δ_s     : {p['sensitivity_failure']:.1e}   (charged to δ)")
print(f"  mechanism's δ' = δ − δ_s    : {p['delta'] - p['sensitivity_failure']:.1e}")
for method in ("clt", "bernstein"):
    bound = swf.sensitivity_bound(K, 2, p["sensitivity_failure"], method)
    print(f"  Δ, {method + ' form':14s}: {bound:.4f}   (not used)")
print(f"noise multiplier s = σ/Δ      : {p['noise_multiplier']:.4f}   (analytic Gaussian mechanism, Balle & Wang 2018)")
print(f"  classical √(2 ln(1.25/δ'))/ε: {p['classical_noise_multiplier']:.4f}   (not used)")
print(f"noise std σ = s·Δ             : {sigma:.3f}   on every published value; the data lie in ‖y‖ ≤ 1")
print("the release holds (never the rows):", {f: tuple(getattr(release, f).shape) for f in ("directions", "tables")})

# %% [markdown]
# What one direction looks like. Left: the private projections ⟨θ₁, y⟩, which are never published.
# Right: the published row. Each value is one row's projection plus its own N(0, σ²) draw, and the
# row is sorted, so the order of the rows is not released either. Look at the scales: at ε = 10 the
# noise is several times wider than the data, and the released row is close to pure noise.

# %%
theta1 = release.directions[0, 0]
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
axes[0].hist(np.asarray(y @ theta1), bins=80, density=True, color="0.5")
axes[0].set_xlabel("⟨θ₁, y⟩, private projection")
axes[0].set_ylabel("density")
axes[0].set_title("private (not released)", fontsize=9)
grid = np.linspace(-4 * sigma, 4 * sigma, 400)
axes[1].hist(np.asarray(release.tables[0, 0]), bins=80, density=True, color="C0", label="released values")
axes[1].plot(grid, np.exp(-0.5 * (grid / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi)), "k--", label="N(0, σ²)")
axes[1].set_xlabel("⟨θ₁, y⟩ + noise, released")
axes[1].set_ylabel("density")
axes[1].set_title(f"released at ε = 10 (σ = {sigma:.2f})", fontsize=9)
axes[1].legend(fontsize=8)
plt.show()

# %% [markdown]
# ## 2. The flow on the release
# `DPSlicedWassersteinFlow(release, step_size=τ)` is post-processing. It carries the release's
# certificate, and runs, re-runs and sweeps cost no privacy. Each step projects the particles on the
# release's directions, adds the same N(0, σ²) smoothing to those projections, and moves each
# particle toward the released value at its rank (METHODS.md §4b).
# `DPSlicedWassersteinFlow.from_data(y, epsilon=..., delta=..., num_projections=..., step_size=...)`
# draws the release and builds the flow in one call.
#
# We draw releases at several ε with the same key and stack them into one `dpflows.sweep`, which
# compiles once; sections 3 and 4 reuse this sweep. The ε of 10³ and above are not meaningful
# guarantees: they are there only to make σ small for section 4. ε = ∞ releases without noise:
# σ = 0, and there is no guarantee (`covers="none"`). The particles start from N(0, I), as in the
# paper, independent of the data.

# %%
flow = swf.DPSlicedWassersteinFlow(release, step_size=TAU)
print("the flow's guarantee is the release's:", str(flow.certificate).splitlines()[0])

EPSILONS = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6, math.inf]
ladder = [swf.private_release(RELEASE_KEY, y, num_projections=K, epsilon=e, delta=DELTA)[0] for e in EPSILONS]
flows = [swf.DPSlicedWassersteinFlow(r, step_size=TAU) for r in ladder]
idx = {e: i for i, e in enumerate(EPSILONS)}
sigmas = np.array([float(r.noise_std[0]) for r in ladder])
for e, r, s in zip(EPSILONS, ladder, sigmas, strict=True):
    print(f"ε = {e:<8g} σ = {s:8.4f}   {str(r.certificate).splitlines()[0]}")

# %% [markdown]
# To score the particles, we compare them with N private rows by the squared sliced Wasserstein
# distance SW₂² (`ot.sliced_wasserstein` over 128 fixed directions) every RECORD steps. The floor is
# the same distance between two disjoint sets of N private rows, which is pure sampling noise.

# %%
y_eval = y[:N]
eval_dirs = ot.random_directions(jr.fold_in(key, 3), 2, 128)


def positions(state):
    return state.x


@jax.jit  # the reference rows are arguments, not closed-over constants (which XLA would constant-fold)
def sw2(x, reference, directions):
    return ot.sliced_wasserstein(x, reference, directions=directions)


floor = float(sw2(y[N : 2 * N], y_eval, eval_dirs))
x0 = jr.normal(jr.fold_in(key, 2), (N, 2))
final, trace = dpflows.sweep(
    flows, flows[0].init(x0), jr.key(1), STEPS, record_every=RECORD, record=positions, throw=True
)
start = float(sw2(x0, y_eval, eval_dirs))
curves = {e: [start] + [float(sw2(x, y_eval, eval_dirs)) for x in trace.states[idx[e]]] for e in (1.0, 10.0, math.inf)}

# %% [markdown]
# Before and after at ε = 10, with the non-private flow (ε = ∞) for reference. Look for this: the
# private flow recovers the *spread* of the data, a disc about the right size, but not the eight modes.

# %%
fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), sharex=True, sharey=True)
panels = [
    ("start: N(0, I)", x0),
    (f"after {STEPS} steps, ε = 10", final.x[idx[10.0]]),
    (f"after {STEPS} steps, ε = ∞ (no noise)", final.x[idx[math.inf]]),
]
for ax, (title, pts) in zip(axes, panels, strict=True):
    ax.scatter(*np.asarray(y_eval).T, s=2, c="0.8", label="private rows")
    ax.scatter(*np.asarray(pts).T, s=2, c="C3", label="particles")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("x₁")
    ax.set_xlim(-2.5, 2.5)
    ax.set_ylim(-2.5, 2.5)
axes[0].set_ylabel("x₂")
axes[0].legend(fontsize=8, markerscale=4, loc="lower left")
plt.show()

# %% [markdown]
# The distance to the private rows over the run. Left: the score SW₂², starting from the initial
# particles at step 0; the dotted line is its floor. Right: what the flow itself sees,
# `trace["sliced_w2"]`, the mean squared gap between the particles' smoothed projections and their
# released targets. That one is computed from the release alone, so the certificate covers it.
# Look for this: without noise, both fall quickly. At ε = 10 the score levels off well above the
# floor, and the flow's own objective stays flat, at the size of the noise.
# At ε = 1 the score gets *worse* as the run goes on, because the particles spread out far past the data.

# %%
steps = np.concatenate([[0], np.asarray(trace.record_steps)])
fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
for e in (1.0, 10.0, math.inf):
    label = "ε = ∞" if math.isinf(e) else f"ε = {e:g}"
    axes[0].plot(steps, curves[e], marker=".", label=label)
    axes[1].plot(np.arange(1, STEPS + 1), np.asarray(trace["sliced_w2"][idx[e]]), label=label)
axes[0].axhline(floor, color="k", ls=":", lw=1, label="floor (two private samples)")
axes[0].set_yscale("log")
axes[0].set_xlabel("step")
axes[0].set_ylabel("SW₂² to N private rows (score)")
axes[0].legend(fontsize=8, loc="center right")
axes[1].set_yscale("log")
axes[1].set_xlabel("step")
axes[1].set_ylabel("flow's objective Σᵢ wᵢ mean_l (u − q)²")
axes[1].legend(fontsize=8)
plt.show()

# %% [markdown]
# Why the spread, and why not the modes? Every published value carries its own N(0, σ²) draw, as in
# local DP, so more rows do not shrink σ. They only sharpen the release's empirical law. Along a
# direction, the release's variance is v + σ², where v is the data's own projected variance, and it
# is known only up to about ±σ²√(2/M). So v shows through only when σ²√(2/M) is well below v. The
# modes live in higher moments, which the smoothing buries far deeper. The numbers below use the
# private rows (v, and the data's standard deviation), so they are not private.

# %%
v = float(jnp.mean(jnp.var(release.directions[0] @ y.T, axis=1)))
print(f"data: projected variance v = {v:.3f}, coordinate sd = {float(jnp.mean(jnp.std(y, axis=0))):.3f}")
for e in (1.0, 10.0, 100.0, math.inf):
    s = sigmas[idx[e]]
    sd = float(jnp.mean(jnp.std(final.x[idx[e]], axis=0)))
    noise_in_variance = s**2 * math.sqrt(2 / M)
    print(f"ε = {e:<4g} σ = {s:6.2f}   σ²·√(2/M) = {noise_in_variance:7.3f}   particles' sd after the run = {sd:.3f}")

# %% [markdown]
# ## 3. The flow against the DPSWgen generator, on the same release
# DPSWgen (`swf.train_sliced_generator`) fits an MLP generator G(z), z ~ N(0, I), with Adam on the same
# sliced loss, so the flow's drift is pulled back to G's weights. We train it on **the very release
# the flow used**. Both then spend the same budget and carry the same certificate. A single
# `jax.vmap` over the stacked releases trains the three generators in one compiled program.

# %%
GEN_EPS = [1.0, 10.0, math.inf]
gen0 = MLPGenerator(jr.key(4), latent_dim=2, data_dim=2, width=64, depth=2)
z = jr.normal(jr.key(5), (N, 2))


def fit_generator(rel):
    res = swf.train_sliced_generator(gen0, rel, key=jr.key(6), num_steps=GEN_STEPS, batch_size=256, learning_rate=3e-3)
    return jax.vmap(res.generator)(z)


stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *[ladder[idx[e]] for e in GEN_EPS])
gen_x = eqx.filter_vmap(fit_generator)(stacked)

# %% [markdown]
# All scores compare N samples with N private rows, and they are for the reader, not private:
# - SW₂², with the floor given above;
# - the exact W₂ between equal-size clouds (`metrics.wasserstein2`);
# - how many of the eight modes hold at least a quarter of their share of the points within 0.2 of
#   their centre (`metrics.mode_coverage`).
#
# The last column says what each row's (ε, δ) covers.

# %%
centres = data.eight_gaussians_centers()
samples = {}
print(f"{'method':8s} {'ε':>5s} {'σ':>7s} {'SW₂²':>8s} {'W₂':>7s} {'modes':>5s}  DP guarantee")
for method in ("flow", "DPSWgen"):
    for j, e in enumerate(GEN_EPS):
        pts = np.asarray(final.x[idx[e]] if method == "flow" else gen_x[j])
        samples[(method, e)] = pts
        cert = ladder[idx[e]].certificate
        sw2_value = float(sw2(pts, y_eval, eval_dirs))
        w2 = metrics.wasserstein2(pts, y_eval)
        modes = round(8 * metrics.mode_coverage(pts, centres, radius=0.2)["coverage"])
        dp = f"({cert.epsilon:g}, {cert.delta:g})-DP, covers {cert.covers}" if cert.covers != "none" else "none"
        print(f"{method:8s} {e:>5g} {sigmas[idx[e]]:7.3f} {sw2_value:8.4f} {w2:7.3f} {modes:>3d}/8  {dp}")
w2_floor = metrics.wasserstein2(y[N : 2 * N], y_eval)
print(f"floor (two sets of N private rows): SW₂² = {floor:.4f}, W₂ = {w2_floor:.3f}")

# %% [markdown]
# Look for this:
# - **Without noise,** the flow finds the eight modes. In its Adam steps (1500 at full size) the
#   generator learns the ring they sit on, which the coverage count scores as 8/8.
# - **At ε = 10,** the flow finds roughly the data's spread, starting from N(0, I). The generator
#   stays bunched near the data's mean, close to where an untrained MLP starts. For smoothed
#   projections the loss hardly depends on the spread: its slope is about v/σ² (≈ 0.01 here) of
#   the slope without noise, and Adam's minibatch noise drowns it. The flow instead moves every
#   particle by its own residual at every step.
# - **At ε = 1,** where σ is about 50× the data's radius, neither model learns the data. The flow's
#   particles scatter far outside the unit disk (note the wider axes). The generator's point at the
#   centre scores better on W₂ only because a point at the mean is never far off.

# %%
fig, axes = plt.subplots(2, 3, figsize=(11, 7))
for row, method in enumerate(("flow", "DPSWgen")):
    for col, e in enumerate(GEN_EPS):
        ax = axes[row, col]
        pts = samples[(method, e)]
        lim = 8.0 if e == 1.0 else 1.5
        ax.scatter(*np.asarray(y_eval).T, s=2, c="0.8")
        ax.scatter(*pts.T, s=2, c="C0" if method == "flow" else "C2")
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        eps_text = "∞" if math.isinf(e) else f"{e:g}"
        ax.set_title(f"{method}, ε = {eps_text}: W₂ = {metrics.wasserstein2(pts, y_eval):.2f}", fontsize=9)
        ax.set_xlabel("x₁")
        ax.set_ylabel("x₂")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 4. Sanity check: σ → 0 gives back the non-private flow
# **(a) At σ = 0 it is the textbook flow.** With no noise (ε = ∞), the flow is the sliced-Wasserstein
# flow of Liutkus et al. (2019). Below, that flow is written out in five lines on the same
# directions, with `ot.quantile_map` as the 1-D optimal transport maps. It reads the private
# projections directly, which only a non-private flow may do. Both run in float64 and must agree to
# round-off at every step.
#
# In float32 they agree to about 1e-5 after one step. Over a long run, though, the rank-based map
# amplifies round-off: two particles whose projections nearly tie can swap targets. The clouds still
# agree; single particles may not.

# %%
with jax.enable_x64(True):
    y64 = jnp.asarray(y, jnp.float64)
    x0_64 = jnp.asarray(x0, jnp.float64)
    release_inf, _ = swf.private_release(RELEASE_KEY, y64, num_projections=K, epsilon=math.inf, delta=DELTA)
    print(release_inf.certificate)
    flow_inf = swf.DPSlicedWassersteinFlow(release_inf, step_size=TAU)
    _, trace_inf = dpflows.run(flow_inf, flow_inf.init(x0_64), jr.key(1), STEPS, record_every=1, record=positions)

    theta = release_inf.directions[0]  # (K, 2): the directions of every release above (same key)
    private_projections = theta @ y64.T  # noiseless, (K, M)

    def textbook_swf_step(x, _):
        u = theta @ x.T  # (K, N) particle projections
        x = x - TAU * (u - ot.quantile_map(u, private_projections)).T @ theta / K
        return x, x

    _, textbook = jax.lax.scan(textbook_swf_step, x0_64, None, length=STEPS)
    gap = np.asarray(jnp.max(jnp.abs(textbook - trace_inf.states), axis=(1, 2)))
print(
    f"float64, max over {N} particles of |textbook SWF − DP flow at ε = ∞|: after step 1 {gap[0]:.1e}, "
    f"worst over {STEPS} steps {gap.max():.1e}"
)

# %% [markdown]
# **(b) As ε grows, the flow approaches the non-private one.** σ shrinks with ε, and the private
# flow's particles approach those of the non-private flow. All members share the directions and
# the standard-normal draws (same release key, same run key), so only σ differs between them. We
# plot the median over particles of ‖xᵢ(σ) − xᵢ(0)‖, the distance between the same particle in
# the private and the non-private run, early in the run and at its end.
# Look for this: both curves fall toward zero with σ. While σ is below the data's scale (about 0.5),
# the early one stays close to a constant times σ.
# Late in the run, the small-σ end falls more slowly: over many steps the rank-based map magnifies
# small perturbations, as it does float32 round-off in (a).

# %%
finite = [i for i, e in enumerate(EPSILONS) if math.isfinite(e)]
fig, ax = plt.subplots(figsize=(6.5, 4))
for r, marker in ((0, "o"), (-1, "s")):
    states = np.asarray(trace.states[:, r])  # (members, N, 2) after record r
    median = [float(np.median(np.linalg.norm(states[i] - states[idx[math.inf]], axis=1))) for i in finite]
    ax.loglog(sigmas[finite], median, marker=marker, label=f"after {int(trace.record_steps[r])} steps")
    if r == 0:
        for i, d in zip(finite, median, strict=True):
            ax.annotate(f"ε={EPSILONS[i]:g}", (sigmas[i], d), fontsize=7, xytext=(2, -11), textcoords="offset points")
        ax.set_ylim(bottom=0.3 * min(median))
ax.loglog(sigmas[finite], sigmas[finite], "k:", lw=1, label="σ (for scale)")
ax.set_xlim(right=3 * sigmas.max())
ax.set_xlabel("noise std σ of the release")
ax.set_ylabel("median ‖xᵢ(σ) − xᵢ(0)‖ over particles")
ax.legend(fontsize=8)
plt.show()
