"""One training step of the noise-matched loss: dpflows vs ott-jax called directly vs POT; and a grid.

    python benchmarks/bench_ldp.py            # both sections
    python benchmarks/bench_ldp.py grid       # only "grid: loop vs sweep"

The step is the matched entropic cost OT_ε(model batch, private records) and its gradient w.r.t.
the model points (what a generator step back-propagates), at ε = σ² for c = ½‖x−y‖², threshold 1e-3.
ott-jax gets ‖x−y‖² and 2ε (the same plan) and is differentiated through its implicit solver;
POT (NumPy) has no gradient here: its row is the forward solve only, so its ratio is a lower bound.

"grid: loop vs sweep" times an experiment-shaped grid (noise scales × seeds × {matched, small ε}) at
demo size, once each way, compilation included (caches cleared before each): a Python loop that
builds and runs one model per cell (what ``ldp_2d`` did) against the same cells as one
``dpflows.sweep`` (particle denoiser) or one ``jax.vmap`` of ``dpflows.fit`` (MLP generators), as
``experiments/ldp_generative.py`` now runs them. One run each: on a shared machine expect ±30 %.
A vmapped Sinkhorn solve runs every lane until the slowest lane converges, so a sweep pays
(members × the slowest member's iterations) per step: the particle row reports both counts.
"""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from _timing import median_time, table
from ott.geometry import pointcloud
from ott.solvers import linear

import dpflows
import ot as pot
from dpflows import ldp, privacy
from dpflows.experiments.ldp_generative import Member, fit_generator, fit_particles, loss_kwargs

SIGMA, THRESHOLD, M = 0.5, 1e-3, 4096


def _data(key, n, m):
    k1, k2 = jr.split(key)
    y = jr.normal(k1, (m, 2)) * 0.6 + SIGMA * jr.normal(k2, (m, 2))
    return jr.normal(jr.fold_in(key, 7), (n, 2)), y


def _ours(noise):
    return jax.jit(jax.value_and_grad(lambda x, y: ldp.noise_matched_loss(x, y, noise=noise, threshold=THRESHOLD)))


def _ott():
    def loss(x, y):
        with jax.numpy_rank_promotion("allow"), jax.numpy_dtype_promotion("standard"):
            geom = pointcloud.PointCloud(x, y, epsilon=2 * SIGMA**2)
            return linear.solve(geom, threshold=THRESHOLD).reg_ot_cost / 2

    return jax.jit(jax.value_and_grad(loss))


def _pot(x, y):
    c = 0.5 * pot.dist(np.asarray(x, np.float64), np.asarray(y, np.float64))
    a, b = np.full(c.shape[0], 1 / c.shape[0]), np.full(c.shape[1], 1 / c.shape[1])
    return pot.sinkhorn2(a, b, c, SIGMA**2, method="sinkhorn_log", stopThr=THRESHOLD)


def main() -> str:
    noise = ldp.GaussianNoise(SIGMA)
    ours, ott_step = _ours(noise), _ott()
    rows = []
    for n in (256, 1024, 4096):
        x, y = _data(jr.key(n), n, M)
        t_ours = median_time(lambda x=x, y=y: ours(x, y), repeats=5)
        t_ott = median_time(lambda x=x, y=y: ott_step(x, y), repeats=5)
        v_ours, g_ours = ours(x, y)
        v_ott, g_ott = ott_step(x, y)
        start = time.perf_counter()
        v_pot = _pot(x, y)
        t_pot = time.perf_counter() - start
        rows.append(
            (
                f"dpflows value+grad, batch {n} × {M}",
                t_ours,
                f"ott / dpflows = {t_ott / t_ours:.1f}×; POT (forward only) / dpflows = {t_pot / t_ours:.1f}×",
            )
        )
        rows.append(
            (
                f"ott-jax value+grad, batch {n} × {M}",
                t_ott,
                f"cost rel. diff {abs(float(v_ours) - float(v_ott)) / abs(float(v_ours)):.1e}; "
                f"grad max diff {float(jnp.max(jnp.abs(g_ours - g_ott))):.1e}",
            )
        )
        rows.append((f"POT sinkhorn2 (NumPy, forward only), batch {n} × {M}", t_pot, f"cost {float(v_pot):.4f}"))
    return table(rows, "LDP matched-loss training step (CPU; median of 5, POT a single run)")


def _grid_members(epsilons, seeds, n_private):
    """An ``ldp_2d``-shaped grid: Gaussian-LDP releases of 8 Gaussians × seeds × {matched, small ε}."""
    members = []
    for i, eps in enumerate(epsilons):
        for seed in range(seeds):
            k = jr.fold_in(jr.key(100 + seed), i)
            x = dpflows.data.eight_gaussians(k, n_private)[0]
            rel = privacy.gaussian_ldp(jr.fold_in(k, 1), x, epsilon=eps, delta=1e-5, radius=1.0)  # public key: a bench
            noise = ldp.noise_of(rel)
            for variant in ("matched", "small_eps"):
                kw = loss_kwargs(variant, noise, 0.1)
                members.append(Member(jr.fold_in(k, 2 + len(variant)), rel.value, noise, kw))
    return members


def _once(fn) -> float:
    jax.clear_caches()
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def grid_loop_vs_sweep() -> str:
    """The grid section: loop of rebuilt models vs one sweep / one vmap of fit (one run each)."""
    epsilons, seeds = (2.0, 5.0, 10.0), 2
    members = _grid_members(epsilons, seeds, 1000)
    iters = []
    n_part, p_steps = 400, 30

    def particles_loop():
        out = []
        for m in members:
            flow = ldp.ParticleDenoiser(m.y, noise=m.noise, step_size=1.0, max_iterations=300, **m.kwargs)
            x0 = 0.5 * jr.normal(m.key, (n_part, 2))
            state, trace = dpflows.run(flow, flow.init(x0), jr.fold_in(m.key, 1), p_steps, throw=False)
            iters.append(np.asarray(trace["num_iters"]))
            out.append(state.x)
        return out

    def particles_sweep():
        return [x for x, _ in fit_particles(members, num_particles=n_part, num_steps=p_steps, dim=2)]

    gen_kw = dict(steps=40, batch_size=256, data_batch_size=800, learning_rate=3e-3, num_samples=400)

    def generators_loop():
        out = []
        for m in members:
            k_init, k_train, k_sample = jr.split(m.key, 3)
            gen = ldp.MLPGenerator(k_init, latent_dim=4, data_dim=2, width=128, depth=3)
            res = ldp.train_generator(
                gen,
                m.y,
                noise=m.noise,
                optimizer=optax.adam(gen_kw["learning_rate"]),
                num_steps=gen_kw["steps"],
                batch_size=gen_kw["batch_size"],
                data_batch_size=gen_kw["data_batch_size"],
                key=k_train,
                max_iterations=300,
                **m.kwargs,
            )
            out.append(jax.vmap(res.generator)(jr.normal(k_sample, (gen_kw["num_samples"], 4))))
        return out

    def generators_vmap():
        return [x for x, _ in fit_generator(members, **gen_kw)]

    rows = []
    for what, loop, batched in (
        (f"particle denoiser ({n_part} particles, {p_steps} steps)", particles_loop, particles_sweep),
        (
            f"MLP generator ({gen_kw['steps']} Adam steps, batch {gen_kw['batch_size']})",
            generators_loop,
            generators_vmap,
        ),
    ):
        t_loop, t_batched = _once(loop), _once(batched)
        rows.append((f"{what}: loop of {len(members)} runs", t_loop, f"loop / batched = {t_loop / t_batched:.2f}×"))
        note = "compiles once"
        if iters and loop is particles_loop:
            it = np.stack(iters)  # (members, steps): a vmapped solve runs every lane to the slowest lane's count
            note += f"; Sinkhorn iterations Σ over runs {it.sum()}, in lockstep {it.max(0).sum() * it.shape[0]}"
        rows.append((f"{what}: one sweep / vmap of fit", t_batched, note))
    title = (
        f"grid: loop vs sweep (Gaussian LDP ε ∈ {list(epsilons)} × {seeds} seeds × matched/small-ε, 1000 records; "
        "one run each, compile included)"
    )
    return table(rows, title)


if __name__ == "__main__":
    if sys.argv[1:] == ["grid"]:
        print(grid_loop_vs_sweep())
    else:
        print(main())
        print()
        print(grid_loop_vs_sweep())
