"""Regularised Muon map: exact (eigh, SVD) and matmul-only paths vs optax's Newton–Schulz (NS5) step.

Issue 8's case: 1000 particles of 64×64 float32 matrices. Error is the largest operator-norm distance
to the float64 SVD map over the batch; the ratio is time / (optax.contrib's NS5 orthogonalisation,
vmapped over the batch — its polar(M) approximation, the step Muon users run). ε is set relative to
each batch's typical operator norm. The second error column is issue 20's hard case: 64 wide,
low-rank 32×96 matrices of rank 4 (the common shape of Muon gradients), with ε relative to each
one's operator norm. Each path falls back automatically (eigh → newton → svd) outside its documented
range (``dpflows.muon`` module docstring, "Accuracy"); the bound column is the largest documented
bound over the 64×64 subset. Also: time against the batch size and the matrix size.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from _timing import median_time
from optax.contrib._muon import orthogonalize_via_newton_schulz

from dpflows import muon

NS_COEFFS = jnp.asarray((3.4445, -4.7750, 2.0315))


def _optax_ns5(m):
    return jax.vmap(lambda a: orthogonalize_via_newton_schulz(a, NS_COEFFS, 5))(m)


def _cases(n, size, key):
    m = jr.normal(key, (n, size, size)) / jnp.sqrt(size)  # ‖M‖_op ≈ 2
    return m


def _low_rank_wide(key, n=64, p=32, q=96, rank=4):
    a, b = jr.split(key)
    return jr.normal(a, (n, p, rank)) @ jr.normal(b, (n, rank, q))


def _error(out, exact) -> float:
    diff = np.asarray(out, np.float64) - np.asarray(exact, np.float64)
    return float(np.max(np.linalg.norm(diff, ord=2, axis=(-2, -1))))


def main(n: int = 1000, size: int = 64) -> str:
    key = jr.key(0)
    m = _cases(n, size, key)
    ns5 = jax.jit(_optax_ns5)
    t_ns5 = median_time(lambda: ns5(m))
    lines = [
        f"### Regularised Muon map, {n} × {size}×{size} float32 (ratio = time / optax NS5)",
        "",
        "| ε / ‖M‖_op | path | median | ratio | max ‖· − exact‖_op | bound | low-rank wide 32×96 r4 |",
        "|---|---|---|---|---|---|---|",
        f"| – | optax.contrib NS5 (≈ polar, not the regularised map) | {t_ns5 * 1e3:.1f} ms | 1.00 | – | – | – |",
    ]
    sub = m[:64]  # the float64 SVD reference on a subset (it is the slow part)
    wide = _low_rank_wide(jr.fold_in(key, 20))
    wide_norm = np.linalg.norm(np.asarray(wide, np.float64), ord=2, axis=(-2, -1))
    for rel in (0.01, 0.1):
        eps = rel * 2.0
        eps_wide = jnp.asarray(rel * wide_norm, jnp.float32)
        with jax.enable_x64(True):
            exact = muon.regularized_polar(jnp.asarray(sub, jnp.float64), eps, method="svd")
            exact_wide = muon.regularized_polar(
                jnp.asarray(wide, jnp.float64), jnp.asarray(eps_wide, jnp.float64), method="svd"
            )
        for label, method, iters in [
            ("eigh (default)", "eigh", 7),
            ("svd", "svd", 7),
            ("newton, 7 steps", "newton", 7),
            ("newton, 6 steps", "newton", 6),
        ]:
            fn = jax.jit(
                lambda a, e, method=method, iters=iters: muon.regularized_polar(
                    a, e, method=method, num_iterations=iters
                )
            )
            t = median_time(lambda fn=fn, eps=eps: fn(m, eps), repeats=5 if method == "svd" else 11)
            err = _error(fn(sub, eps), exact)
            err_wide = _error(fn(wide, eps_wide), exact_wide)
            bound = float(jnp.max(muon.regularized_polar_error_bound(sub, eps, method=method, num_iterations=iters)))
            lines.append(
                f"| {rel:g} | {label} | {t * 1e3:.1f} ms | {t / t_ns5:.2f} | {err:.1e} | {bound:.1e} | {err_wide:.1e} |"
            )
    lines += [
        "",
        "Growth (newton, 7 steps, ε = 0.1‖M‖_op; ratio to NS5 at the same shape):",
        "",
        "| batch × size | newton | NS5 | ratio |",
        "|---|---|---|---|",
    ]
    for nn, ss in [(100, 64), (1000, 32), (1000, 128), (100, 256)]:
        mm = _cases(nn, ss, jr.fold_in(key, ss))
        fn = jax.jit(lambda a: muon.regularized_polar(a, 0.2, method="newton"))  # ε = 0.1‖M‖_op
        t1 = median_time(lambda fn=fn, mm=mm: fn(mm), repeats=5)
        t2 = median_time(lambda mm=mm: ns5(mm), repeats=5)
        lines.append(f"| {nn} × {ss}² | {t1 * 1e3:.1f} ms | {t2 * 1e3:.1f} ms | {t1 / t2:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(main())
