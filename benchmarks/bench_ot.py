"""Entropic OT: dpflows vs ott-jax vs POT vs GeomLoss, at equal accuracy (L1 marginal error ≤ 1e-3).

    python benchmarks/bench_ot.py          # batched, single and online-vs-dense tables (minutes)
    python benchmarks/bench_ot.py --full   # + n = m = 10⁵ (d = 2, 64) online solves (tens of minutes)

Cost convention: dpflows uses ½‖x−y‖² with ε; ott-jax's PointCloud uses ‖x−y‖², so it gets 2ε
(the same plan). POT gets the explicit ½‖x−y‖² cost matrix and its log-domain Sinkhorn. GeomLoss'
p = 2 cost is ½‖x−y‖² too, so it gets blur = √ε (its ε = blurᵖ).

Section "online vs dense": ``method="online"`` (never forms C) against the default dense
``method="stabilized"``, same data and stopping rule, timed interleaved (round robin after a warm-up)
so that a load change on the shared machine hits both alike; the ratio of medians is the figure.
GeomLoss (PyTorch; not a dependency) runs if importable here or through
``DPFLOWS_TORCH_PYTHON=/path/to/python`` (a throw-away venv with ``torch==2.13.0 geomloss``, and
``pykeops`` for its online backend), with one torch thread; otherwise the section says it was
skipped. GeomLoss has no stopping rule (a fixed ε-scaling schedule, ``scaling=0.9`` here); the
table reports the L1 marginal error its potentials reach, computed in the child.

Section "n = m = 10⁵" (``--full``): each solve runs in a fresh process that reports iterations,
seconds (compiled beforehand), the converged flag and ``resource.getrusage(RUSAGE_SELF).ru_maxrss``
(the peak resident set of the whole process, JAX runtime included; read before and after the
solve). A dense float32 C would take n·m·4 B = 40 GB, more than the machine has.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from _timing import median_time, table
from ott.geometry import pointcloud
from ott.solvers import linear

import ot as pot
from dpflows import ot

EPS, THRESHOLD = 1e-2, 1e-3


def _ott_solve(x, y):
    with jax.numpy_rank_promotion("allow"), jax.numpy_dtype_promotion("standard"):
        out = linear.solve(pointcloud.PointCloud(x, y, epsilon=2 * EPS), threshold=THRESHOLD, max_iterations=10_000)
        return out.reg_ot_cost / 2, out.converged


def _pot_solve(x, y):
    """POT's log-domain plan, scored with the entropic objective ⟨C,π⟩ + ε KL(π‖a⊗b).

    (POT's sinkhorn2 returns only the linear part ⟨C,π⟩; its entropy term −H(π) differs from
    KL(π‖a⊗b) by a constant on Π(a, b), so the plan is the same.)
    """
    c = 0.5 * pot.dist(np.asarray(x, np.float64), np.asarray(y, np.float64))
    n, m = c.shape
    a, b = np.full(n, 1 / n), np.full(m, 1 / m)
    plan = pot.sinkhorn(a, b, c, EPS, method="sinkhorn_log", stopThr=THRESHOLD, numItermax=10_000)
    pos = plan > 0
    kl = np.sum(plan[pos] * np.log(plan[pos] / np.outer(a, b)[pos]))
    return float(np.sum(plan * c) + EPS * kl)


def batch_rows(key):
    k, n, d = 32, 256, 8
    x = jr.normal(key, (n, d)) / np.sqrt(d)
    ys = jr.normal(jr.fold_in(key, 1), (k, n, d)) / np.sqrt(d) * jnp.linspace(0.5, 1.5, k)[:, None, None]
    ys = ys + jnp.linspace(0.0, 1.0, k)[:, None, None]
    ours = jax.jit(
        jax.vmap(lambda y: ot.entropic_ot(x, y, epsilon=EPS, threshold=THRESHOLD, max_iterations=10_000, warn=False))
    )
    theirs = jax.jit(jax.vmap(lambda y: _ott_solve(x, y)))
    one_ott = jax.jit(lambda y: _ott_solve(x, y))
    t_ours = median_time(lambda: ours(ys).cost, repeats=5)
    t_ott = median_time(lambda: theirs(ys)[0], repeats=3)
    t_ott_loop = median_time(lambda: [one_ott(ys[i])[0] for i in range(k)], repeats=3)
    sub = 4
    start = time.perf_counter()
    pot_vals = [_pot_solve(x, ys[i]) for i in range(sub)]
    t_pot = (time.perf_counter() - start) / sub * k
    res = ours(ys)
    agree = float(np.max(np.abs(np.asarray(res.cost) - np.asarray(theirs(ys)[0])) / np.asarray(res.cost)))
    agree_pot = float(np.max(np.abs(np.asarray(res.cost[:sub]) - np.array(pot_vals)) / np.asarray(res.cost[:sub])))
    iters = np.asarray(res.num_iters)
    rows = [
        (
            f"dpflows, {k} problems batched (jit+vmap), n={n}, d={d}",
            t_ours,
            f"all converged: {bool(res.converged.all())}; iterations per lane {iters.min()}–{iters.max()}",
        ),
        (
            "ott-jax linear.solve, jit+vmap (adaptive loop)",
            t_ott,
            f"ott vmapped / dpflows = {t_ott / t_ours:.1f}×; max rel. cost diff {agree:.1e}",
        ),
        ("ott-jax, Python loop of one compiled solve", t_ott_loop, f"ott loop / dpflows = {t_ott_loop / t_ours:.1f}×"),
        (
            f"POT sinkhorn_log loop (scaled from {sub})",
            t_pot,
            f"POT / dpflows = {t_pot / t_ours:.0f}×; max rel. cost diff {agree_pot:.1e}",
        ),
    ]
    return table(rows, "batch of 32 entropic OT problems (CPU, float32; POT float64)")


def single_rows(key):
    rows = []
    for n in (1000, 4000):
        for d in (2, 64):
            x = jr.normal(jr.fold_in(key, n + d), (n, d)) / np.sqrt(d)
            y = jr.normal(jr.fold_in(key, n + d + 1), (n, d)) / np.sqrt(d) + 0.5
            ours = jax.jit(
                lambda x, y: ot.entropic_ot(x, y, epsilon=EPS, threshold=THRESHOLD, max_iterations=10_000, warn=False)
            )
            theirs = jax.jit(_ott_solve)
            t_ours = median_time(lambda ours=ours, x=x, y=y: ours(x, y).cost, repeats=3)
            t_ott = median_time(lambda theirs=theirs, x=x, y=y: theirs(x, y)[0], repeats=3)
            r = ours(x, y)
            note = f"ott / dpflows = {t_ott / t_ours:.2f}×; {int(r.num_iters)} it; converged {bool(r.converged)}"
            if n == 1000:
                start = time.perf_counter()
                _pot_solve(x, y)
                t_pot = time.perf_counter() - start
                note += f"; POT / dpflows = {t_pot / t_ours:.0f}×"
            rows.append((f"n = m = {n}, d = {d}: dpflows", t_ours, note))
            rows.append((f"n = m = {n}, d = {d}: ott-jax", t_ott, ""))
    return table(rows, "single problems (CPU, float32)")


SIZES, DIMS = (1000, 4000), (2, 64)
LARGE_N, LARGE_EPS = 100_000, 0.1  # ε = 0.1 at 10⁵: ~10–30 iterations, minutes per solve on 2 cores


def _clouds(key, n, d):
    """The single-problem clouds: x ~ N(0, I/d), y ~ N(½·1, I/d) (unit-scale, shifted)."""
    x = jr.normal(jr.fold_in(key, n + d), (n, d)) / np.sqrt(d)
    y = jr.normal(jr.fold_in(key, n + d + 1), (n, d)) / np.sqrt(d) + 0.5
    return x, y


def _solver(method, eps=EPS):
    return jax.jit(
        lambda x, y: ot.entropic_ot(
            x, y, epsilon=eps, threshold=THRESHOLD, max_iterations=10_000, method=method, warn=False
        )
    )


def _interleaved(fns, repeats):
    """Median seconds of each ``fn()``, run round robin after one warm-up call each (compiles)."""
    for fn in fns.values():
        jax.block_until_ready(fn())
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(ts)) for name, ts in times.items()}


def _ott_online_note(x, y):
    """ott-jax's own online mode (PointCloud batch_size), tried once: PEERS.md says it fails on JAX 0.10."""
    try:
        with jax.numpy_rank_promotion("allow"), jax.numpy_dtype_promotion("standard"):
            geom = pointcloud.PointCloud(x, y, epsilon=2 * EPS, batch_size=256)
            out = linear.solve(geom, threshold=THRESHOLD, max_iterations=10_000)
            jax.block_until_ready(out.reg_ot_cost)
    except Exception as err:  # noqa: BLE001 - any failure is the finding
        return f"fails: {type(err).__name__}: {str(err).splitlines()[0][:90]}"
    return f"runs: cost {float(out.reg_ot_cost) / 2:.6f}, converged {bool(out.converged)}"


def online_rows(key):
    rows, ratios = [], []
    for n in SIZES:
        for d in DIMS:
            x, y = _clouds(key, n, d)
            dense, online = _solver("stabilized"), _solver("online")
            t = _interleaved(
                {"dense": lambda f=dense, x=x, y=y: f(x, y).cost, "online": lambda f=online, x=x, y=y: f(x, y).cost},
                repeats=3,
            )
            rd, ro = dense(x, y), online(x, y)
            ratio = t["online"] / t["dense"]
            ratios.append(ratio)
            diff = abs(float(ro.cost) - float(rd.cost)) / abs(float(rd.cost))
            rows.append(
                (
                    f"n = m = {n}, d = {d}: dense (stabilized)",
                    t["dense"],
                    f"{int(rd.num_iters)} it; converged {bool(rd.converged)}",
                )
            )
            rows.append(
                (
                    f"n = m = {n}, d = {d}: online",
                    t["online"],
                    f"**online / dense = {ratio:.2f}×**; {int(ro.num_iters)} it; converged "
                    f"{bool(ro.converged)}; rel. cost diff {diff:.1e}",
                )
            )
    x, y = _clouds(key, SIZES[0], DIMS[0])
    rows.append(
        (f"ott-jax online (batch_size=256), n = m = {SIZES[0]}, d = {DIMS[0]}", float("nan"), _ott_online_note(x, y))
    )
    title = (
        f"online (no n×m matrix) vs dense, ε = {EPS}, threshold {THRESHOLD} (CPU, float32; ratios of "
        f"interleaved medians; worst {max(ratios):.2f}×)"
    )
    return table(rows, title)


GEOMLOSS = textwrap.dedent(
    """
    import json, sys, time, numpy as np, torch
    from geomloss import SamplesLoss
    torch.set_num_threads(1)
    spec = json.loads(sys.argv[1]); out = []
    try:
        import pykeops  # noqa: F401
        backends = ["tensorized", "online"]
    except Exception:
        backends = ["tensorized"]
    backends = [b for b in backends if b in spec["backends"]]
    data = np.load(spec["data"])
    for name in spec["cases"]:
        x = torch.from_numpy(data[name + "_x"]); y = torch.from_numpy(data[name + "_y"])
        n, m = len(x), len(y)
        for backend in backends:
            if backend == "tensorized" and n * m > 4000 * 4000:
                continue
            loss = SamplesLoss("sinkhorn", p=2, blur=spec["eps"] ** 0.5, scaling=spec["scaling"],
                               debias=False, potentials=True, backend=backend)
            f, g = loss(x, y)  # warm-up (KeOps compiles its kernels here)
            ts, cs = [], []
            for _ in range(spec["repeats"]):
                start, cpu = time.perf_counter(), time.process_time()
                f, g = loss(x, y)
                ts.append(time.perf_counter() - start); cs.append(time.process_time() - cpu)
            f, g = f.reshape(-1), g.reshape(-1)  # (1, n) for an unbatched cloud
            value = float(f.mean() + g.mean())
            err = None
            if n * m <= 4000 * 4000:  # L1 a-marginal error of the returned potentials, densely
                c = 0.5 * torch.cdist(x.double(), y.double()) ** 2
                logp = (f.double()[:, None] + g.double()[None, :] - c) / spec["eps"]
                rows = torch.exp(torch.logsumexp(logp, dim=1)) / (n * m)
                err = float(torch.sum(torch.abs(rows - 1.0 / n)))
            out.append(dict(case=name, backend=backend, seconds=float(np.median(ts)), cpu=float(np.median(cs)),
                            value=value, error=err))
    print(json.dumps(out))
    """
)


def _torch_python():
    python = os.environ.get("DPFLOWS_TORCH_PYTHON", sys.executable)
    probe = subprocess.run([python, "-c", "import geomloss, torch"], capture_output=True, text=True)
    if probe.returncode != 0:
        return None, f"geomloss is not importable by {python} (set DPFLOWS_TORCH_PYTHON to a venv with it)"
    return python, ""


def _geomloss(python, clouds, backends, repeats, eps, timeout):
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "clouds.npz")
        arrays = {}
        for name, (x, y) in clouds.items():
            arrays[name + "_x"], arrays[name + "_y"] = np.asarray(x), np.asarray(y)
        np.savez(path, **arrays)
        spec = dict(data=path, cases=list(clouds), backends=backends, repeats=repeats, eps=eps, scaling=0.9)
        try:
            res = subprocess.run(
                [python, "-c", GEOMLOSS, json.dumps(spec)], capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            return None, f"GeomLoss did not finish within {timeout} s"
    if res.returncode != 0:
        return None, "GeomLoss failed: " + (res.stderr.strip().splitlines() or ["?"])[-1][:120]
    return json.loads(res.stdout.strip().splitlines()[-1]), ""


def geomloss_rows(key):
    title = (
        f"GeomLoss 0.3 (PyTorch, 1 thread; scaling 0.9, blur = √ε) vs dpflows online, ε = {EPS} (GeomLoss runs "
        "first in its own process, so the wall ratio mixes two load windows; the CPU-time ratio does not)"
    )
    python, why = _torch_python()
    if python is None:
        return f"### {title}\n\nskipped: {why}"
    clouds = {f"{n}_{d}": _clouds(key, n, d) for n in SIZES for d in DIMS}
    results, why = _geomloss(python, clouds, ["tensorized", "online"], repeats=3, eps=EPS, timeout=3600)
    if results is None:
        return f"### {title}\n\nskipped: {why}"
    rows = []
    for name, (x, y) in clouds.items():
        online = _solver("online")
        jax.block_until_ready(online(x, y).cost)
        cpu = time.process_time()
        t_ours = median_time(lambda online=online, x=x, y=y: online(x, y).cost, repeats=3, warmup=0)
        cpu_ours = (time.process_time() - cpu) / 3
        ours = online(x, y)
        n, d = name.split("_")
        rows.append(
            (
                f"n = m = {n}, d = {d}: dpflows online",
                t_ours,
                f"{int(ours.num_iters)} it; L1 error {float(ours.error):.1e}; CPU time {cpu_ours:.2f} s (2 threads)",
            )
        )
        for r in (r for r in results if r["case"] == name):
            diff = abs(r["value"] - float(ours.cost)) / abs(float(ours.cost))
            err = "n/a" if r["error"] is None else f"{r['error']:.1e}"
            rows.append(
                (
                    f"n = m = {n}, d = {d}: GeomLoss {r['backend']}",
                    r["seconds"],
                    f"GeomLoss / dpflows = {r['seconds'] / t_ours:.1f}× wall, {r['cpu'] / cpu_ours:.1f}× CPU time; "
                    f"L1 error {err}; rel. value diff {diff:.1e}",
                )
            )
    return table(rows, title)


def _large_child(n, d, eps):
    """One online solve at n = m in this (fresh) process; prints a JSON line."""
    rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # noqa: E731 - KiB → MiB
    x, y = _clouds(jr.key(0), n, d)
    compiled = _solver("online", eps).lower(x, y).compile()
    before = rss()
    start = time.perf_counter()
    res = jax.block_until_ready(compiled(x, y))
    seconds = time.perf_counter() - start
    out = dict(n=n, d=d, eps=eps, iterations=int(res.num_iters), seconds=seconds, converged=bool(res.converged))
    out.update(error=float(res.error), cost=float(res.cost), rss_before_mib=before, peak_rss_mib=rss())
    print(json.dumps(out))


def large_rows(key):
    rows = []
    for d in DIMS:
        res = subprocess.run(
            [sys.executable, __file__, "--large-child", str(LARGE_N), str(d), str(LARGE_EPS)],
            capture_output=True,
            text=True,
            timeout=7200,
        )
        if res.returncode != 0:
            rows.append((f"n = m = {LARGE_N}, d = {d}: dpflows online", float("nan"), "failed: " + res.stderr[-200:]))
            continue
        r = json.loads(res.stdout.strip().splitlines()[-1])
        rows.append(
            (
                f"n = m = {LARGE_N}, d = {d}: dpflows online",
                r["seconds"],
                f"{r['iterations']} it; converged {r['converged']} (L1 error {r['error']:.1e}); cost {r['cost']:.6f}; "
                f"peak RSS {r['peak_rss_mib']:.0f} MiB ({r['rss_before_mib']:.0f} MiB before the solve; "
                f"a dense float32 C alone: {LARGE_N**2 * 4 / 2**30:.0f} GiB)",
            )
        )
    rows.append(
        (
            f"n = m = {LARGE_N}: ott-jax",
            float("nan"),
            f"not run: a dense PointCloud needs the {LARGE_N**2 * 4 / 2**30:.0f} GiB cost matrix; its online mode "
            "fails on JAX 0.10 (see the online table)",
        )
    )
    python, why = _torch_python()
    if python is None:
        rows.append((f"n = m = {LARGE_N}: GeomLoss online (KeOps)", float("nan"), f"skipped: {why}"))
    else:
        clouds = {f"{LARGE_N}_{DIMS[0]}": _clouds(key, LARGE_N, DIMS[0])}
        results, why = _geomloss(python, clouds, ["online"], repeats=1, eps=LARGE_EPS, timeout=3600)
        for r in results or []:
            rows.append(
                (f"n = m = {LARGE_N}, d = {DIMS[0]}: GeomLoss online (KeOps)", r["seconds"], f"value {r['value']:.6f}")
            )
        if not results:
            rows.append((f"n = m = {LARGE_N}, d = {DIMS[0]}: GeomLoss online (KeOps)", float("nan"), why or "no KeOps"))
    return table(rows, f"n = m = {LARGE_N}, ε = {LARGE_EPS}, threshold {THRESHOLD} (CPU, float32; one process each)")


def main(full: bool = False) -> str:
    key = jr.key(0)
    parts = [batch_rows(key), single_rows(key), online_rows(key), geomloss_rows(key)]
    if full:
        parts.append(large_rows(key))
    return "\n\n".join(parts)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--large-child"]:
        _large_child(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
    else:
        print(main(full="--full" in sys.argv[1:]))
