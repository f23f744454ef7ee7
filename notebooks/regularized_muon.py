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
# # Regularised Muon: the smoothed polar map, an optax optimizer, and its mean-field Hamiltonian flow
#
# Muon moves a weight matrix along the polar factor polar(M) = UVᵀ of its momentum M = UΣVᵀ: every
# singular value of the step is 1. Regularised Muon replaces it by the gradient of a smoothed nuclear
# norm φ_ε(M) = Σᵢ (√(σᵢ² + ε²) − ε), i.e. the map
#
#     ∇φ_ε(M) = M (MᵀM + ε²I)^{-1/2} = U diag(σᵢ / √(σᵢ² + ε²)) Vᵀ,
#
# which tends to polar(M) as ε → 0 and to M/ε (heavy-ball momentum) as ε → ∞. With φ_ε as kinetic
# energy the method is a damped Hamiltonian system, and lifted to many particles it is a mean-field
# flow whose Hamiltonian H = J + Σ wᵢ φ_ε(Pᵢ) never increases (METHODS.md §3: everything beyond the
# paper's abstract is reconstructed). This notebook shows the map, the `optax` optimizer and the flow.
# Nothing here is private: there are no DP numbers in this notebook.
#
# Set `DPFLOWS_NOTEBOOK_SMALL=1` to run everything at a small size (the tests do).

# %%
import functools as ft
import os

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import matplotlib.pyplot as plt
import numpy as np
import optax

import dpflows
from dpflows import data, muon

SMALL = os.environ.get("DPFLOWS_NOTEBOOK_SMALL") == "1"
NUM_EPS = 15 if SMALL else 36  # ε values in the error scan: 2 or 5 per decade over [1e-6, 10]
TRAIN_STEPS = 25 if SMALL else 250  # optimizer steps on digits
NUM_TRAIN = 300 if SMALL else 1400  # training images (the other 397 are held out)
FLOW_STEPS = 60 if SMALL else 600  # mean-field flow steps
PARTICLE_COUNTS = (8, 32) if SMALL else (16, 256, 4096)
NUM_INPUTS = 64 if SMALL else 256  # teacher–student inputs

# %% [markdown]
# ## 1. The map
# A 48 × 32 matrix M = U diag(σ) Vᵀ with random orthonormal U, V and singular values spread
# geometrically over [10⁻³, 1] (so ‖M‖_op = 1). We apply three maps and read off what each does to
# every singular value (all three keep U and V, so diag(Uᵀ X V) is the singular-value response):
#
# - `muon.regularized_polar(M, ε)`, the regularised map, for a few ε;
# - the exact polar factor UVᵀ;
# - `optax.contrib.muon`'s orthogonaliser: five Newton–Schulz steps with Keller Jordan's quintic
#   (a, b, c) = (3.4445, −4.7750, 2.0315) on M/‖M‖_F (`optax.contrib.scale_by_muon` with no momentum).

# %%
P_ROWS, Q_COLS = 48, 32
rng = np.random.default_rng(0)  # host-side test matrix (numpy: no compile per array op)
U, _ = np.linalg.qr(rng.standard_normal((P_ROWS, Q_COLS)))
V, _ = np.linalg.qr(rng.standard_normal((Q_COLS, Q_COLS)))
sigma = np.geomspace(1e-3, 1.0, Q_COLS)[::-1]
M = jnp.asarray((U * sigma) @ V.T, jnp.float32)


def response(x):
    """diag(Uᵀ X V): what X does to each singular value of M."""
    return np.diagonal(U.T @ np.asarray(x, np.float64) @ V)


ns5 = optax.contrib.scale_by_muon(beta=0.0, nesterov=False)  # β = 0: the update is NS5(M) itself
x_ns5 = jax.jit(lambda m: ns5.update(m, ns5.init(m))[0])(M)

NS_COEFFS = (3.4445, -4.7750, 2.0315)
grid = np.geomspace(1e-4, 1.0, 400)
ns_curve = grid / float(jnp.linalg.norm(M))  # the same five quintic steps on a scalar σ/‖M‖_F
for _ in range(5):
    ns_curve = NS_COEFFS[0] * ns_curve + NS_COEFFS[1] * ns_curve**3 + NS_COEFFS[2] * ns_curve**5

polar_map = jax.jit(muon.regularized_polar, static_argnames=("kind", "method"))
# one batched call per method for every ε used below (the grid holds 0.1, 0.01 and 0.001)
eps_grid = np.geomspace(1e-6, 10.0, NUM_EPS).astype(np.float32)
batch = jnp.broadcast_to(M, (NUM_EPS, P_ROWS, Q_COLS))
outputs = {method: polar_map(batch, eps_grid, method=method) for method in muon.METHODS}
fig, ax = plt.subplots(figsize=(7, 4))
ax.semilogx(grid, np.ones_like(grid), "k-", lw=2, label="exact polar UVᵀ (ε → 0)")
for c, eps in zip(("C0", "C1", "C2"), (0.1, 0.01, 0.001), strict=True):
    ax.semilogx(grid, grid / np.sqrt(grid**2 + eps**2), c, lw=1, alpha=0.6)
    x = outputs["eigh"][int(np.argmin(np.abs(eps_grid - eps)))]
    ax.semilogx(sigma, response(x), c + "o", ms=4, label=f"regularized_polar, ε = {eps:g}")
ax.semilogx(grid, ns_curve, "C3-", lw=1, alpha=0.6)
ax.semilogx(sigma, response(x_ns5), "C3s", ms=4, label="optax.contrib.muon NS5")
ax.set_xlabel("singular value σ of M")
ax.set_ylabel("singular value of the map's output")
ax.set_ylim(-0.05, 1.3)
ax.legend(fontsize=8, loc="upper left")
plt.show()

# %% [markdown]
# Markers are the matrix maps, lines the same maps applied to a scalar σ (σ/√(σ²+ε²) and the
# composed quintic): they coincide, so each map acts on the spectrum alone. The regularised map is
# a smooth, monotone ramp that reaches 1/√2 at σ = ε and stays below 1 (the spectral trust region
# ‖step‖_op < 1). NS5 is cheap but is not the polar factor: its output oscillates in roughly
# [0.7, 1.2], and singular values below about 0.3 % of ‖M‖_F come out well short of 1.

# %% [markdown]
# ### Error versus ε, and the documented accuracy bound
# Two different errors, over ε from 10⁻⁶ to 10 (in units of ‖M‖_op = 1), all in operator norm:
#
# - *left*, the distance of ∇φ_ε(M) to polar(M) (the price of smoothing): it is exactly
#   1 − σ_min/√(σ_min² + ε²), so it falls like ε²/(2σ_min²) once ε < σ_min = 10⁻³; the "huber"
#   kind (U diag(min(σ/ε, 1)) Vᵀ) is exactly polar once ε ≤ σ_min. NS5's distance to polar is a
#   constant;
# - *right*, the float32 round-off of each `method` against the exact map computed in float64, with
#   the bound that `muon.regularized_polar_error_bound` states for it (broken line, same colour). The
#   default "eigh" path works on MᵀM and is cheap but loses accuracy like (‖M‖_F/ε)²; below
#   ε ≈ ‖M‖_F/60 it hands the matrix to "newton" (matmul-only Newton–Schulz on [M; εI], serving
#   ε ≥ 10⁻³‖M‖_F) and below that to the SVD, which is why its bound has steps.

# %%
m64 = np.asarray(M, np.float64)
u64, s64, vt64 = np.linalg.svd(m64, full_matrices=False)


def exact(eps):
    """The float64 map of the same (float32) input."""
    return (u64 * (s64 / np.sqrt(s64**2 + float(eps) ** 2))) @ vt64


def op_norm(a):
    return float(np.linalg.norm(a, 2))


polar64 = u64 @ vt64
to_polar = {
    "regularized_polar (sqrt)": [op_norm(np.asarray(x, np.float64) - polar64) for x in outputs["eigh"]],
    "huber kind": [op_norm(np.asarray(x, np.float64) - polar64) for x in polar_map(batch, eps_grid, "huber")],
}
closed_form = 1 - s64[-1] / np.sqrt(s64[-1] ** 2 + eps_grid.astype(np.float64) ** 2)
ns5_to_polar = op_norm(np.asarray(x_ns5, np.float64) - polar64)

error_bound = jax.jit(muon.regularized_polar_error_bound, static_argnames=("method",))
errors, bounds = {}, {}
for method in muon.METHODS:
    errors[method] = np.array(
        [op_norm(np.asarray(x, np.float64) - exact(e)) for x, e in zip(outputs[method], eps_grid, strict=True)]
    )
    bounds[method] = np.asarray(error_bound(batch, eps_grid, method=method))

fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4))
for name, values in to_polar.items():
    a1.loglog(eps_grid, values, "o-", ms=3, label=name)
a1.loglog(eps_grid, closed_form, "k--", lw=1, label="1 − σ_min/√(σ_min² + ε²)")
a1.axhline(ns5_to_polar, color="C3", ls=":", label="optax NS5")
a1.axvline(float(s64[-1]), color="gray", lw=0.5)
a1.set_xlabel("ε  (‖M‖_op = 1; grey line: σ_min)")
a1.set_ylabel("‖map(M) − polar(M)‖_op")
a1.set_title("smoothing error (float32 maps vs float64 polar)")
a1.legend(fontsize=8)
for c, ls, method in zip(("C0", "C1", "C2"), ("--", ":", "-."), muon.METHODS, strict=True):
    a2.loglog(eps_grid, errors[method], c + "o-", ms=3, label=f'method="{method}": error')
    a2.loglog(eps_grid, bounds[method], c + ls, lw=1.5, label=f'method="{method}": stated bound')
a2.set_xlabel("ε  (‖M‖_op = 1)")
a2.set_ylabel("‖float32 map − exact map‖_op")
a2.set_title("round-off vs regularized_polar_error_bound")
a2.legend(fontsize=7)
plt.show()
{method: bool(np.all(errors[method] <= bounds[method])) for method in muon.METHODS}

# %% [markdown]
# The dictionary says whether every float32 error lies under its stated bound (it should be all
# `True`). The bounds are worst cases over all spectra, so on this matrix the errors sit far below
# them; below ε ≈ 1.7 · 10⁻³ (= 10⁻³‖M‖_F) all three methods run the same SVD, so their errors
# coincide, and the "newton" bound hides the "svd" one wherever both serve. On the left, the sqrt map
# follows the closed form down to float32's round-off floor (≈ 2 · 10⁻⁵ here, the SVD error of the
# right panel), and only becomes a good polar factor for ε well below the smallest singular value;
# NS5 stays a constant distance from polar(M). That is the trade regularised Muon makes: a smooth
# step, computed to a stated accuracy, whose small-σ directions are damped, instead of NS5's
# approximate orthogonalisation.

# %% [markdown]
# ## 2. The optax optimizer on a small network
# `muon.regularized_muon(learning_rate=h, eps=ε, damping=γ)` is an `optax.GradientTransformation`:
# 2-D leaves get the h-scaled momentum M ← (1 − γh)M + h g and the step −h ∇φ_ε(M); other leaves
# (biases) get Adam. We train a 64-64-64-10 MLP (`dpflows.nn.MLP`, SiLU) with full-batch
# cross-entropy on scikit-learn's 8 × 8 digits (1400 training images at full size, 397 held out),
# against `optax.contrib.muon`, Adam and SGD with heavy-ball momentum. Every method uses momentum
# 0.9 (γ = 0.1/h for ours) and gets the best of four learning rates, judged by the average of
# log₁₀(training loss) over the run (lower = faster; the final loss alone ties once several runs
# hit float32's floor).
#
# ε is in units of the h-scaled momentum, whose size is about h‖g‖/(1 − μ), of order 10⁻² here at
# the start, and which shrinks with the gradients. So ε = 10⁻⁴ stays Muon-like until the loss is
# tiny, while ε = 10⁻² starts Muon-like and turns into heavy-ball momentum with step h/ε once the
# gradients are small.

# %%
images, labels = data.digits()
order = np.random.default_rng(1).permutation(images.shape[0])
x_train, y_train = jnp.asarray(images[order[:NUM_TRAIN]]), jnp.asarray(labels[order[:NUM_TRAIN]])
x_test, y_test = jnp.asarray(images[order[1400:]]), jnp.asarray(labels[order[1400:]])
params0, static = eqx.partition(dpflows.nn.MLP(jr.key(2), in_size=64, out_size=10, width=64, depth=2), eqx.is_array)


def loss_fn(params, x, y):
    logits = jax.vmap(eqx.combine(params, static))(x)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))


def train(optimizer):
    """Full-batch training: the training loss before each step, and the held-out accuracy."""

    def body(carry, _):
        params, state = carry
        loss, grads = jax.value_and_grad(loss_fn)(params, x_train, y_train)
        updates, state = optimizer.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), loss

    (params, _), curve = jax.lax.scan(body, (params0, optimizer.init(params0)), None, length=TRAIN_STEPS)
    accuracy = jnp.mean(jnp.argmax(jax.vmap(eqx.combine(params, static))(x_test), axis=-1) == y_test)
    return curve, accuracy


MOMENTUM = 0.9
# learning rates and ε are traced arguments: each optimizer compiles once for its whole grid
regularized = jax.jit(lambda lr, eps: train(muon.regularized_muon(lr, eps=eps, damping=(1 - MOMENTUM) / lr)))
methods = {
    "regularized_muon, ε = 1e-4": (ft.partial(regularized, eps=jnp.float32(1e-4)), (0.01, 0.03, 0.1, 0.3)),
    "regularized_muon, ε = 1e-2": (ft.partial(regularized, eps=jnp.float32(1e-2)), (0.01, 0.03, 0.1, 0.3)),
    "optax.contrib.muon (NS5)": (
        jax.jit(lambda lr: train(optax.contrib.muon(lr, beta=MOMENTUM))),
        (0.01, 0.03, 0.1, 0.3),
    ),
    "Adam": (jax.jit(lambda lr: train(optax.adam(lr))), (3e-3, 1e-2, 3e-2, 0.1)),
    "SGD + momentum": (jax.jit(lambda lr: train(optax.sgd(lr, momentum=MOMENTUM))), (0.03, 0.1, 0.3, 1.0)),
}
runs = {name: {lr: fn(jnp.float32(lr)) for lr in lrs} for name, (fn, lrs) in methods.items()}

# %% [markdown]
# Training loss of each method at its best learning rate (left), and the selection score for every
# learning rate tried (right; lower is better). Look for how many steps each needs to reach a given
# loss; the legend gives each run's held-out accuracy.

# %%
fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4))
best = {}
FLOOR = 1e-7  # float32 cross-entropy reaches exactly 0; draw and score it as 1e-7
for c, (name, by_lr) in zip((f"C{i}" for i in range(5)), runs.items(), strict=True):
    score = {r: float(np.mean(np.log10(np.clip(np.nan_to_num(by_lr[r][0], nan=1e3), FLOOR, None)))) for r in by_lr}
    lr = min(score, key=score.get)
    curve, accuracy = by_lr[lr]
    best[name] = (lr, float(curve[-1]), float(accuracy))
    a1.semilogy(np.maximum(np.asarray(curve), FLOOR), c, label=f"{name} (lr {lr:g}): test acc {float(accuracy):.3f}")
    lrs = sorted(by_lr)
    a2.semilogx(lrs, [score[r] for r in lrs], c + "o-", label=name)
a1.set_xlabel("step")
a1.set_ylabel("training cross-entropy (0 drawn at 1e-7)")
a1.legend(fontsize=7)
a2.set_xlabel("learning rate")
a2.set_ylabel("mean of log₁₀(training loss) over the run")
a2.legend(fontsize=7, loc="lower left")
plt.show()
{name: f"lr {lr:g}: final training loss {loss:.2e}, test accuracy {acc:.3f}" for name, (lr, loss, acc) in best.items()}

# %% [markdown]
# At full size (250 steps), regularised Muon with ε = 10⁻⁴ and optax's Muon drive the training loss
# to float32's floor in 100–150 steps, while Adam and SGD + momentum are still around 10⁻³ after
# 250; with ε = 10⁻² the run keeps pace with Muon early on and then slows to a heavy-ball rate, as
# the momentum falls below ε. Memorising 1400 images is easy for all five: their held-out accuracies
# differ by about one percentage point, so this compares optimisation speed, not generalisation.

# %% [markdown]
# ## 3. The mean-field flow on a teacher–student network
# `muon.TwoLayerNetwork` makes J(ρ) = ½ E|f(x) − y|² with f(x) = Σᵢ wᵢ F(Wᵢ)(x) a mean-field
# two-layer network: each particle Wᵢ is a 2 × 5 matrix (two tanh units on four inputs plus a bias
# column), and the targets come from a teacher with four such particles. `muon.MuonMeanFieldFlow`
# moves N particles (Wᵢ, Pᵢ) by regularised Muon with the mean-field force Gᵢ = ∇_{Wᵢ}J / wᵢ:
#
#     Pᵢ ← (1 − γh) Pᵢ − h Gᵢ,     Wᵢ ← Wᵢ + h ∇φ_ε(Pᵢ),
#
# a discretisation of Ẇ = ∇φ_ε(P), Ṗ = −G − γP, whose Hamiltonian H_N = J(ρ_N) + Σᵢ wᵢ φ_ε(Pᵢ) obeys
# dH/dt = −γ Σᵢ wᵢ⟨∇φ_ε(Pᵢ), Pᵢ⟩ ≤ 0. Every step reports the bookkeeping in `info`: `hamiltonian`,
# `objective` (J), `kinetic`, `dissipation` (−dH/dt), `energy_change` (ΔH) and
# `discretisation_error`, and sets `energy_flag` if H rose by more than that error estimate.
# Here h = 0.05, γ = 1, ε = 0.1, and `method="svd"`: for 2 × 5 matrices the SVD is exact and the
# quickest to compile (the default "eigh" pays off on large matrices).

# %%
rng = np.random.default_rng(3)
inputs = np.concatenate([rng.standard_normal((NUM_INPUTS, 4)), np.ones((NUM_INPUTS, 1))], axis=1).astype(np.float32)
teacher = rng.standard_normal((4, 2, 5)).astype(np.float32)
targets = np.mean(np.tanh(np.einsum("sd,nkd->snk", inputs, teacher)), axis=(1, 2))
objective = muon.TwoLayerNetwork(inputs, targets)
H_STEP, DAMPING, EPS = 0.05, 1.0, 0.1
flow = muon.MuonMeanFieldFlow(objective, eps=EPS, damping=DAMPING, step_size=H_STEP, method="svd")


@eqx.filter_jit  # one compiled call instead of many small eager ops
def start(flow, x):
    """Particles at x with zero momentum, and J there."""
    state = flow.init(x)
    return state, flow.objective_value(state)


x_all = rng.standard_normal((max(PARTICLE_COUNTS), 2, 5)).astype(np.float32)  # initial particles ~ N(0, 1)

traces = {}
for n in PARTICLE_COUNTS:
    state0, j0 = start(flow, x_all[:n])
    _, trace = dpflows.run(flow, state0, jr.key(5), FLOW_STEPS)
    traces[n] = {k: np.asarray(v) for k, v in trace.info.items()} | {"J0": float(j0)}
times = H_STEP * np.arange(1, FLOW_STEPS + 1)

# %% [markdown]
# Left: H (solid) falls monotonically while J (dotted) follows just below it; the gap is the
# kinetic energy Σwᵢφ_ε(Pᵢ). The larger particle counts are nearly indistinguishable: that is the
# mean-field limit. Right, for the largest N: the energy lost per step, −ΔH (solid), against the
# continuous-time identity's prediction h·γΣwᵢ⟨∇φ_ε(Pᵢ), Pᵢ⟩ (dots; on the first step, from rest,
# it undershoots). The gap between the two, |ΔH + h·dissipation| (dashed), is the discretisation's
# share. The step's own estimate `discretisation_error` (dotted) is one-sided: it bounds how much
# *less* energy the step may lose than predicted (that is what `energy_flag` checks); where the
# dashed line rises above it, H fell by *more* than predicted (the convexity of φ_ε only helps).
# Look for the solid line and the dots agreeing, with the dashed line well below them.

# %%
fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4))
for c, n in zip(("C0", "C1", "C2"), PARTICLE_COUNTS, strict=False):
    a1.semilogy(times, traces[n]["hamiltonian"], c + "-", label=f"H, N = {n}")
    a1.semilogy(times, traces[n]["objective"], c + ":", label=f"J, N = {n}")
a1.set_xlabel("flow time t = step × h")
a1.set_ylabel("H(t) and J(t)")
a1.legend(fontsize=8)
tr = traces[PARTICLE_COUNTS[-1]]
predicted = H_STEP * tr["dissipation"]
every = max(1, FLOW_STEPS // 40)
a2.semilogy(times, -tr["energy_change"], "k-", label="−ΔH (energy lost in the step)")
a2.semilogy(times[::every], predicted[::every], "C3o", ms=3, label="h · dissipation (continuous-time rate × h)")
a2.semilogy(times, np.abs(tr["energy_change"] + predicted), "C0--", lw=1, label="|ΔH + h · dissipation|")
a2.semilogy(times, tr["discretisation_error"], "C2:", label="discretisation_error (the step's estimate)")
a2.set_xlabel("flow time t")
a2.set_ylabel(f"energy per step (N = {PARTICLE_COUNTS[-1]})")
a2.legend(fontsize=8)
plt.show()
{
    f"N = {n}": {
        "J at t=0": round(tr["J0"], 4),
        "J at the end": float(f"{tr['objective'][-1]:.3g}"),
        "largest one-step change of H": float(f"{np.max(tr['energy_change']):.2g}"),
        "steps flagged (H rose by more than the error estimate)": int(tr["energy_flag"].sum()),
        "steps losing less than h·dissipation − discretisation_error": int(
            np.sum(tr["energy_change"] + H_STEP * tr["dissipation"] > tr["discretisation_error"])
        ),
    }
    for n, tr in traces.items()
}

# %% [markdown]
# A negative "largest one-step change of H" means H fell at every step; the last two counts should
# be 0.
#
# ### J need not decrease, H must
# Damping γ is an array leaf of the flow, so a scan over γ is one `dpflows.sweep` (one compiled,
# vmapped run; all members start from the same particles). With little damping the particles
# overshoot and J oscillates, but H still never increases: the Lyapunov function of the flow is H,
# not J. With heavy damping the motion is sluggish.

# %%
dampings = (0.1, 1.0, 8.0)
n_sweep = PARTICLE_COUNTS[0]
state0, _ = start(flow, x_all[:n_sweep])
swept_flows = [muon.MuonMeanFieldFlow(objective, eps=EPS, damping=g, step_size=H_STEP, method="svd") for g in dampings]
_, swept = dpflows.sweep(swept_flows, state0, jr.key(5), FLOW_STEPS)
fig, axes = plt.subplots(1, len(dampings), figsize=(13, 3.5), sharey=True)
for j, (ax, g) in enumerate(zip(axes, dampings, strict=True)):
    h_curve, j_curve = np.asarray(swept.info["hamiltonian"][j]), np.asarray(swept.info["objective"][j])
    ax.semilogy(times, h_curve, "k-", label="H")
    ax.semilogy(times, j_curve, "C1-", lw=1, label="J")
    rises = int(np.sum(np.diff(j_curve) > 0))
    h_rises = int(np.sum(np.asarray(swept.info["energy_change"][j]) > 0))
    ax.set_title(f"γ = {g:g}: J rose on {rises} steps, H on {h_rises}", fontsize=9)
    ax.set_xlabel("flow time t")
axes[0].set_ylabel(f"H and J  (N = {n_sweep})")
axes[0].legend()
plt.show()
