"""Optimal transport: entropic OT, debiased Sinkhorn divergences, barycentric maps, sliced pieces.

Conventions (public):

- ``cost="sqeuclidean"`` is c(x, y) = ½‖x − y‖² everywhere in dpflows. ott-jax's ``PointCloud``
  uses ‖x − y‖²; the conversion, if you call ott directly, is OT^{ott}_{2ε} = 2 · OT_ε (tested).
  ``cost="l1"`` is ‖x − y‖₁.
- ``entropic_ot(...).cost`` is the *biased* entropic cost ⟨C, π⟩ + ε KL(π ‖ a⊗b);
  ``sinkhorn_divergence(...).value`` is the *debiased* S_ε = OT_ε(μ,ν) − ½OT_ε(μ,μ) − ½OT_ε(ν,ν).
  They minimise at different laws (METHODS.md §5): never swap them.
- Weights default to uniform; zero weights are allowed (ragged clouds are padded with them) and
  behave exactly like deleting the point; gradients w.r.t. zero-weight points are 0.
- One cloud against K clouds: ``sinkhorn_divergences(x, ys, a, bs, ...)`` solves the K cross
  problems as lanes of one lockstep batch and OT_ε(μ, μ) once; ``self_transport`` solves a self
  term on its own so that it can be shared (``self_x=``, ``self_ys=``); ``init=`` warm-starts from
  a previous result's ``.potentials``.

Why the solver loop is ours and not ott-jax's ``linear.solve``: ``jax.vmap`` over ott's adaptive
loop runs every lane to the slowest lane's iteration count and, through its batched ``cond``,
recomputes the error every iteration (measured 2–3× slower than a Python loop, 20× slower than a
fixed budget); its failures are silent (unconverged float32 runs at ε ≤ 1e-3 return a wrong cost
and no flag beyond ``converged``); its online mode fails on JAX 0.10. Here a solve runs chunks of
``check_every`` log-domain iterations inside a ``while_loop`` that stops when every lane has
converged; a converged lane's potentials are frozen (per-lane masks), each lane reports its own
``error`` and ``num_iters``, and ``init=`` warm-starts from previous potentials. ott-jax remains
the independent oracle in the tests and the benchmark. ``method="online"`` never forms C: each
half-step is a GEMM and a streaming log-sum-exp over L2-sized tiles, and the loop over-relaxes its
updates with ω = 2/(1 + √(1 − ρ)) from the measured rate ρ (falling back to plain Sinkhorn if that
ever raises the error), so that it matches or beats the dense path where both fit
(benchmarks/bench_ot.py) and solves n = m = 10⁵ in a few hundred MiB.

Sinkhorn in the log domain, with π_ij = a_i b_j exp((f_i + g_j − C_ij)/ε):

    f_i ← −ε log Σ_j b_j exp((g_j − C_ij)/ε),     g_j ← −ε log Σ_i a_i exp((f_i − C_ij)/ε).

After a g-update the b-marginal is exact; ``error`` = Σ_i |Σ_j π_ij − a_i|. The returned cost is the
dual ⟨a, f⟩ + ⟨b, g⟩ evaluated with the potentials held fixed, so ``jax.grad`` follows the envelope
theorem: ∂/∂x_i = Σ_j π_ij ∇ₓc(x_i, y_j) = a_i (x_i − T_{μ→ν}(x_i)), ∂/∂a_i = f_i.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.scipy.special import logsumexp

from . import _validate
from ._typing import Array, Float, PRNGKeyArray

__all__ = [
    "BatchedDivergenceResult",
    "ConvergenceWarning",
    "DivergenceResult",
    "OTResult",
    "barycentric_map",
    "check_weights",
    "cost_matrix",
    "entropic_ot",
    "gaussian_entropic_ot",
    "quantile_map",
    "random_directions",
    "self_transport",
    "sinkhorn_divergence",
    "sinkhorn_divergences",
    "sliced_wasserstein",
]

COSTS = ("sqeuclidean", "l1")


class ConvergenceWarning(UserWarning):
    """A Sinkhorn solve stopped before reaching its threshold (the result says so too)."""


# ------------------------------------------------------------------------------------- costs
def cost_matrix(x: Float[Array, "n d"], y: Float[Array, "m d"], cost: str = "sqeuclidean") -> Float[Array, "n m"]:
    """C_ij = ½‖x_i − y_j‖² (``"sqeuclidean"``) or ‖x_i − y_j‖₁ (``"l1"``)."""
    if cost == "sqeuclidean":
        sq = 0.5 * (jnp.sum(x * x, axis=1)[:, None] + jnp.sum(y * y, axis=1)[None, :]) - x @ y.T
        return jnp.maximum(sq, 0.0)  # the expanded form can dip below 0 by round-off
    if cost == "l1":
        return jnp.sum(jnp.abs(x[:, None, :] - y[None, :, :]), axis=-1)
    raise ValueError(f"cost must be one of {COSTS}, got {cost!r}")


def _log_weights(w):
    return jnp.where(w > 0, jnp.log(jnp.where(w > 0, w, 1.0)), -jnp.inf)


# ------------------------------------------------------------------------------------ results
class OTResult(eqx.Module):
    """Entropic OT between μ = Σ a_i δ_{x_i} and ν = Σ b_j δ_{y_j}.

    Attributes:
        cost: OT_ε(μ, ν) = ⟨C, π⟩ + ε KL(π ‖ a⊗b) (biased entropic cost), differentiable.
        f: potential on x, shape (n,). g: potential on y, shape (m,).
        error: L1 marginal error on the a side at the last check.
        converged: error ≤ threshold. num_iters: iterations this problem needed.
        x, y, a, b, epsilon: the problem (kept for :meth:`plan` and :func:`barycentric_map`).
    """

    cost: Array
    f: Array
    g: Array
    error: Array
    converged: Array
    num_iters: Array
    x: Array
    y: Array
    a: Array
    b: Array
    epsilon: Array
    cost_fn: str = eqx.field(static=True, default="sqeuclidean")

    def plan(self) -> Float[Array, "n m"]:
        """π_ij = a_i b_j exp((f_i + g_j − C_ij)/ε)."""
        c = cost_matrix(self.x, self.y, self.cost_fn)
        log_pi = (
            _log_weights(self.a)[:, None]
            + _log_weights(self.b)[None, :]
            + (self.f[:, None] + self.g[None, :] - c) / self.epsilon
        )
        return jnp.exp(log_pi)


class DivergenceResult(eqx.Module):
    """Debiased Sinkhorn divergence S_ε(μ, ν) ≥ 0 (clamped at 0: round-off can give −1e-7).

    Attributes:
        value: S_ε. f_xy, g_xy: potentials of OT_ε(μ, ν). f_xx: potential of OT_ε(μ, μ) (s_μ).
        g_yy: potential of OT_ε(ν, ν). xy, xx, yy: the three solves. converged: all three converged.
    """

    value: Array
    f_xy: Array
    g_xy: Array
    f_xx: Array
    g_yy: Array
    xy: OTResult
    xx: OTResult
    yy: OTResult
    converged: Array


# ------------------------------------------------------------------------------------- solver
def _f_update(g, c, log_b, eps):
    return -eps * logsumexp(log_b[None, :] + (g[None, :] - c) / eps, axis=1)


def _g_update(f, c, log_a, eps):
    return -eps * logsumexp(log_a[:, None] + (f[:, None] - c) / eps, axis=0)


class _DenseOps:
    """Log-domain half-steps on a materialised cost matrix."""

    def __init__(self, c, log_a, log_b):
        self.c, self.log_a, self.log_b = c, log_a, log_b

    def f_update(self, g, e):
        return _f_update(g, self.c, self.log_b, e)

    def g_update(self, f, e):
        return _g_update(f, self.c, self.log_a, e)


# The online operator computes logits tile by tile: a tile holds at most _ONLINE_TILE columns and as
# many rows as fit in _ONLINE_BLOCK_BYTES (64 rows of 4096 float32 columns = 1 MiB, within a core's
# 2 MiB L2 cache). Measured on the 2-core CI machine, CPU time of one f-update: n = m = 4000, d = 2:
# 18 ms with 64-row tiles, 24 ms with 256 (4 MiB), 46 ms with 1024 (16 MiB: the max and exp passes
# stream from main memory); m = 10⁵: 111 ms per 1024 rows with 64-row tiles, 123–142 ms with 32 or
# 256. Fewer than ~64 rows re-read the other cloud too often at d = 64.
_ONLINE_BLOCK_BYTES = 2**20
_ONLINE_TILE = 4096


def _online_block(n: int, m: int, d: int, itemsize: int, cost: str) -> int:
    """Rows per block of the online operator, from ``_ONLINE_BLOCK_BYTES`` (l1: of |x − y| terms)."""
    per_row = min(m, _ONLINE_TILE) * itemsize if cost == "sqeuclidean" else m * d * itemsize
    return int(min(n, max(8, _ONLINE_BLOCK_BYTES // per_row)))


def _lse_tile(carry, rows, cols, bias):
    """One column tile of a streaming log-sum-exp over ⟨rows_i, cols_j⟩ + bias_j (running max, sum)."""
    top, total = carry
    logits = rows @ cols.T + bias[None, :]
    new_top = jax.lax.stop_gradient(jnp.maximum(top, jnp.max(logits, axis=1)))
    safe = jnp.where(jnp.isfinite(new_top), new_top, 0.0)  # a row whose columns so far all weigh 0
    total = total * jnp.exp(top - safe) + jnp.sum(jnp.exp(logits - safe[:, None]), axis=1)
    return new_top, total


class _OnlineOps:
    """Log-domain half-steps that never form C: row blocks against column tiles.

    For c = ½‖x − y‖² every tile is one GEMM feeding a streaming log-sum-exp, with the weights,
    the other side's potential and the squared norms folded into a bias h:

        f_i = ½‖x_i‖² − ε log Σ_j exp(⟨x_i, y_j/ε⟩ + h_j),   h_j = log b_j + (g_j − ½‖y_j‖²)/ε,

    with both clouds centred at their common mean first (c is translation invariant; the shift
    keeps ½‖x‖² + ½‖y‖² − ⟨x, y⟩ from cancelling catastrophically on data far from 0). Blocks of
    ``block`` rows (``None``: from ``_ONLINE_BLOCK_BYTES``) meet tiles of ≤ ``_ONLINE_TILE``
    columns, so memory is O((n + m)·d + block·_ONLINE_TILE) whatever n and m; every block and tile
    is ``jax.checkpoint``-ed so reverse mode stays bounded too. ``"l1"`` blocks rows only.
    """

    def __init__(self, x, y, log_a, log_b, cost, block):
        if cost == "sqeuclidean":
            centre = jax.lax.stop_gradient(0.5 * (jnp.mean(x, axis=0) + jnp.mean(y, axis=0)))
            x, y = x - centre[None, :], y - centre[None, :]
        self.x, self.y, self.log_a, self.log_b, self.cost = x, y, log_a, log_b, cost
        self.block = block

    def _blockwise(self, rows, cols, log_w, pot, e):
        # −ε log Σ_j w_j exp((pot_j − c(r, col_j))/ε) for every row r, block by block.
        (n, d), m = rows.shape, cols.shape[0]
        block = min(self.block or _online_block(n, m, d, rows.dtype.itemsize, self.cost), n)
        nb = -(-n // block)
        padded = jnp.concatenate([rows, jnp.zeros((nb * block - n, d), rows.dtype)]).reshape(nb, block, d)
        if self.cost == "sqeuclidean":
            tile = min(m, _ONLINE_TILE)
            nt = -(-m // tile)
            pad = nt * tile - m  # padded columns weigh 0 (bias −∞)
            scaled = jnp.concatenate([cols / e, jnp.zeros((pad, d), cols.dtype)]).reshape(nt, tile, d)
            bias = log_w + (pot - 0.5 * jnp.sum(cols * cols, axis=1)) / e
            bias = jnp.concatenate([bias, jnp.full((pad,), -jnp.inf, bias.dtype)]).reshape(nt, tile)
            step = jax.checkpoint(lambda carry, tb, blk: (_lse_tile(carry, blk, *tb), None))

            @jax.checkpoint
            def one(blk):
                start = (jnp.full((block,), -jnp.inf, blk.dtype), jnp.zeros((block,), blk.dtype))
                if nt == 1:
                    top, total = _lse_tile(start, blk, scaled[0], bias[0])
                else:
                    (top, total), _ = jax.lax.scan(lambda c, tb: step(c, tb, blk), start, (scaled, bias))
                lse = jnp.log(total) + jnp.where(jnp.isfinite(top), top, 0.0)
                return 0.5 * jnp.sum(blk * blk, axis=1) - e * lse

        else:

            @jax.checkpoint
            def one(blk):
                c = cost_matrix(blk, cols, self.cost)
                return -e * logsumexp(log_w[None, :] + (pot[None, :] - c) / e, axis=1)

        return jax.lax.map(one, padded).reshape(-1)[:n]

    def f_update(self, g, e):
        return self._blockwise(self.x, self.y, self.log_b, g, e)

    def g_update(self, f, e):
        return self._blockwise(self.y, self.x, self.log_a, f, e)


# Over-relaxation: ω = 2/(1 + √(1 − ρ)) from the measured per-iteration error ratio ρ of plain Sinkhorn
# (Young's SOR optimum; Lehmann et al. 2021, eq. 5). ρ is capped at 0.99 (ω ≤ 1.82) as in ott-jax's
# `Momentum`, so that an early, not yet asymptotic ratio cannot push ω to the divergent edge ω → 2.
_MAX_RATE = 0.99


def _sinkhorn(
    c,
    a,
    b,
    eps,
    f0,
    g0,
    *,
    max_iterations,
    threshold,
    check_every,
    scaling,
    eps0,
    symmetric,
    method="stabilized",
    ops=None,
    relax=False,
):
    """Sinkhorn in chunks of ``check_every`` iterations; stops when converged (per lane) or out of budget.

    ``method="log"``: every iteration is a pair of log-sum-exps (one exp per matrix entry per half
    step). ``method="stabilized"`` (default): each chunk starts with one log-domain f-update, which
    makes P_ij = b_j exp((f_i + g_j − C_ij)/ε) row-stochastic (no row underflows), then runs the
    chunk as scaling iterations u ← 1/(P v), v ← b/(Pᵀ(a⊙u)) (matrix–vector products only) and
    absorbs the scalings into the potentials, f += ε log u, g += ε log v (Schmitzer 2019). One exp
    pass per chunk instead of two per iteration; the plan and potentials are the same.

    The log-domain loop carries the next f-update f̃ = T(g) along with (f, g): the error check at
    the end of a chunk needs f̃, and the next chunk starts from it, so a check costs no extra pass.
    ``relax=True`` (the online operator, where every half-step recomputes C) over-relaxes the
    updates at the target ε, f ← (1 − ω) f + ω T(g), g ← (1 − ω) g + ω T'(f) (Thibault et al.
    2017): after two plain chunks at the target ε, ω = 2/(1 + √(1 − ρ)) from their error ratio ρ
    per iteration (Lehmann et al. 2021); if a relaxed chunk ever raises the error, ω falls back to
    1 for the rest of the solve (plain Sinkhorn converges from anywhere). The last g-update of every
    chunk is plain, so the b-marginal is exact where the error is measured: the fixed point and the
    stopping rule are those of plain Sinkhorn, and the potentials too, up to the constant
    (f + κ, g − κ) that leaves the plan unchanged and that relaxation shifts.
    """
    log_a, log_b = _log_weights(a), _log_weights(b)
    dtype = f0.dtype
    tiny = jnp.finfo(dtype).tiny
    if ops is None:  # dense cost matrix
        ops = _DenseOps(c, log_a, log_b)

    def eps_at(it):
        if scaling is None:
            return eps
        return jnp.maximum(eps, eps0 * jnp.asarray(scaling, dtype) ** it.astype(dtype))

    def stabilized_chunk(it, f, g):
        e = eps_at(it)
        logits = log_b[None, :] + (g[None, :] - c) / e
        f = -e * logsumexp(logits, axis=1)
        p = jax.nn.softmax(logits, axis=1)  # = b_j exp((f_i + g_j − C_ij)/ε), rows sum to 1

        def scale(_, uv):
            u, v = uv
            u = 1.0 / jnp.maximum(p @ v, tiny)
            v = b / jnp.maximum((a * u) @ p, tiny)  # contract rows: no transposed copy of P
            return u, v

        ones_n, ones_m = jnp.ones_like(f), jnp.ones_like(g)
        u, v = jax.lax.fori_loop(0, check_every, scale, (ones_n, ones_m))
        # Row sums of π = a_i u_i (P v)_i: the marginal error of the returned potentials, free.
        err = jnp.sum(jnp.abs(a * u * (p @ v) - a))
        return f + e * jnp.log(u), g + e * jnp.log(jnp.maximum(v, tiny)), err

    def symmetric_chunk(it, f):
        def one(i, f):  # averaged symmetric update (converges in ~10 iterations)
            return 0.5 * (f + ops.f_update(f, eps_at(it + i)))

        f = jax.lax.fori_loop(0, check_every, one, f)
        e = eps_at(it + check_every - 1)
        err = jnp.sum(jnp.abs(a * jnp.exp((f - ops.f_update(f, e)) / e) - a))
        return f, f, err

    def log_chunk(it, f, g, f_next, omega):
        def one(i, fgn):
            f, g, f_next = fgn
            e = eps_at(it + i)
            f = f + omega * (f_next - f)
            w = jnp.where(i == check_every - 1, jnp.ones_like(omega), omega)  # plain last g-update
            g = g + w * (ops.g_update(f, e) - g)
            return f, g, ops.f_update(g, e)

        f, g, f_next = jax.lax.fori_loop(0, check_every, one, (f, g, f_next))
        e = eps_at(it + check_every - 1)
        # Row sums of π are a_i exp((f_i − f̃_i)/ε) with f̃ = T(g), the f-update of g.
        return f, g, f_next, jnp.sum(jnp.abs(a * jnp.exp((f - f_next) / e) - a))

    use_stabilized = method == "stabilized" and not symmetric and scaling is None and c is not None
    one_f = jnp.ones((), dtype)

    def chunk(state):
        f, g, f_next, it, err, done, n_done, omega, stage = state
        it_new = it + check_every
        at_target = eps_at(it_new - 1) <= eps  # the ε the potentials were last updated with
        if use_stabilized:
            f_new, g_new, err_new = stabilized_chunk(it, f, g)
        elif symmetric:
            f_new, g_new, err_new = symmetric_chunk(it, f)
        else:
            f_new, g_new, f_next_new, err_new = log_chunk(it, f, g, f_next, omega)
            f_next = jnp.where(done, f_next, f_next_new)
        if relax:  # stage 0: plain, no estimate yet; 1: relaxed; 2: fell back to plain
            was_at_target = eps_at(jnp.maximum(it - 1, 0)) <= eps
            rate = jnp.minimum((err_new / err) ** (1.0 / check_every), _MAX_RATE)
            start = (stage == 0) & at_target & was_at_target & jnp.isfinite(err) & (err_new < err)
            stop = (stage == 1) & ~(err_new <= err)
            omega = jnp.where(start, 2.0 / (1.0 + jnp.sqrt(1.0 - rate)), jnp.where(stop, one_f, omega))
            stage = jnp.where(start, 1, jnp.where(stop, 2, stage))
        keep = done  # converged lanes are frozen
        f = jnp.where(keep, f, f_new)
        g = jnp.where(keep, g, g_new)
        err = jnp.where(keep, err, err_new)
        now_done = done | (at_target & ((err_new <= jnp.asarray(threshold, err_new.dtype)) | ~jnp.isfinite(err_new)))
        n_done = jnp.where(done, n_done, it_new)
        return f, g, f_next, it_new, err, now_done, n_done, omega, stage

    def cond(state):
        it, done = state[3], state[5]
        return (~done) & (it < max_iterations)

    # The log loop's first f-update; the other paths recompute f from g themselves.
    f_next0 = f0 if use_stabilized or symmetric else ops.f_update(g0, eps_at(jnp.zeros((), jnp.int32)))
    init = (
        f0,
        g0,
        f_next0,
        jnp.zeros((), jnp.int32),
        jnp.asarray(jnp.inf, dtype),
        jnp.zeros((), bool),
        jnp.zeros((), jnp.int32),
        one_f,
        jnp.zeros((), jnp.int32),
    )
    f, g, f_next, it, err, _, n_done, _, _ = jax.lax.while_loop(cond, chunk, init)
    if not (use_stabilized or symmetric):  # a zero-weight point's f is its c-transform value (f̃ = T(g))
        f = jnp.where(a > 0, f, f_next)
    converged = jnp.isfinite(err) & (err <= jnp.asarray(threshold, err.dtype))
    return f, g, err, converged, jnp.where(converged, n_done, it)


def _dual_cost(f, g, c, a, b, eps):
    """⟨a,f⟩ + ⟨b,g⟩ − ε⟨a⊗b, e^{(f⊕g−C)/ε} − 1⟩ (= OT_ε at the optimum); potentials are constants."""
    f, g = jax.lax.stop_gradient(f), jax.lax.stop_gradient(g)
    log_pi = _log_weights(a)[:, None] + _log_weights(b)[None, :] + (f[:, None] + g[None, :] - c) / eps
    mass = jnp.sum(jnp.exp(log_pi))
    af = jnp.sum(jnp.where(a > 0, a * f, 0.0))
    bg = jnp.sum(jnp.where(b > 0, b * g, 0.0))
    return af + bg - eps * (mass - jnp.sum(a) * jnp.sum(b))


# --------------------------------------------------------------------------------- validation
def _weights(name, w, n, dtype, check=True):
    if w is None:
        return jnp.full((n,), 1.0 / n, dtype)
    w = _validate.floating_array(name, w).astype(dtype)
    if w.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) to match its cloud, got {w.shape}")
    if check and _validate.is_concrete(w):
        arr = np.asarray(w, dtype=np.float64)
        if not np.all(np.isfinite(arr)) or np.any(arr < 0):
            raise ValueError(f"{name} must be finite and >= 0")
        # 1e-5·√n: the round-off of a float32 sum of n normalised weights, with a wide margin.
        if abs(arr.sum() - 1.0) > 1e-5 * max(1, np.sqrt(n)):
            raise ValueError(f"{name} must sum to 1, got {arr.sum():.6g}; normalise them first")
    return w


def _cloud(name, x, check=True):
    x = _validate.floating_array(name, x)
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (n, d), got {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one point, got shape {x.shape}")
    return _validate.finite(name, x) if check else x


def _problem(x, y, a, b, epsilon, cost):
    x, y = _cloud("x", x), _cloud("y", y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")
    if x.dtype != y.dtype:
        raise TypeError(f"x and y must have the same dtype, got {x.dtype} and {y.dtype}")
    _validate.one_of("cost", cost, COSTS)
    _validate.positive("epsilon", epsilon)
    _validate.representable("epsilon", epsilon, x.dtype)
    squared = _check_squared_span("x and y", x.dtype, x.shape[1], x, y)
    eps = jnp.asarray(epsilon, x.dtype)
    if _validate.is_concrete(eps):
        low = float(np.min(np.asarray(eps, np.float64)))
        if not low > 0 or (squared is not None and squared / low > 0.25 * float(jnp.finfo(x.dtype).max)):
            raise ValueError(
                f"epsilon = {_validate.show(epsilon)} is too small for these clouds in {jnp.dtype(x.dtype)}: "
                "cost / epsilon overflows (or epsilon rounds to 0); use a larger epsilon or float64"
            )
    a = _weights("a", a, x.shape[0], x.dtype)
    b = _weights("b", b, y.shape[0], x.dtype)
    return x, y, a, b, eps


def _check_squared_span(names: str, dtype, d: int, *arrays, scale: Any = None) -> float | None:
    """Raise ``ValueError`` naming ``names`` if squared distances between the (concrete) points overflow.

    ‖x − y‖² ≤ d·(2·max|coordinate|)² (times ``scale``², e.g. a direction's norm); past a quarter of the
    dtype's largest value the cost matrix or the projections' squares would hold inf, and Sinkhorn or
    the 1-D transport would return NaN. Tracers are skipped (the run's health checks catch them).
    Returns the bound (None for tracers).
    """
    concrete = all(_validate.is_concrete(v) for v in arrays)
    if not concrete or (scale is not None and not _validate.is_concrete(scale)):
        return None
    span = max(float(np.max(np.abs(np.asarray(v, np.float64)))) for v in arrays)
    factor = 1.0 if scale is None else float(scale)
    bound = d * (2.0 * span * factor) ** 2
    if bound > 0.25 * float(jnp.finfo(dtype).max):
        raise ValueError(
            f"{names} are too far apart for {jnp.dtype(dtype)}: squared distances reach ~{bound:.3g}, "
            "which overflows; rescale them (or use float64)"
        )
    return bound


@eqx.filter_jit
def _mean_cost(x, y, a, b, cost):
    """Σ a_i b_j C_ij, without gradient (blockwise-free: ½‖x−y‖² has a closed form in moments)."""
    x, y, a, b = (jax.lax.stop_gradient(v) for v in (x, y, a, b))
    if cost == "sqeuclidean":
        return 0.5 * (a @ jnp.sum(x * x, axis=1) + b @ jnp.sum(y * y, axis=1)) - (a @ x) @ (b @ y)
    return a @ cost_matrix(x, y, cost) @ b


def _solver_args(max_iterations, threshold, check_every, epsilon_scaling, method, block=None) -> tuple[int, int]:
    _validate.one_of("method", method, ("stabilized", "log", "online"))
    if block is not None:
        _validate.positive_int("block", block)
        if method != "online":
            raise ValueError(
                f"block sets the rows per block of method='online'; got block={block} with method={method!r}"
            )
    if check_every is None:
        check_every = 20 if method == "stabilized" else 10
    max_iterations = _validate.positive_int("max_iterations", max_iterations)
    check_every = _validate.positive_int("check_every", check_every)
    _validate.positive("threshold", threshold)
    if epsilon_scaling is not None:
        _validate.in_open_interval("epsilon_scaling", epsilon_scaling, 0.0, 1.0)
    return max_iterations, check_every


def _warn_if_unconverged(result_converged, error, epsilon, what):
    if _validate.is_concrete(result_converged) and not bool(np.all(np.asarray(result_converged))):
        warnings.warn(
            f"{what} did not converge at epsilon={float(np.max(np.asarray(epsilon))):.3g}: marginal error "
            f"{float(np.max(np.asarray(error))):.3g}. Raise max_iterations, use epsilon_scaling, or float64.",
            ConvergenceWarning,
            stacklevel=3,
        )


# ------------------------------------------------------------------------------------- public
def entropic_ot(
    x: Any,
    y: Any,
    a: Any = None,
    b: Any = None,
    *,
    epsilon: Any,
    cost: str = "sqeuclidean",
    max_iterations: int = 2000,
    threshold: Any = 1e-3,
    check_every: int | None = None,
    epsilon_scaling: float | None = None,
    init: tuple[Array, Array] | None = None,
    method: str = "stabilized",
    block: int | None = None,
    relative_epsilon: bool = False,
    warn: bool = True,
) -> OTResult:
    """Entropic OT_ε(μ, ν) = min_π ⟨C, π⟩ + ε KL(π ‖ a⊗b), with potentials and convergence report.

    Args:
        x: (n, d) support of μ.
        y: (m, d) support of ν.
        a: weights of μ (uniform if None; zeros allowed; must sum to 1).
        b: weights of ν (same rules).
        epsilon: ε > 0 (absolute, in units of the cost).
        cost: ``"sqeuclidean"`` (½‖x−y‖²) or ``"l1"``.
        max_iterations: iteration budget.
        threshold: L1 marginal error to stop at.
        check_every: iterations between error checks (the lockstep chunk; default 20 for
            ``"stabilized"``, 10 for ``"log"``). A lane may overshoot convergence by up to this many.
        epsilon_scaling: if set (e.g. 0.9), anneal ε geometrically per iteration from max C down
            to ``epsilon`` before checking convergence (needed for ε ≲ 1e-3 on unit-scale data).
        init: (f, g) to warm-start from (e.g. the previous step's potentials).
        method: ``"stabilized"`` (default: scaling iterations with absorption, one exp pass per
            chunk), ``"log"`` (log-sum-exp every iteration), or ``"online"`` (log domain without
            ever forming the n×m cost matrix, for clouds too large for a dense C: each half-step
            runs over blocks of rows against tiles of ≤ 4096 columns, one GEMM and a streaming
            log-sum-exp per tile, with safeguarded over-relaxation at the target ε; memory
            O((n + m)·d + block·4096) for ``"sqeuclidean"``, O((n + m)·d + block·max(n, m)·d)
            for ``"l1"``, also in reverse mode; ott-jax's online mode fails on JAX 0.10). Same
            fixed point: the plan and cost agree with the dense path, the potentials up to the
            constant (f + κ, g − κ) that leaves the plan unchanged. With ``epsilon_scaling`` the
            dense path uses the log updates.
        block: rows per block of ``method="online"`` (default: as many as keep one tile of
            logits within 1 MiB, inside a core's L2 cache). Under ``vmap`` each lane holds its
            own tile.
        relative_epsilon: read ``epsilon`` in units of the mean cost Σ a_i b_j C_ij (held
            constant under differentiation), like ott-jax's ``scale_cost="mean"``: the plan then
            does not change when the data are rescaled.
        warn: emit :class:`ConvergenceWarning` if a concrete (non-traced) solve did not converge.
            Under ``jit``/``vmap`` read ``.converged`` instead.

    Returns:
        :class:`OTResult`.
    """
    x, y, a, b, eps = _problem(x, y, a, b, epsilon, cost)
    if relative_epsilon:
        eps = eps * _mean_cost(x, y, a, b, cost)
    max_iterations, check_every = _solver_args(max_iterations, threshold, check_every, epsilon_scaling, method, block)
    if init is None:
        f0, g0 = jnp.zeros(x.shape[:1], x.dtype), jnp.zeros(y.shape[:1], x.dtype)
    else:
        f0, g0 = (jnp.asarray(v, x.dtype) for v in init)
        if f0.shape != x.shape[:1] or g0.shape != y.shape[:1]:
            raise ValueError(f"init must be (f, g) of shapes {x.shape[:1]} and {y.shape[:1]}")
    result = _ot_core(
        x, y, a, b, eps, f0, g0, cost, max_iterations, threshold, check_every, epsilon_scaling, method, block
    )
    if warn:
        _warn_if_unconverged(result.converged, result.error, eps, "entropic_ot")
    return result


def _online_dual_cost(f, g, ops, a, b, eps):
    """The dual cost without C: mass = Σ_i a_i exp((f_i − f̃_i)/ε), f̃ the (blockwise) f-update of g.

    Differentiating f̃ w.r.t. x and y (potentials fixed) gives Σ_j π_ij ∇c: the envelope theorem.
    """
    f, g = jax.lax.stop_gradient(f), jax.lax.stop_gradient(g)
    f_tilde = ops.f_update(g, eps)
    mass = jnp.sum(jnp.where(a > 0, a * jnp.exp((f - f_tilde) / eps), 0.0))
    af = jnp.sum(jnp.where(a > 0, a * f, 0.0))
    bg = jnp.sum(jnp.where(b > 0, b * g, 0.0))
    return af + bg - eps * (mass - jnp.sum(a) * jnp.sum(b))


@eqx.filter_jit
def _ot_core(
    x, y, a, b, eps, f0, g0, cost, max_iterations, threshold, check_every, scaling, method="stabilized", block=None
):
    if method == "online":
        ops = _OnlineOps(x, y, _log_weights(a), _log_weights(b), cost, block)
        const = _OnlineOps(
            jax.lax.stop_gradient(x),
            jax.lax.stop_gradient(y),
            _log_weights(jax.lax.stop_gradient(a)),
            _log_weights(jax.lax.stop_gradient(b)),
            cost,
            block,
        )
        eps0 = jnp.asarray(jnp.inf, x.dtype)
        if scaling is not None:  # an upper bound on max C from the data's bounding boxes
            span = jnp.max(jnp.concatenate([x, y]), axis=0) - jnp.min(jnp.concatenate([x, y]), axis=0)
            eps0 = jnp.maximum(0.5 * jnp.sum(span**2) if cost == "sqeuclidean" else jnp.sum(span), eps)
            eps0 = jax.lax.stop_gradient(eps0)
        f, g, err, conv, iters = _sinkhorn(
            None,
            jax.lax.stop_gradient(a),
            jax.lax.stop_gradient(b),
            eps,
            f0,
            g0,
            max_iterations=max_iterations,
            threshold=threshold,
            check_every=check_every,
            scaling=scaling,
            eps0=eps0,
            symmetric=False,
            method="log",
            ops=const,
            relax=True,
        )
        value = _online_dual_cost(f, g, ops, a, b, eps)
        return OTResult(value, f, g, err, conv, iters, x, y, a, b, eps, cost)
    c = cost_matrix(x, y, cost)
    eps0 = jnp.maximum(jnp.max(jax.lax.stop_gradient(c)), eps)
    f, g, err, conv, iters = _sinkhorn(
        jax.lax.stop_gradient(c),
        jax.lax.stop_gradient(a),
        jax.lax.stop_gradient(b),
        eps,
        f0,
        g0,
        max_iterations=max_iterations,
        threshold=threshold,
        check_every=check_every,
        scaling=scaling,
        eps0=eps0,
        symmetric=False,
        method=method,
    )
    value = _dual_cost(f, g, c, a, b, eps)
    return OTResult(value, f, g, err, conv, iters, x, y, a, b, eps, cost)


def _self_ot(x, a, eps, cost, max_iterations, threshold, check_every, init, method="stabilized", block=None):
    f0 = jnp.zeros(x.shape[:1], x.dtype) if init is None else jnp.asarray(init, x.dtype)
    if method == "online":
        la = _log_weights(a)
        ops = _OnlineOps(x, x, la, la, cost, block)
        xs, las = jax.lax.stop_gradient(x), _log_weights(jax.lax.stop_gradient(a))
        f, g, err, conv, iters = _sinkhorn(
            None,
            jax.lax.stop_gradient(a),
            jax.lax.stop_gradient(a),
            eps,
            f0,
            f0,
            max_iterations=max_iterations,
            threshold=threshold,
            check_every=check_every,
            scaling=None,
            eps0=eps,
            symmetric=True,
            ops=_OnlineOps(xs, xs, las, las, cost, block),
        )
        value = _online_dual_cost(f, f, ops, a, a, eps)
        return OTResult(value, f, f, err, conv, iters, x, x, a, a, eps, cost)
    c = cost_matrix(x, x, cost)
    f, g, err, conv, iters = _sinkhorn(
        jax.lax.stop_gradient(c),
        jax.lax.stop_gradient(a),
        jax.lax.stop_gradient(a),
        eps,
        f0,
        f0,
        max_iterations=max_iterations,
        threshold=threshold,
        check_every=check_every,
        scaling=None,
        eps0=eps,
        symmetric=True,
    )
    value = _dual_cost(f, f, c, a, a, eps)
    return OTResult(value, f, f, err, conv, iters, x, x, a, a, eps, cost)


def sinkhorn_divergence(
    x: Any,
    y: Any,
    a: Any = None,
    b: Any = None,
    *,
    epsilon: Any,
    cost: str = "sqeuclidean",
    max_iterations: int = 2000,
    threshold: Any = 1e-3,
    check_every: int | None = None,
    epsilon_scaling: float | None = None,
    init: tuple[Array, Array, Array, Array] | None = None,
    method: str = "stabilized",
    block: int | None = None,
    relative_epsilon: bool = False,
    warn: bool = True,
) -> DivergenceResult:
    """Debiased S_ε(μ, ν) = OT_ε(μ,ν) − ½OT_ε(μ,μ) − ½OT_ε(ν,ν) ≥ 0 (Feydy et al. 2019).

    Arguments as :func:`entropic_ot`; ``init`` is (f_xy, g_xy, f_xx, g_yy). The value is clamped
    at 0 (round-off makes S_ε(x, x) ≈ −1e-7 otherwise); gradients are those of the unclamped value.
    """
    x, y, a, b, eps = _problem(x, y, a, b, epsilon, cost)
    if relative_epsilon:
        eps = eps * _mean_cost(x, y, a, b, cost)
    max_iterations, check_every = _solver_args(max_iterations, threshold, check_every, epsilon_scaling, method, block)
    if init is None:
        init = (
            jnp.zeros(x.shape[:1], x.dtype),
            jnp.zeros(y.shape[:1], x.dtype),
            jnp.zeros(x.shape[:1], x.dtype),
            jnp.zeros(y.shape[:1], x.dtype),
        )
    init = tuple(jnp.asarray(v, x.dtype) for v in init)
    result = _divergence_core(
        x, y, a, b, eps, init, cost, max_iterations, threshold, check_every, epsilon_scaling, method, block
    )
    if warn:
        worst = jnp.maximum(result.xy.error, jnp.maximum(result.xx.error, result.yy.error))
        _warn_if_unconverged(result.converged, worst, eps, "sinkhorn_divergence")
    return result


@eqx.filter_jit
def _divergence_core(x, y, a, b, eps, init, cost, max_iterations, threshold, check_every, scaling, method, block):
    kw = dict(max_iterations=max_iterations, threshold=threshold, check_every=check_every, method=method, block=block)
    xy = _ot_core(x, y, a, b, eps, init[0], init[1], cost, scaling=scaling, **kw)
    xx = _self_ot(x, a, eps, cost, init=init[2], **kw)
    yy = _self_ot(y, b, eps, cost, init=init[3], **kw)
    raw = xy.cost - 0.5 * xx.cost - 0.5 * yy.cost
    value = raw + jax.lax.stop_gradient(jnp.maximum(raw, 0.0) - raw)
    conv = xy.converged & xx.converged & yy.converged
    return DivergenceResult(value, xy.f, xy.g, xx.f, yy.f, xy, xx, yy, conv)


# ------------------------------------------------------------------------ one against K clouds
class BatchedDivergenceResult(eqx.Module):
    """S_ε(μ, ν_k) for one cloud μ against K clouds ν_k (see :func:`sinkhorn_divergences`).

    Every array field but ``f_xx`` and ``num_iters`` has a leading K axis (``xy`` and ``yy`` are
    :class:`OTResult` s whose leaves carry it; index them with ``jax.tree_util.tree_map``).

    Attributes:
        value: (K,) S_ε(μ, ν_k), clamped at 0; gradients are those of the unclamped :attr:`raw`.
        f_xy: (K, n) μ-side potentials of OT_ε(μ, ν_k). g_xy: (K, m) ν-side potentials.
        f_xx: (n,) the potential s_μ of OT_ε(μ, μ). g_yy: (K, m) potentials of OT_ε(ν_k, ν_k).
        xy: the K cross solves. xx: the self solve of μ. yy: the K self solves of the ν_k.
        converged: (K,) the three solves behind each S_ε(μ, ν_k) converged.
        num_iters: () the most iterations any solve of the batch needed (what the lockstep cost).
    """

    value: Array
    f_xy: Array
    g_xy: Array
    f_xx: Array
    g_yy: Array
    xy: OTResult
    xx: OTResult
    yy: OTResult
    converged: Array
    num_iters: Array

    @property
    def raw(self) -> Float[Array, " K"]:
        """The unclamped OT_ε(μ, ν_k) − ½OT_ε(μ, μ) − ½OT_ε(ν_k, ν_k) (round-off can make it −1e-7)."""
        return self.xy.cost - 0.5 * self.xx.cost - 0.5 * self.yy.cost

    @property
    def potentials(self) -> tuple[Array, Array, Array, Array]:
        """(f_xy, g_xy, f_xx, g_yy): pass as ``init=`` to warm-start the next call."""
        return self.f_xy, self.g_xy, self.f_xx, self.g_yy

    def maps(self) -> Float[Array, "K n d"]:
        """T_{μ→ν_k}(x_i), the K entropic barycentric projections at the support of μ."""
        return jax.vmap(barycentric_map)(self.xy)

    def self_map(self) -> Float[Array, "n d"]:
        """T_{μ→μ}(x_i), the barycentric projection of the self problem (the debiasing map)."""
        return barycentric_map(self.xx)


def check_weights(weights: Any, n: int, *, name: str = "a", dtype: Any = None) -> Array:
    """The weights every function of this module accepts: uniform if None, else (n,), ≥ 0, summing to 1.

    Concrete values are checked (a ``ValueError`` naming ``name``); traced values only for shape.
    Zero weights are allowed (padding: a zero-weight point is exactly absent).

    Example:
        >>> check_weights(None, 4).tolist()
        [0.25, 0.25, 0.25, 0.25]
    """
    n = _validate.positive_int("n", n)
    return _weights(name, weights, n, dtype or jnp.result_type(float))


def self_transport(
    x: Any,
    a: Any = None,
    *,
    epsilon: Any,
    cost: str = "sqeuclidean",
    max_iterations: int = 2000,
    threshold: Any = 1e-3,
    check_every: int | None = None,
    init: Any = None,
    method: str = "stabilized",
    block: int | None = None,
    warn: bool = True,
    check: bool = True,
) -> OTResult:
    """The symmetric problem OT_ε(μ, μ), solved once so that several divergences can share it.

    The debiasing term of S_ε: its optimal potentials are equal, f = g = s_μ, so the solver runs
    the averaged symmetric update s ← ½(s + s̃), s̃_i = −ε log Σ_j a_j exp((s_j − C_ij)/ε), which
    converges in a few iterations. Its first variation in μ is s_μ, and its barycentric map
    T_{μ→μ} is the self term of the Sinkhorn-divergence gradient (METHODS.md §2b).

    Args:
        x: (n, d) support of μ.
        a: its weights (uniform if None).
        epsilon: ε > 0, as :func:`entropic_ot`.
        cost: as :func:`entropic_ot`.
        max_iterations: as :func:`entropic_ot`.
        threshold: as :func:`entropic_ot`; may be an array (a flow's leaf: no recompile).
        check_every: as :func:`entropic_ot`.
        init: s to warm-start from, shape (n,).
        method: as :func:`entropic_ot`.
        block: as :func:`entropic_ot`.
        warn: as :func:`entropic_ot`.
        check: validate values (finite points, weights summing to 1); ``False`` keeps only the
            shape checks — for calls inside a flow's step, where a non-finite state is data that
            ``run`` reports, not an error raised from the device.

    Returns:
        :class:`OTResult` with ``f = g = s_μ`` and ``y = x``; pass it as ``self_x=`` (or, vmapped
        over K clouds, as ``self_ys=``) to :func:`sinkhorn_divergences`.
    """
    x = _cloud("x", x, check)
    _validate.one_of("cost", cost, COSTS)
    _validate.positive("epsilon", epsilon)
    a = _weights("a", a, x.shape[0], x.dtype, check)
    eps = jnp.asarray(epsilon, x.dtype)
    max_iterations, check_every = _solver_args(max_iterations, threshold, check_every, None, method, block)
    if init is not None:
        init = jnp.asarray(init, x.dtype)
        if init.shape != x.shape[:1]:
            raise ValueError(f"init must have shape {x.shape[:1]} (one potential per point), got {init.shape}")
    result = _self_core(x, a, eps, init, cost, max_iterations, threshold, check_every, method, block)
    if warn:
        _warn_if_unconverged(result.converged, result.error, eps, "self_transport")
    return result


@eqx.filter_jit
def _self_core(x, a, eps, init, cost, max_iterations, threshold, check_every, method, block):
    return _self_ot(x, a, eps, cost, max_iterations, threshold, check_every, init, method=method, block=block)


def _batch_clouds(ys, bs, d, dtype, check):
    ys = _validate.floating_array("ys", ys)
    if ys.ndim != 3 or ys.shape[-1] != d or min(ys.shape[:2]) == 0:
        raise ValueError(f"ys must have shape (K, m, {d}) with K, m >= 1 (K clouds of m points), got {ys.shape}")
    if ys.dtype != dtype:
        raise TypeError(f"x and ys must have the same dtype, got {dtype} and {ys.dtype}")
    ys = _validate.finite("ys", ys) if check else ys
    k, m = ys.shape[:2]
    if bs is None:
        return ys, jnp.full((k, m), 1.0 / m, dtype)
    bs = _validate.floating_array("bs", bs).astype(dtype)
    if bs.shape != (k, m):
        raise ValueError(f"bs must have shape ({k}, {m}) to match ys, got {bs.shape}")
    for i, b in enumerate(bs if check and _validate.is_concrete(bs) else ()):
        _weights(f"bs[{i}]", b, m, dtype)
    return ys, bs


def _check_self(name, result, shape):
    if result is None:
        return None
    if not isinstance(result, OTResult):
        raise TypeError(f"{name} must be an OTResult from ot.self_transport, got {type(result).__name__}")
    if result.f.shape != shape:
        raise ValueError(f"{name} must hold potentials of shape {shape}, got {result.f.shape}")
    return result


def sinkhorn_divergences(
    x: Any,
    ys: Any,
    a: Any = None,
    bs: Any = None,
    *,
    epsilon: Any,
    cost: str = "sqeuclidean",
    max_iterations: int = 2000,
    threshold: Any = 1e-3,
    check_every: int | None = None,
    epsilon_scaling: float | None = None,
    init: Sequence[Any] | None = None,
    self_x: OTResult | None = None,
    self_ys: OTResult | None = None,
    method: str = "stabilized",
    block: int | None = None,
    warn: bool = True,
    check: bool = True,
) -> BatchedDivergenceResult:
    """Debiased S_ε(μ, ν_k) for one cloud μ against K clouds ν_k, in one batched lockstep solve.

        S_ε(μ, ν_k) = OT_ε(μ, ν_k) − ½ OT_ε(μ, μ) − ½ OT_ε(ν_k, ν_k)     (Feydy et al. 2019)

    The K cross problems run as K lanes of one ``vmap``-ed solver (each lane stops on its own error
    and is frozen once converged; ``num_iters`` per lane in ``xy``). OT_ε(μ, μ) is solved once for
    the K divergences, or taken from ``self_x``; the K terms OT_ε(ν_k, ν_k) are solved (vmapped), or
    taken from ``self_ys`` when the ν_k are fixed (a memory bank, a dataset): then only the K cross
    problems and at most one self problem are solved. The same numbers as K calls of
    :func:`sinkhorn_divergence` (tested). Safe under ``jax.vmap`` (many queries) and ``jit``;
    differentiable like :func:`sinkhorn_divergence` (envelope theorem: ∂S_k/∂x_i = a_i (T_{μ→μ} −
    T_{μ→ν_k})(x_i), ∂S_k/∂a_i = f_k(x_i) − s_μ(x_i) + const).

    Args:
        x: (n, d) support of μ.
        ys: (K, m, d) supports of the ν_k (pad ragged clouds with zero-weight points).
        a: weights of μ (uniform if None).
        bs: (K, m) weights of the ν_k (uniform if None; each row ≥ 0, summing to 1).
        epsilon: ε > 0, as :func:`entropic_ot`.
        cost: as :func:`entropic_ot`.
        max_iterations: as :func:`entropic_ot`.
        threshold: L1 marginal error to stop at; may be an array (a flow's leaf: no recompile).
        check_every: as :func:`entropic_ot`.
        epsilon_scaling: as :func:`entropic_ot`; anneals the cross problems only.
        init: warm start (f_xy (K, n), g_xy (K, m), f_xx (n,), g_yy (K, m)), e.g. the previous
            result's :attr:`~BatchedDivergenceResult.potentials`; an entry may be None (zeros).
        self_x: a precomputed :func:`self_transport` of (x, a) at this ε (not re-solved, not
            re-checked beyond its shape).
        self_ys: precomputed self transports of the ν_k with a leading K axis, e.g.
            ``jax.vmap(lambda y, b: ot.self_transport(y, b, epsilon=ε))(ys, bs)``.
        method: as :func:`entropic_ot`.
        block: as :func:`entropic_ot`.
        warn: as :func:`entropic_ot`.
        check: as :func:`self_transport` (``False`` inside a flow's step).

    Returns:
        :class:`BatchedDivergenceResult`: values (K,), potentials, the three solves, maps.

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[0.0, 0.0], [1.0, 0.0]])
        >>> ys = jnp.stack([x, x + 3.0])
        >>> res = sinkhorn_divergences(x, ys, epsilon=0.1)
        >>> bool(res.value[0] < 1e-6), bool(res.value[1] > 1.0)
        (True, True)
    """
    x = _cloud("x", x, check)
    _validate.one_of("cost", cost, COSTS)
    _validate.positive("epsilon", epsilon)
    n, d = x.shape
    a = _weights("a", a, n, x.dtype, check)
    ys, bs = _batch_clouds(ys, bs, d, x.dtype, check)
    k, m = ys.shape[:2]
    eps = jnp.asarray(epsilon, x.dtype)
    max_iterations, check_every = _solver_args(max_iterations, threshold, check_every, epsilon_scaling, method, block)
    shapes = ((k, n), (k, m), (n,), (k, m))
    if init is None:
        init = (None,) * 4
    if len(init) != 4:
        raise ValueError("init must be (f_xy, g_xy, f_xx, g_yy) (e.g. a previous result's .potentials)")
    init = tuple(
        jnp.zeros(s, x.dtype) if v is None else jnp.asarray(v, x.dtype) for v, s in zip(init, shapes, strict=True)
    )
    for v, s, name in zip(init, shapes, ("f_xy", "g_xy", "f_xx", "g_yy"), strict=True):
        if v.shape != s:
            raise ValueError(f"init's {name} must have shape {s}, got {v.shape}")
    self_x = _check_self("self_x", self_x, (n,))
    self_ys = _check_self("self_ys", self_ys, (k, m))
    result = _divergences_core(
        x,
        ys,
        a,
        bs,
        eps,
        init,
        self_x,
        self_ys,
        cost,
        max_iterations,
        threshold,
        check_every,
        epsilon_scaling,
        method,
        block,
    )
    if warn:
        worst = jnp.maximum(jnp.max(result.xy.error), jnp.maximum(result.xx.error, jnp.max(result.yy.error)))
        _warn_if_unconverged(result.converged, worst, eps, "sinkhorn_divergences")
    return result


@eqx.filter_jit
def _divergences_core(
    x, ys, a, bs, eps, init, self_x, self_ys, cost, max_iterations, threshold, check_every, scaling, method, block
):
    f0, g0, s0, gyy0 = init

    def cross(y, b, f, g):
        return _ot_core(x, y, a, b, eps, f, g, cost, max_iterations, threshold, check_every, scaling, method, block)

    def own(y, b, g):
        return _self_ot(y, b, eps, cost, max_iterations, threshold, check_every, g, method=method, block=block)

    xy = jax.vmap(cross)(ys, bs, f0, g0)
    yy = jax.vmap(own)(ys, bs, gyy0) if self_ys is None else self_ys
    xx = own(x, a, s0) if self_x is None else self_x
    raw = xy.cost - 0.5 * xx.cost - 0.5 * yy.cost
    value = raw + jax.lax.stop_gradient(jnp.maximum(raw, 0.0) - raw)
    converged = xy.converged & yy.converged & xx.converged
    iters = jnp.maximum(jnp.max(xy.num_iters), jnp.maximum(xx.num_iters, jnp.max(yy.num_iters)))
    return BatchedDivergenceResult(value, xy.f, xy.g, xx.f, yy.f, xy, xx, yy, converged, iters)


def barycentric_map(result: OTResult, points: Any = None) -> Array:
    """Entropic barycentric projection T_{μ→ν}(z) = Σ_j b_j e^{(g_j − c(z, y_j))/ε} y_j / Σ_j (same).

    Evaluated at any ``points`` (default: the support x of μ, where T(x_i) = Σ_j π_ij y_j / a_i).
    """
    z = result.x if points is None else _cloud("points", points)
    c = cost_matrix(z, result.y, result.cost_fn)
    logits = _log_weights(result.b)[None, :] + (result.g[None, :] - c) / result.epsilon
    return jax.nn.softmax(logits, axis=1) @ result.y


# ------------------------------------------------------------------------------- closed forms
def gaussian_entropic_ot(mean_a: Any, cov_a: Any, mean_b: Any, cov_b: Any, *, epsilon: Any) -> Float[Array, ""]:
    """Closed-form entropic OT_ε(N(m_a, A), N(m_b, B)) for c = ½‖x−y‖² and ε KL(π ‖ P⊗Q).

    Janati et al. (2020, Thm 1) state it for ‖x−y‖² with 2σ²·KL; in our convention σ² = ε and
    everything is halved:

        OT_ε = ½ [‖m_a − m_b‖² + tr A + tr B − tr D + dε(1 − log 2ε) + ε log det(D + εI)],
        D = (4 A^{1/2} B A^{1/2} + ε² I)^{1/2}.

    tr D and log det(D + εI) are spectral functions of 4 LᵀBL + ε²I (A = LLᵀ, Cholesky; LᵀBL is
    similar to A^{1/2}BA^{1/2}), computed from its eigenvalues only, so gradients stay finite at
    repeated eigenvalues. The oracle for the LDP denoising identity (METHODS.md §5e) and for
    sample-based solvers; differentiable in all four moments. ``cov_a`` must be positive definite,
    ``cov_b`` positive semi-definite.

    Example:
        >>> import jax.numpy as jnp
        >>> a = gaussian_entropic_ot(jnp.zeros(1), jnp.eye(1), jnp.zeros(1), jnp.eye(1), epsilon=1e-6)
        >>> bool(abs(a) < 1e-4)  # → W₂²/2 = 0 as ε → 0
        True
    """
    mean_a = _validate.floating_array("mean_a", mean_a, min_ndim=1)
    dtype = mean_a.dtype
    mean_b, cov_a, cov_b = (
        _validate.floating_array(n, v).astype(dtype)
        for n, v in (("mean_b", mean_b), ("cov_a", cov_a), ("cov_b", cov_b))
    )
    d = mean_a.shape[-1]
    if mean_a.shape != (d,) or mean_b.shape != (d,):
        raise ValueError(f"mean_a and mean_b must both have shape (d,), got {mean_a.shape} and {mean_b.shape}")
    for name, c in (("cov_a", cov_a), ("cov_b", cov_b)):
        if c.shape != (d, d):
            raise ValueError(f"{name} must have shape ({d}, {d}), got {c.shape}")
    _validate.positive("epsilon", epsilon)
    eps = jnp.asarray(epsilon, dtype)
    chol = jnp.linalg.cholesky(0.5 * (cov_a + cov_a.T))
    inner = chol.T @ cov_b @ chol
    lam = jnp.linalg.eigvalsh(0.5 * (inner + inner.T))  # eigenvalues of A^{1/2} B A^{1/2}
    root = jnp.sqrt(4.0 * jnp.maximum(lam, 0.0) + eps**2)  # eigenvalues of D (≥ ε > 0)
    total = (
        jnp.sum((mean_a - mean_b) ** 2)
        + jnp.trace(cov_a)
        + jnp.trace(cov_b)
        - jnp.sum(root)
        + d * eps * (1.0 - jnp.log(2.0 * eps))
        + eps * jnp.sum(jnp.log(root + eps))
    )
    return 0.5 * total


# ------------------------------------------------------------------------------------- sliced
def random_directions(key: PRNGKeyArray, d: int, k: int, dtype=None) -> Float[Array, "k d"]:
    """K i.i.d. uniform directions on the unit sphere S^{d−1}, shape (k, d)."""
    d = _validate.positive_int("d", d)
    k = _validate.positive_int("k", k)
    z = jr.normal(key, (k, d), dtype=dtype or jnp.result_type(float))
    return z / jnp.linalg.norm(z, axis=1, keepdims=True)


def _w2_1d(u, v, a, b):
    """W₂² between weighted 1-D samples, by integrating |F_u⁻¹ − F_v⁻¹|² over merged quantile levels."""
    iu, iv = jnp.argsort(u), jnp.argsort(v)
    us, vs = u[iu], v[iv]
    cu, cv = jnp.cumsum(a[iu]), jnp.cumsum(b[iv])
    levels = jnp.sort(jnp.concatenate([cu, cv]))
    dl = jnp.diff(jnp.concatenate([jnp.zeros((1,), levels.dtype), levels]))
    mid = levels - 0.5 * dl
    qu = us[jnp.minimum(jnp.searchsorted(cu, mid, side="left"), us.shape[0] - 1)]
    qv = vs[jnp.minimum(jnp.searchsorted(cv, mid, side="left"), vs.shape[0] - 1)]
    return jnp.sum(dl * (qu - qv) ** 2)


def sliced_wasserstein(x: Any, y: Any, *, directions: Any, a: Any = None, b: Any = None) -> Float[Array, ""]:
    """Mean over directions θ of W₂²(θ#μ, θ#ν) (squared sliced Wasserstein; POT's value squared).

    Projections are laid out (k, n) so sorting runs along the last axis (faster on XLA:CPU).
    """
    x, y = _cloud("x", x), _cloud("y", y)
    theta = _validate.finite("directions", _validate.floating_array("directions", directions))
    _validate.representable("directions", theta, x.dtype)
    theta = theta.astype(x.dtype)
    if theta.ndim != 2 or theta.shape[1] != x.shape[1] or y.shape[1] != x.shape[1]:
        raise ValueError(f"directions must have shape (k, {x.shape[1]}) matching x and y, got {theta.shape}")
    if _validate.is_concrete(theta):
        norm = float(np.max(np.linalg.norm(np.asarray(theta, np.float64), axis=1)))
        _check_squared_span("x, y and directions", x.dtype, x.shape[1], x, y, scale=norm)
    a = _weights("a", a, x.shape[0], x.dtype)
    b = _weights("b", b, y.shape[0], x.dtype)
    px, py = theta @ x.T, theta @ y.T  # (k, n), (k, m)
    return jnp.mean(jax.vmap(_w2_1d, in_axes=(0, 0, None, None))(px, py, a, b))


def quantile_map(u: Any, v: Any, *, num_quantiles: int | None = None) -> Array:
    """1-D transport of samples u onto the law of samples v: T(u_i) = Q_v(F_u(u_i)).

    Exact (sort-based, mid-rank levels (r + ½)/n) by default. With ``num_quantiles=P`` both the CDF
    of u and the quantile function of v are tabulated on P equally spaced percentiles and linearly
    interpolated, as in the DP sliced-Wasserstein flow (METHODS.md §4b). Works along the last axis,
    so (k, n) projections map in one call.
    """
    u = _validate.finite("u", _validate.floating_array("u", u, min_ndim=1))
    v = _validate.finite("v", _validate.floating_array("v", v, min_ndim=1)).astype(u.dtype)
    if u.shape[-1] == 0 or v.shape[-1] == 0:
        raise ValueError(f"u and v need at least one sample along the last axis, got {u.shape} and {v.shape}")
    if u.shape[:-1] != v.shape[:-1]:
        raise ValueError(f"u and v must share leading axes, got {u.shape} and {v.shape}")
    if num_quantiles is None:
        n, m = u.shape[-1], v.shape[-1]
        ranks = jnp.argsort(jnp.argsort(u, axis=-1), axis=-1).astype(u.dtype)
        levels = (ranks + 0.5) / n
        vs = jnp.sort(v, axis=-1)
        grid = (jnp.arange(m, dtype=u.dtype) + 0.5) / m
        return jax.vmap(jnp.interp)(
            levels.reshape(-1, n), jnp.broadcast_to(grid, (levels.size // n, m)), vs.reshape(-1, m)
        ).reshape(u.shape)
    p = _validate.positive_int("num_quantiles", num_quantiles)
    perc = jnp.linspace(0.0, 1.0, p, dtype=u.dtype)
    qu = jnp.quantile(u, perc, axis=-1)  # (p, ...)
    qv = jnp.quantile(v, perc, axis=-1)
    flat_u = u.reshape(-1, u.shape[-1])
    qu2 = jnp.moveaxis(qu, 0, -1).reshape(-1, p)
    qv2 = jnp.moveaxis(qv, 0, -1).reshape(-1, p)
    cdf = jax.vmap(lambda z, q: jnp.interp(z, q, perc))(flat_u, qu2)
    return jax.vmap(lambda c, q: jnp.interp(c, perc, q))(cdf, qv2).reshape(u.shape)
