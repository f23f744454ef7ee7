"""Semi-discrete OT generator with a smoothed Brenier potential (AE-OT and its convex smoothing).

An autoencoder maps data to latent codes y₁..yₙ ∈ ℝᵈ with masses ν. Semi-discrete OT from a simple
continuous source μ (the uniform cube [0, 1]ᵈ or N(0, I)) to ν = Σ νᵢ δ_{yᵢ} has the Brenier potential

    u_h(x) = maxᵢ ⟨x, yᵢ⟩ + hᵢ,        power cells Wᵢ(h) = {x : ⟨x, yᵢ⟩ + hᵢ ≥ ⟨x, yⱼ⟩ + hⱼ ∀j},

with the heights h minimising the convex E(h) = ∫u_h dμ − Σνᵢhᵢ, ∇E(h)ᵢ = μ(Wᵢ(h)) − νᵢ. Its map
∇u_h sends each cell to one code: it only reproduces codes. New codes come either from AE-OT's pair
interpolation across cell boundaries that are not singular (An et al. 2020), or from the smoothed
potential (the convex smoothing of Mustafi 2021, reconstructed as log-sum-exp with temperature τ):

    u_{h,τ}(x) = τ log Σᵢ exp((⟨x, yᵢ⟩ + hᵢ)/τ),    ∇u_{h,τ}(x) = Σᵢ sᵢ(x) yᵢ,  s = softmax((⟨x,y⟩+h)/τ),
    0 ≤ u_{h,τ} − u_h ≤ τ log n,    ‖∇u_{h,τ}(x) − y_{i*(x)}‖ ≤ diam(y)·(n−1)·e^{−g(x)/τ},

g(x) the gap between the two largest affine pieces (:func:`score_gap`). ∇²u_{h,τ} = Cov_s(y)/τ ⪰ 0,
so the smoothed map is monotone (itself a Brenier map). Which smoothing the paper uses is not known
(METHODS.md §6b); τ is a parameter and ``tau → 0`` recovers the hard map.

Why the solver is written here rather than taken from ott-jax: ``ott.solvers.linear.semidiscrete``
evaluates the full (batch × n) cost matrix at once (no chunking: 2·10⁵ × 10⁴ floats is 8 GB), draws
i.i.d. Monte Carlo points only (no quasi-Monte Carlo), has no batch-size schedule and stops on a
χ² marginal error rather than the max cell-mass error AE-OT uses. :class:`SemiDiscreteOT` does the
§6c algorithm (Adam on h, mean-zero, stalled-progress batch doubling) with randomised Sobol points
and a loop over source chunks, so memory stays at ``chunk_elements`` floats whatever n is. It runs
on the library's one loop, :func:`dpflows.iterate` (one compiled program for the whole solve,
early exit at ``tol``, progress, checkpoints); :func:`sweep_solve` vmaps it over a grid of solvers.
ott-jax's and POT's solvers are the cross-checks in the tests and the peers in ``bench_aeot.py``.
:func:`train_autoencoder` runs on :func:`dpflows.fit`; the autoencoder itself lives in
:mod:`dpflows.nn` (re-exported here as :class:`MLPAutoencoder`).

References:
    An, Guo, Lei, Luo, Yau & Gu (2020), "AE-OT: A new generative model based on extended semi-discrete
    optimal transport", ICLR. Mustafi (2021), "Convex Smoothed Autoencoder-Optimal Transport model",
    arXiv:2101.05679 (abstract; the smoothing here is reconstructed). Genevay, Cuturi, Peyré & Bach
    (2016), "Stochastic optimization for large-scale optimal transport" (the smoothed dual).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

from . import _validate
from ._typing import Array, Bool, Float, Int, PRNGKeyArray
from .flow import fit, iterate
from .nn import MLPAutoencoder
from .ot import ConvergenceWarning

__all__ = [
    "MODES",
    "SAMPLINGS",
    "SOURCES",
    "AEOTGenerator",
    "MLPAutoencoder",
    "SemiDiscreteOT",
    "SemiDiscreteResult",
    "brenier_map",
    "brenier_potential",
    "pair_angles",
    "sample_source",
    "score_gap",
    "sweep_solve",
    "smoothed_brenier_map",
    "smoothed_brenier_potential",
    "train_autoencoder",
]

SOURCES = ("uniform", "gaussian")
SAMPLINGS = ("sobol", "random")
MODES = ("smoothed", "pairs")


# ------------------------------------------------------------------------------ potentials and maps
def _check_codes(codes: Any, heights: Any) -> tuple[Array, Array]:
    y = _validate.floating_array("codes", codes)
    if y.ndim != 2 or y.shape[0] == 0 or y.shape[1] == 0:
        raise ValueError(f"codes must have shape (n, d) with n, d >= 1, got {y.shape}")
    h = _validate.floating_array("heights", heights).astype(y.dtype)
    if h.shape != (y.shape[0],):
        raise ValueError(f"heights must have shape ({y.shape[0]},) to match codes, got {h.shape}")
    return y, h


def _check_points(x: Any, d: int, dtype: Any) -> Array:
    x = _validate.floating_array("x", x).astype(dtype)
    if x.ndim == 0 or x.shape[-1] != d:
        raise ValueError(f"x must have shape (..., {d}) to match the codes' dimension, got {x.shape}")
    return x


def _scores(x: Array, codes: Array, heights: Array) -> Array:
    """⟨x, yᵢ⟩ + hᵢ for x of shape (..., d): shape (..., n)."""
    s = jnp.einsum("...d,nd->...n", x, codes)
    return s + jnp.broadcast_to(heights, s.shape)


def brenier_potential(x: Any, codes: Any, heights: Any) -> Array:
    """u_h(x) = maxᵢ ⟨x, yᵢ⟩ + hᵢ, for x of shape (..., d); returns shape (...).

    Example:
        >>> import jax.numpy as jnp
        >>> float(brenier_potential(jnp.array([0.5]), jnp.array([[0.0], [1.0]]), jnp.array([0.0, -0.25])))
        0.25
    """
    y, h = _check_codes(codes, heights)
    return jnp.max(_scores(_check_points(x, y.shape[1], y.dtype), y, h), axis=-1)


def brenier_map(x: Any, codes: Any, heights: Any) -> Array:
    """∇u_h(x) = y_{i*(x)} with i*(x) = argmaxᵢ ⟨x, yᵢ⟩ + hᵢ (the OT map: one code per power cell)."""
    y, h = _check_codes(codes, heights)
    return y[jnp.argmax(_scores(_check_points(x, y.shape[1], y.dtype), y, h), axis=-1)]


def _check_tau(tau: Any) -> None:
    _validate.positive("tau", tau)


def smoothed_brenier_potential(x: Any, codes: Any, heights: Any, tau: Any) -> Array:
    """u_{h,τ}(x) = τ log Σᵢ exp((⟨x, yᵢ⟩ + hᵢ)/τ), for x of shape (..., d); returns shape (...).

    Convex, smooth, and 0 ≤ u_{h,τ} − u_h ≤ τ log n. ``jax.grad`` of it is :func:`smoothed_brenier_map`.

    Example:
        >>> import jax.numpy as jnp
        >>> y, h = jnp.array([[0.0], [1.0]]), jnp.zeros(2)
        >>> u = smoothed_brenier_potential(jnp.array([0.0]), y, h, 0.1)  # two equal pieces: τ log 2
        >>> round(float(u), 5)
        0.06931
    """
    _check_tau(tau)
    y, h = _check_codes(codes, heights)
    x = _check_points(x, y.shape[1], y.dtype)
    tau = jnp.asarray(tau, y.dtype)
    return tau * jax.nn.logsumexp(_scores(x, y, h) / tau, axis=-1)


def smoothed_brenier_map(x: Any, codes: Any, heights: Any, tau: Any) -> Array:
    """∇u_{h,τ}(x) = Σᵢ sᵢ(x) yᵢ with s = softmax((⟨x, y⟩ + h)/τ): a convex combination of codes.

    For x of shape (..., d); returns shape (..., d). The softmax subtracts the max (stable at tiny τ).
    """
    _check_tau(tau)
    y, h = _check_codes(codes, heights)
    x = _check_points(x, y.shape[1], y.dtype)
    s = jax.nn.softmax(_scores(x, y, h) / jnp.asarray(tau, y.dtype), axis=-1)
    return s @ y


def score_gap(x: Any, codes: Any, heights: Any) -> Array:
    """g(x) = (largest − second-largest) of ⟨x, yᵢ⟩ + hᵢ: the distance to a cell boundary in score units.

    The smoothed map is within diam(y)·(n−1)·e^{−g/τ} of the hard map, so a τ well below the typical
    gap keeps most of the source on codes and a τ near it interpolates; ``jnp.median(score_gap(...))``
    over source samples is the natural unit for τ. Needs n ≥ 2.
    """
    y, h = _check_codes(codes, heights)
    if y.shape[0] < 2:
        raise ValueError("score_gap needs at least 2 codes")
    top2 = jax.lax.top_k(_scores(_check_points(x, y.shape[1], y.dtype), y, h), 2)[0]
    return top2[..., 0] - top2[..., 1]


def pair_angles(codes: Any, first: Any, second: Any) -> Array:
    """θ = arccos⟨nᵢ, nⱼ⟩ between the lifted envelope's supporting planes, nᵢ = (yᵢ, −1)/‖(yᵢ, −1)‖.

    AE-OT's singularity test: a large angle between the planes of two neighbouring cells means their
    codes sit in different modes, and interpolating between them would create a mode mixture.
    """
    y = _validate.floating_array("codes", codes)
    lifted = jnp.concatenate([y, -jnp.ones((y.shape[0], 1), y.dtype)], axis=1)
    normals = lifted / jnp.linalg.norm(lifted, axis=1, keepdims=True)
    cos = jnp.sum(normals[first] * normals[second], axis=-1)
    return jnp.arccos(jnp.clip(cos, -1.0, 1.0))


# ------------------------------------------------------------------------------------- the source
def sample_source(
    key: PRNGKeyArray, num: int, d: int, *, source: str = "uniform", sampling: str = "random", dtype: Any = None
) -> Float[Array, "num d"]:
    """Draw ``num`` points of the source μ: the uniform cube [0, 1]ᵈ or N(0, I_d).

    ``sampling="sobol"`` gives a randomised quasi-Monte Carlo set: a scrambled Sobol sequence (scipy,
    seeded from ``key``) shifted by one uniform vector modulo 1 (Cranley–Patterson), mapped through
    the normal quantile for the Gaussian source. Each point is then uniform (so estimates are
    unbiased) while the set keeps the low discrepancy; ``num`` is rounded up to a power of two.
    Host-side (scipy): not for use under ``jit``; the solver draws the Sobol table once per batch size.
    """
    _validate.one_of("source", source, SOURCES)
    _validate.one_of("sampling", sampling, SAMPLINGS)
    num = _validate.positive_int("num", num)
    d = _validate.positive_int("d", d)
    dtype = dtype or jnp.result_type(float)
    if sampling == "random":
        return _map_source(jr.uniform(key, (num, d), dtype=dtype), source, num)
    k_table, k_shift = jr.split(key)
    table = _sobol_table(k_table, _next_pow2(num), d, dtype)
    return _shifted(table, k_shift, source)


def _next_pow2(num: int) -> int:
    return 1 << max(0, math.ceil(math.log2(num)))


def _sobol_table(key: PRNGKeyArray, num: int, d: int, dtype: Any) -> Array:
    from scipy.stats import qmc

    seed = int(jr.randint(key, (), 0, 2**31 - 1))
    pts = qmc.Sobol(d, scramble=True, rng=np.random.default_rng(seed)).random_base2(int(math.log2(num)))
    return jnp.asarray(pts, dtype)


def _map_source(u: Array, source: str, num: int) -> Array:
    if source == "uniform":
        return u
    # Keep the quantile finite: points within half a cell of 0 or 1 are nudged inwards.
    tiny = 0.5 / num
    return jax.scipy.special.ndtri(jnp.clip(u, tiny, 1.0 - tiny))


def _shifted(table: Array, key: PRNGKeyArray, source: str) -> Array:
    u = jnp.mod(table + jr.uniform(key, (table.shape[1],), dtype=table.dtype)[None, :], 1.0)
    return _map_source(u, source, table.shape[0])


# ------------------------------------------------------------------------------------- the solver
def _accumulate(xc: Array, codes: Array, heights: Array, tau: Array, smoothed: bool, acc: tuple[Array, Array]):
    """Add one chunk's cell counts 1[i*(x) = i] (or sᵢ(x)) and Σ u(x) to the running sums ``acc``."""
    counts, u_sum = acc
    s = xc @ codes.T + heights[None, :]
    if smoothed:
        z = s / tau
        return counts + jnp.sum(jax.nn.softmax(z, axis=-1), axis=0), u_sum + tau * jnp.sum(jax.nn.logsumexp(z, axis=-1))
    idx = jnp.argmax(s, axis=-1)
    counts = counts + jax.ops.segment_sum(jnp.ones(idx.shape, codes.dtype), idx, num_segments=codes.shape[0])
    return counts, u_sum + jnp.sum(jnp.max(s, axis=-1))


def _masses(x: Array, codes: Array, heights: Array, tau: Array, chunk: int, smoothed: bool) -> tuple[Array, Array]:
    """Cell masses (1/M)Σ_x 1[i*(x) = i] (or Σ_x sᵢ(x)) and the mean potential, in chunks of x."""
    n = codes.shape[0]
    xs = x.reshape(x.shape[0] // chunk, chunk, x.shape[1])

    def one(acc, xc):
        return _accumulate(xc, codes, heights, tau, smoothed, acc), None

    init = (jnp.zeros((n,), codes.dtype), jnp.zeros((), codes.dtype))
    (counts, u_sum), _ = jax.lax.scan(one, init, xs)
    return counts / x.shape[0], u_sum / x.shape[0]


_masses_jit = eqx.filter_jit(_masses)  # chunk and smoothed are Python values: static


# The default fresh evaluation: a pass over 2¹⁸ points costs ~16 steps at the default batch, and in low d
# (quantised QMC counts) it resolves masses to ~1/2¹⁸, far below the 1e-2/n criterion.
_MIN_EVALUATION_SIZE = 2**18


def _adam(learning_rate: Array) -> optax.GradientTransformation:
    """Adam whose rate lives in its state (``optax.inject_hyperparams``), so a new rate never recompiles."""
    return optax.inject_hyperparams(optax.adam)(learning_rate=learning_rate)


class _SolverCarry(eqx.Module):
    """The solver's loop carry: heights, Adam state (with the current rate), batch size, stall counter."""

    heights: Float[Array, " n"]
    opt_state: Any
    batch_size: Int[Array, ""]
    best: Float[Array, ""]
    since_best: Int[Array, ""]
    converged: Bool[Array, ""]


class _SolverStep(eqx.Module):
    """One Adam step on h (the ``step(carry, key)`` that :func:`dpflows.iterate` runs).

    The batch size M is a leaf of the carry, not a shape: source points are processed in chunks of
    ``chunk`` by a loop whose trip count M/chunk is data, and randomised-Sobol batches are prefixes of
    one scrambled table of ``max_batch_size`` points (a prefix of 2ᵏ Sobol points is itself a net).
    So doubling M, decaying the rate and restarting Adam at a stall all happen inside one compiled loop.
    """

    codes: Float[Array, "n d"]
    weights: Float[Array, " n"]
    tau: Float[Array, ""]
    tol: Float[Array, ""]
    lr_decay: Float[Array, ""]
    table: Float[Array, "M d"] | None
    source: str = eqx.field(static=True)
    chunk: int = eqx.field(static=True)
    patience: int = eqx.field(static=True)
    smoothed: bool = eqx.field(static=True)
    max_batch_size: int = eqx.field(static=True)

    def estimate(self, key: PRNGKeyArray, heights: Array, batch_size: Array, num_chunks: Array):
        """Cell masses and mean potential on ``batch_size`` source points (``num_chunks`` = 0: zeros)."""
        n, d = self.codes.shape
        dtype = self.codes.dtype
        size = batch_size.astype(dtype)
        tiny = 0.5 / size  # as _map_source: keeps the normal quantile finite
        shift = jr.uniform(key, (d,), dtype=dtype)
        tau = jnp.where(self.tau > 0, self.tau, jnp.ones((), dtype))

        def body(c, acc):
            if self.table is None:
                u = jr.uniform(jr.fold_in(key, c), (self.chunk, d), dtype=dtype)
            else:
                u = jnp.mod(jax.lax.dynamic_slice_in_dim(self.table, c * self.chunk, self.chunk) + shift[None, :], 1.0)
            x = u if self.source == "uniform" else jax.scipy.special.ndtri(jnp.clip(u, tiny, 1.0 - tiny))
            return _accumulate(x, self.codes, heights, tau, self.smoothed, acc)

        init = (jnp.zeros((n,), dtype), jnp.zeros((), dtype))
        counts, u_sum = jax.lax.fori_loop(jnp.zeros((), jnp.int32), num_chunks, body, init)
        return counts / size, u_sum / size

    def __call__(self, carry: _SolverCarry, key: PRNGKeyArray) -> tuple[_SolverCarry, dict[str, Array]]:
        """ĝ on a fresh batch, the convergence test, an Adam step on h, and the stall rule."""
        n = self.codes.shape[0]
        dtype = self.codes.dtype
        k_batch, k_noise = jr.split(key)
        chunks = carry.batch_size // self.chunk
        masses, u_mean = self.estimate(k_batch, carry.heights, carry.batch_size, chunks)
        grad = masses - self.weights
        error = n * jnp.max(jnp.abs(grad))
        dual = u_mean - jnp.dot(self.weights, carry.heights)
        converged = error < self.tol
        rate = carry.opt_state.hyperparams["learning_rate"]
        with jax.numpy_dtype_promotion("standard"):  # optax mixes int step counts with floats
            updates, opt_state = _adam(rate).update(grad, carry.opt_state)
        h = carry.heights + updates.astype(dtype)
        h = h - jnp.mean(h)
        gnorm = jnp.linalg.norm(grad)
        since = jnp.where(gnorm < carry.best, 0, carry.since_best + 1).astype(jnp.int32)
        stalled = ~converged & (since >= self.patience)
        # At a stall, the criterion's own noise at the new h: two independent estimates (n·max|m̂ − m̂'|/√2).
        # Their loops run 0 chunks unless this step stalled, so the check costs nothing on other steps.
        noise_chunks = jnp.where(stalled, chunks, 0)
        pair = jax.vmap(lambda k: self.estimate(k, h, carry.batch_size, noise_chunks)[0])(jr.split(k_noise))
        noise = n * jnp.max(jnp.abs(pair[0] - pair[1])) / jnp.sqrt(jnp.asarray(2.0, dtype))
        grow = stalled & (noise > 0.5 * self.tol) & (carry.batch_size < self.max_batch_size)
        with jax.numpy_dtype_promotion("standard"):
            restart = _adam(rate * self.lr_decay).init(h)  # a stall: smaller rate, fresh moments
        opt_state = jax.tree.map(lambda a, b: jnp.where(stalled, a, b), restart, opt_state)
        unset = jnp.asarray(jnp.finfo(dtype).max, dtype)  # "no best yet"; finite, as checkpoints require
        new = _SolverCarry(
            heights=jnp.where(converged, carry.heights, h),  # stop at the h that met tol
            opt_state=jax.tree.map(lambda a, b: jnp.where(converged, a, b), carry.opt_state, opt_state),
            batch_size=jnp.where(grow, 2 * carry.batch_size, carry.batch_size),
            best=jnp.where(stalled, unset, jnp.minimum(gnorm, carry.best)),
            since_best=jnp.where(stalled, 0, since).astype(jnp.int32),
            converged=converged,
        )
        info = {
            "error": error,
            "dual": dual,
            "batch_size": carry.batch_size,
            "learning_rate": rate,
            "stalled": stalled,
            "noise": jnp.where(stalled, noise, jnp.zeros((), dtype)),  # measured only at a stall
            "converged": converged,
        }
        return new, info


def _solver_converged(carry: _SolverCarry, info: dict[str, Array]) -> Array:
    """The solver's ``terminate``: stop after the step whose fresh batch met ``tol``."""
    return carry.converged


class SemiDiscreteResult(eqx.Module):
    """What :meth:`SemiDiscreteOT.solve` returns.

    Attributes:
        codes: (n, d) the codes. weights: (n,) their masses ν.
        heights: (n,) the heights h (mean zero) of u_h(x) = maxᵢ⟨x, yᵢ⟩ + hᵢ.
        cell_masses: (n,) μ(Wᵢ(h)) (or E_μ[sᵢ] when ``tau > 0``) estimated on a fresh quasi-MC batch
            of ``evaluation_size`` points (default ≥ 2¹⁸) drawn after the solve (independent of the iterates).
        cell_mass_error: n·maxᵢ|cell_massesᵢ − νᵢ| on that batch (the §6c criterion, 1e-2 by default).
        converged: whether a training batch met ``tol`` (the fresh estimate is what to trust).
        num_iterations: Adam steps taken. batch_size: the final batch size (after doublings).
        errors, duals, batch_sizes: per iteration, n·max|ĝ|, the dual value E(h) and the batch size.
        noise_levels: at each stall, the measured noise of the criterion (see the solver).
        learning_rate: the Adam rate at the end (after the decays at stalls).
        tau: 0 for the hard (AE-OT) problem, else the temperature of the smoothed dual.
    """

    codes: Float[Array, "n d"]
    weights: Float[Array, " n"]
    heights: Float[Array, " n"]
    cell_masses: Float[Array, " n"]
    cell_mass_error: Float[Array, ""]
    converged: Bool[Array, ""]
    num_iterations: int = eqx.field(static=True)
    batch_size: int = eqx.field(static=True)
    errors: Float[Array, " iterations"]
    duals: Float[Array, " iterations"]
    batch_sizes: Int[Array, " iterations"]
    noise_levels: Float[Array, " stalls"]
    learning_rate: Float[Array, ""]
    tau: Float[Array, ""]
    source: str = eqx.field(static=True)

    def potential(self, x: Any) -> Array:
        """u_h(x)."""
        return brenier_potential(x, self.codes, self.heights)

    def transport(self, x: Any) -> Array:
        """The OT map ∇u_h(x) = y_{i*(x)}."""
        return brenier_map(x, self.codes, self.heights)

    def smoothed_map(self, x: Any, tau: Any) -> Array:
        """∇u_{h,τ}(x) (:func:`smoothed_brenier_map`)."""
        return smoothed_brenier_map(x, self.codes, self.heights, tau)


def _check_scale(name: str, value: Array, d: int = 1) -> Array:
    """``value`` finite and small enough that d·max|v|² (a squared norm, a score) is finite in its dtype."""
    value = _validate.finite(name, value)
    if not _validate.is_concrete(value) or value.size == 0:
        return value
    arr = np.asarray(value, np.float64)
    limit = math.sqrt(float(jnp.finfo(value.dtype).max) / (64.0 * d))  # 64: headroom for sums of n·d terms
    biggest = float(np.max(np.abs(arr)))
    if biggest >= limit:
        raise ValueError(
            f"{name} must have entries of magnitude below {limit:.3g} so that squared norms and scores "
            f"stay finite in {value.dtype}, got max |{name}| = {biggest:.3g}; rescale them (e.g. "
            "(codes − mean) / std: semi-discrete OT is equivariant under such affine maps) or use float64"
        )
    return value


class SemiDiscreteOT(eqx.Module):
    """Semi-discrete OT from a continuous source to weighted codes: the heights of the Brenier potential.

    Minimises E(h) = ∫u_h dμ − Σνᵢhᵢ (hard, ``tau=0``: AE-OT) or the smoothed dual
    E_τ(h) = ∫u_{h,τ} dμ − Σνᵢhᵢ (``tau > 0``, entropic semi-discrete OT) by Adam on the estimated
    gradient ĝ = (cell masses on a batch of source points) − ν, then h ← h − mean(h) (§6c):

        repeat: x₁..x_M ~ μ (randomised Sobol);  ĝᵢ = #{x: i*(x) = i}/M − νᵢ;  h ← Adam(h, ĝ);  h −= mean h
        stop when n·maxᵢ|ĝᵢ| < tol;  if ‖ĝ‖ has not improved for ``patience`` steps (a stall):
            lr ← lr·lr_decay, Adam restarts, and M ← 2M if the estimate's own noise exceeds tol/2

    AE-OT doubles M at every stall and keeps the rate. Two refinements of ours: (i) the rate decays
    at each stall (``lr_decay=1`` switches it off), because Adam's step does not shrink with the
    gradient, so at a fixed rate h keeps jittering by ~lr and caps the attainable accuracy; (ii) M
    doubles only when two independent estimates at the current h differ by more than tol/2 (noise is
    then the floor), so quasi-MC in low dimension does not pay for points it does not need. M never
    exceeds ``max_batch_size``. Source points are processed in chunks so that at most
    ``chunk_elements`` scores exist at once (memory O(chunk_elements + n d), any n).

    The runtime: :meth:`solve` is one :func:`dpflows.iterate` loop (``fold_in`` step keys, progress
    bar, checkpoints and bitwise resume, early exit at ``tol``) whose carry holds h, the Adam state
    with its rate, the batch size and the stall counter. ``tau``, ``learning_rate``, ``tol`` and
    ``lr_decay`` are array leaves (a grid over them, or over codes of one shape, is one compiled
    program: :func:`sweep_solve`). Static fields are only what changes shapes or code paths: the
    batch sizes (M is a carry leaf between ``batch_size`` and ``max_batch_size``; the loop over source
    chunks has a data-dependent trip count, so doubling M does not recompile), the chunk, ``patience``,
    ``source``, ``sampling`` and whether τ > 0 (hard argmax vs softmax). The randomised-Sobol batches
    are prefixes of one scrambled table of ``max_batch_size`` points drawn once per solve (memory
    ``max_batch_size × d`` floats; ``sampling="random"`` needs none).

    Args:
        codes: (n, d) codes yᵢ (finite, with d·max|yᵢⱼ|² representable in their dtype).
        weights: (n,) masses ν (positive, summing to 1); uniform if None.
        source: ``"uniform"`` ([0, 1]ᵈ, as AE-OT) or ``"gaussian"`` (N(0, I)).
        tau: 0 for the hard problem; τ > 0 optimises the smoothed dual directly (whether τ > 0 is
            read once, from a concrete value, and is static; the value itself is a leaf).
        learning_rate: initial Adam rate; default 0.05·σ_μ·maxᵢ‖yᵢ − ȳ‖ (σ_μ the source's per-axis
            sd), a twentieth of the spread of the scores ⟨x, yᵢ⟩ over the source.
        batch_size: initial M (rounded up to a power of two). max_batch_size: cap on the doubling.
        tol: stop when n·maxᵢ|ĝᵢ| < tol (AE-OT: 1e-2, i.e. cell masses within 1e-2/n).
        max_iterations: Adam step budget. patience: stalled steps before doubling (AE-OT: 20).
        lr_decay: learning-rate factor at each stall, in (0, 1].
        sampling: ``"sobol"`` (randomised QMC, default) or ``"random"`` (i.i.d.).
        chunk_elements: scores held at once (source chunk × n).
        evaluation_size: points of the final fresh estimate (default: the final batch size, and at
            least 2¹⁸ so that the estimate resolves cell masses well below a 1e-2/n tolerance).

    Raises:
        ValueError: naming the argument: codes not (n, d), not finite or too large to square; weights
            not positive or not summing to 1; a bad option or rate.

    Example:
        >>> import jax.numpy as jnp, jax.random as jr
        >>> codes = jnp.linspace(0.0, 1.0, 4)[:, None]
        >>> res = SemiDiscreteOT(codes, batch_size=4096, tol=2e-2).solve(jr.key(0))
        >>> bool(res.converged), bool(res.cell_mass_error < 0.05), [round(float(m), 2) for m in res.cell_masses]
        (True, True, [0.25, 0.25, 0.25, 0.25])
    """

    codes: Float[Array, "n d"]
    weights: Float[Array, " n"]
    tau: Float[Array, ""] = eqx.field(converter=jnp.asarray)
    learning_rate: Float[Array, ""] = eqx.field(converter=jnp.asarray)
    tol: Float[Array, ""] = eqx.field(converter=jnp.asarray)
    lr_decay: Float[Array, ""] = eqx.field(converter=jnp.asarray)
    source: str = eqx.field(static=True)
    smoothed: bool = eqx.field(static=True)
    batch_size: int = eqx.field(static=True)
    max_batch_size: int = eqx.field(static=True)
    max_iterations: int = eqx.field(static=True)
    patience: int = eqx.field(static=True)
    sampling: str = eqx.field(static=True)
    chunk_elements: int = eqx.field(static=True)
    evaluation_size: int | None = eqx.field(static=True)

    def __init__(
        self,
        codes: Any,
        weights: Any = None,
        *,
        source: str = "uniform",
        tau: Any = 0.0,
        learning_rate: Any = None,
        batch_size: int = 2**14,
        max_batch_size: int = 2**20,
        tol: Any = 1e-2,
        max_iterations: int = 5000,
        patience: int = 20,
        lr_decay: Any = 0.5,
        sampling: str = "sobol",
        chunk_elements: int = 2**22,
        evaluation_size: int | None = None,
    ):
        """Validate the codes, weights and settings (see the class docstring)."""
        y = _validate.floating_array("codes", codes)
        y = _check_scale("codes", y, y.shape[-1] if y.ndim else 1)
        if y.ndim != 2 or y.shape[0] == 0 or y.shape[1] == 0:
            raise ValueError(f"codes must have shape (n, d) with n, d >= 1, got {y.shape}")
        n = y.shape[0]
        if weights is None:
            w = jnp.full((n,), 1.0 / n, y.dtype)
        else:
            w = _validate.finite("weights", _validate.floating_array("weights", weights)).astype(y.dtype)
            if w.shape != (n,):
                raise ValueError(f"weights must have shape ({n},) to match codes, got {w.shape}")
            _validate.positive("weights", w)
            if _validate.is_concrete(w):
                total = float(np.sum(np.asarray(w, np.float64)))
                if abs(total - 1.0) > 1e-5:
                    raise ValueError(
                        f"weights must sum to 1, got {total:.6g} (normalise them: weights / weights.sum())"
                    )
        _validate.one_of("source", source, SOURCES)
        _validate.one_of("sampling", sampling, SAMPLINGS)
        _validate.positive("tau", tau, allow_zero=True)
        _validate.positive("tol", tol)
        _validate.in_closed_interval("lr_decay", lr_decay, 0.0, 1.0)
        _validate.positive("lr_decay", lr_decay)
        batch_size = _next_pow2(_validate.positive_int("batch_size", batch_size))
        max_batch_size = _next_pow2(_validate.positive_int("max_batch_size", max_batch_size))
        if max_batch_size < batch_size:
            raise ValueError(f"max_batch_size must be >= batch_size ({batch_size}), got {max_batch_size}")
        if learning_rate is None:
            sd = 1.0 / math.sqrt(12.0) if source == "uniform" else 1.0
            spread = jnp.max(jnp.linalg.norm(y - jnp.mean(y, axis=0, keepdims=True), axis=1))
            learning_rate = 0.05 * sd * jnp.where(spread > 0, spread, jnp.ones((), y.dtype))
        _validate.positive("learning_rate", learning_rate)
        self.codes, self.weights = y, w
        self.source, self.sampling = source, sampling
        # τ = 0 (hard argmax) vs τ > 0 (softmax) is a code path: read once from a concrete τ.
        self.smoothed = bool(np.all(np.asarray(tau) > 0)) if _validate.is_concrete(tau) else True
        self.tau = jnp.asarray(tau, y.dtype)
        self.learning_rate = jnp.asarray(learning_rate, y.dtype)
        self.tol, self.lr_decay = jnp.asarray(tol, y.dtype), jnp.asarray(lr_decay, y.dtype)
        self.batch_size, self.max_batch_size = batch_size, max_batch_size
        self.max_iterations = _validate.positive_int("max_iterations", max_iterations)
        self.patience = _validate.positive_int("patience", patience)
        self.chunk_elements = _validate.positive_int("chunk_elements", chunk_elements)
        self.evaluation_size = (
            None if evaluation_size is None else _validate.positive_int("evaluation_size", evaluation_size)
        )

    def _chunk(self, batch_size: int) -> int:
        """Source points per chunk: a power of two, at most ``chunk_elements // n`` and ``batch_size``."""
        n = self.codes.shape[0]
        return min(batch_size, 1 << max(0, int(math.log2(max(1, self.chunk_elements // n)))))

    def _tau(self) -> Array:
        return jnp.where(self.tau > 0, self.tau, jnp.ones((), self.codes.dtype))

    def cell_masses(self, key: PRNGKeyArray, heights: Any, num: int | None = None) -> Array:
        """Estimate μ(Wᵢ(h)) (or E_μ[sᵢ] when ``tau > 0``) on ``num`` fresh randomised-QMC source points."""
        y, h = _check_codes(self.codes, heights)
        num = _next_pow2(self.batch_size if num is None else _validate.positive_int("num", num))
        x = sample_source(key, num, y.shape[1], source=self.source, sampling=self.sampling, dtype=y.dtype)
        return _masses_jit(x, y, h, self._tau(), self._chunk(num), self.smoothed)[0]

    def _initial_heights(self, init: Any) -> Array:
        if init is None:
            return jnp.zeros_like(self.weights)
        h = _check_codes(self.codes, init)[1]
        return _check_scale("init", h - jnp.mean(h))

    def _step(self, table: Array | None) -> _SolverStep:
        return _SolverStep(
            codes=self.codes,
            weights=self.weights,
            tau=self._tau(),
            tol=self.tol,
            lr_decay=self.lr_decay,
            table=table,
            source=self.source,
            chunk=self._chunk(self.batch_size),
            patience=self.patience,
            smoothed=self.smoothed,
            max_batch_size=self.max_batch_size,
        )

    def _carry(self, heights: Array) -> _SolverCarry:
        dtype = self.codes.dtype
        with jax.numpy_dtype_promotion("standard"):
            opt_state = _adam(self.learning_rate).init(heights)
        return _SolverCarry(
            heights=heights,
            opt_state=opt_state,
            batch_size=jnp.asarray(self.batch_size, jnp.int32),
            best=jnp.asarray(jnp.finfo(dtype).max, dtype),
            since_best=jnp.zeros((), jnp.int32),
            converged=jnp.zeros((), bool),
        )

    def _table(self, key: PRNGKeyArray) -> Array | None:
        if self.sampling != "sobol":
            return None
        return _sobol_table(key, self.max_batch_size, self.codes.shape[1], self.codes.dtype)

    def _result(self, carry: _SolverCarry, info: dict[str, Array], key: PRNGKeyArray, warn: bool, stacklevel: int):
        taken = int(np.sum(np.asarray(info["active"])))
        stalled = np.asarray(info["stalled"][:taken])
        m = int(carry.batch_size)
        masses = self.cell_masses(key, carry.heights, self.evaluation_size or max(m, _MIN_EVALUATION_SIZE))
        y, w = self.codes, self.weights
        converged = bool(carry.converged)
        errors = info["error"][:taken]
        if warn and not converged:
            last = float(errors[-1]) if taken else float("nan")
            warnings.warn(
                f"SemiDiscreteOT did not reach tol={float(self.tol):.3g} in max_iterations={self.max_iterations} "
                f"Adam steps (last n·max|ĝ| = {last:.3g} at batch size {m}, max_batch_size={self.max_batch_size}); "
                "raise max_iterations, loosen tol, or raise max_batch_size if the batch reached it "
                "(result.converged is False; pass warn=False to silence)",
                ConvergenceWarning,
                stacklevel=stacklevel,
            )
        return SemiDiscreteResult(
            codes=y,
            weights=w,
            heights=carry.heights,
            cell_masses=masses,
            cell_mass_error=y.shape[0] * jnp.max(jnp.abs(masses - w)),
            converged=jnp.asarray(converged),
            num_iterations=taken,
            batch_size=m,
            errors=errors,
            duals=info["dual"][:taken],
            batch_sizes=info["batch_size"][:taken].astype(jnp.int32),
            noise_levels=info["noise"][:taken][jnp.asarray(stalled)],
            learning_rate=carry.opt_state.hyperparams["learning_rate"].astype(y.dtype),
            tau=self.tau,
            source=self.source,
        )

    def solve(
        self,
        key: PRNGKeyArray,
        *,
        init: Any = None,
        progress: bool = False,
        steps_per_call: int | None = None,
        checkpoint: Any = None,
        checkpoint_every: int | None = None,
        warn: bool = True,
    ) -> SemiDiscreteResult:
        """Run the solver: one :func:`dpflows.iterate` loop of up to ``max_iterations`` Adam steps.

        Step i uses ``fold_in(k_run, i)``; the loop exits after the step whose batch met ``tol``
        (``terminate``). One compiled program whatever the batch doublings (see the class docstring).

        Args:
            key: PRNG key (Sobol scrambling, random shifts, the final evaluation).
            init: initial heights (a warm start, e.g. a previous solution); zeros if None.
            progress: show a progress bar (tqdm) between compiled chunks.
            steps_per_call: Adam steps per compiled chunk, the progress/checkpoint granularity (default:
                one chunk without progress or checkpoints; a shorter last chunk compiles once more).
            checkpoint: a folder for atomic checkpoints between chunks; an existing one resumes bitwise.
            checkpoint_every: steps between checkpoints (default: every chunk).
            warn: emit :class:`dpflows.ot.ConvergenceWarning` if ``tol`` was not met.

        Returns:
            :class:`SemiDiscreteResult` (``converged`` says whether ``tol`` was met).
        """
        if steps_per_call is not None:
            steps_per_call = _validate.positive_int("steps_per_call", steps_per_call)
        h0 = self._initial_heights(init)
        k_eval, k_table, k_run = jr.split(key, 3)
        carry, info, _ = iterate(
            self._step(self._table(k_table)),
            self._carry(h0),
            k_run,
            self.max_iterations,
            terminate=_solver_converged,
            progress=progress,
            desc="SemiDiscreteOT",
            checkpoint=checkpoint,
            checkpoint_every=checkpoint_every,
            chunk_size=steps_per_call,
        )
        return self._result(carry, info, k_eval, warn, stacklevel=3)


_SWEEP_STATIC = (
    "source", "smoothed", "batch_size", "max_batch_size", "max_iterations", "patience", "sampling",
    "chunk_elements", "evaluation_size",
)  # fmt: skip


class _SweepStep(eqx.Module):
    """Every member's step at once: ``jax.vmap`` inside the step; a member that met its ``tol`` is frozen.

    So a sweep is one :func:`dpflows.iterate` loop, with its progress bar and checkpoints.
    """

    steps: _SolverStep  # stacked leaves (member axis 0); the shared Sobol table is held once, below
    table: Float[Array, "M d"] | None

    def __call__(self, carry: _SolverCarry, key: PRNGKeyArray) -> tuple[_SolverCarry, dict[str, Array]]:
        """All members' steps with the same key (common random numbers); frozen members keep their carry."""

        def one(step, c):
            return eqx.tree_at(lambda st: st.table, step, self.table, is_leaf=lambda x: x is None)(c, key)

        new, info = jax.vmap(one)(self.steps, carry)
        frozen = carry.converged

        def keep(old, fresh):
            return jnp.where(frozen.reshape(frozen.shape + (1,) * (old.ndim - 1)), old, fresh)

        return jax.tree.map(keep, carry, new), {**info, "taken": ~frozen}


def _all_converged(carry: _SolverCarry, info: dict[str, Array]) -> Array:
    return jnp.all(carry.converged)


def sweep_solve(
    solvers: Any,
    key: PRNGKeyArray,
    *,
    init: Any = None,
    progress: bool = False,
    steps_per_call: int | None = None,
    checkpoint: Any = None,
    checkpoint_every: int | None = None,
    warn: bool = True,
) -> list[SemiDiscreteResult]:
    """Solve several semi-discrete problems at once: ``jax.vmap`` of the :meth:`~SemiDiscreteOT.solve` loop.

    The solvers may differ in their leaves (codes and weights of one shape, ``tau``, ``learning_rate``,
    ``tol``, ``lr_decay``); their static settings must agree. One compiled program runs all of them:
    the step is vmapped over the members inside one :func:`dpflows.iterate` loop (so progress and
    checkpoints work as in :meth:`~SemiDiscreteOT.solve`); each member stops on its own (a member
    that met ``tol`` is frozen while the others go on; the loop ends when all have). Every member
    uses the same key (common random numbers: the same Sobol table and shifts), so member i equals
    ``solvers[i].solve(key)`` up to float round-off.

    Args:
        solvers: a sequence of :class:`SemiDiscreteOT`.
        key: PRNG key, shared by every member.
        init: (len(solvers), n) initial heights, or None (zeros).
        progress: a progress bar between compiled chunks.
        steps_per_call: steps per compiled chunk (as in :meth:`~SemiDiscreteOT.solve`).
        checkpoint: a folder for atomic checkpoints; an existing one resumes bitwise.
        checkpoint_every: steps between checkpoints.
        warn: one :class:`dpflows.ot.ConvergenceWarning` per member that did not meet its ``tol``.

    Returns:
        One :class:`SemiDiscreteResult` per solver, in order.

    Raises:
        ValueError: no solvers, codes of different shapes, or a static setting that differs (named).
    """
    solvers = list(solvers)
    if not solvers or not all(isinstance(s, SemiDiscreteOT) for s in solvers):
        raise ValueError("solvers must be a non-empty sequence of SemiDiscreteOT")
    first = solvers[0]
    for i, s in enumerate(solvers[1:], start=1):
        if s.codes.shape != first.codes.shape or s.codes.dtype != first.codes.dtype:
            raise ValueError(
                f"solvers[{i}].codes has shape {s.codes.shape} ({s.codes.dtype}), but solvers[0].codes "
                f"{first.codes.shape} ({first.codes.dtype}): a sweep needs codes of one shape and dtype"
            )
        if s.smoothed != first.smoothed:
            raise ValueError(
                f"solvers[{i}].tau and solvers[0].tau differ in kind (one is 0, the hard argmax problem, the "
                "other > 0, the smoothed one): these are two code paths; sweep them separately"
            )
        for name in _SWEEP_STATIC:
            if getattr(s, name) != getattr(first, name):
                raise ValueError(
                    f"solvers[{i}].{name} = {getattr(s, name)!r} differs from solvers[0].{name} = "
                    f"{getattr(first, name)!r}: static settings must agree (run separate sweeps)"
                )
    n = first.codes.shape[0]
    if init is None:
        h0 = jnp.zeros((len(solvers), n), first.codes.dtype)
    else:
        h0 = _validate.floating_array("init", init).astype(first.codes.dtype)
        if h0.shape != (len(solvers), n):
            raise ValueError(f"init must have shape ({len(solvers)}, {n}), got {h0.shape}")
        h0 = _check_scale("init", h0 - jnp.mean(h0, axis=1, keepdims=True))
    if steps_per_call is not None:
        steps_per_call = _validate.positive_int("steps_per_call", steps_per_call)
    k_eval, k_table, k_run = jr.split(key, 3)
    steps = jax.tree.map(lambda *xs: jnp.stack(xs), *[s._step(None) for s in solvers])
    carries = jax.tree.map(lambda *xs: jnp.stack(xs), *[s._carry(h) for s, h in zip(solvers, h0, strict=True)])
    carry, info, _ = iterate(
        _SweepStep(steps, first._table(k_table)),
        carries,
        k_run,
        first.max_iterations,
        terminate=_all_converged,
        progress=progress,
        desc="sweep_solve",
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        chunk_size=steps_per_call,
    )
    results = []
    for i, s in enumerate(solvers):
        member = {k: v[:, i] for k, v in info.items() if k not in ("active", "taken")}
        member["active"] = info["active"] & info["taken"][:, i]  # a prefix: once frozen, always frozen
        results.append(s._result(jax.tree.map(lambda a, i=i: a[i], carry), member, k_eval, warn, stacklevel=3))
    return results


# ----------------------------------------------------------------------------------- the generator
class AEOTGenerator(eqx.Module):
    """Generate new latent codes from a semi-discrete OT solution, and decode them.

    ``mode="smoothed"`` (CS-AE-OT, reconstructed): x ~ μ, code = ∇u_{h,τ}(x) = Σᵢ sᵢ(x) yᵢ; optional
    rejection of x whose top-2 planes meet at an angle above ``angle_threshold`` or whose mixing
    1 − maxᵢ sᵢ(x) exceeds ``max_mixing`` (both None: no rejection, the map's law is the
    push-forward (∇u_{h,τ})#μ, a Brenier map).
    ``mode="pairs"`` (AE-OT, as in its public 2-D demo): x ~ μ, (i₁, i₂) = the two largest pieces;
    if θ(i₁, i₂) < ``angle_threshold`` output w y_{i₁} + (1 − w) y_{i₂}, w ~ U(0, 1), else reject.
    The demo's de-duplication of pairs is not done (it re-weights boundaries towards the short ones).

    Args:
        decoder: maps one code (d,) to one sample, or an autoencoder with a ``decode`` method; None
            returns the codes (latent = data, as in the 2-D examples).
        codes: (n, d) codes. heights: (n,) heights from :class:`SemiDiscreteOT`.
        tau: temperature of the smoothed map (ignored by ``"pairs"``).
        mode: ``"smoothed"`` or ``"pairs"``.
        angle_threshold: θ_thr in radians (required for ``"pairs"``; the AE-OT demo uses 0.4, 0.2 and
            0.09 for its 8-Gaussian, 25-Gaussian and Swiss-roll data, which depend on the codes' scale).
        max_mixing: κ ∈ (0, 1] for the smoothed mode's optional rejection.
        source: the source the heights were solved for.
    """

    decoder: Any
    codes: Float[Array, "n d"]
    heights: Float[Array, " n"]
    tau: Float[Array, ""]
    mode: str = eqx.field(static=True)
    angle_threshold: float | None = eqx.field(static=True)
    max_mixing: float | None = eqx.field(static=True)
    source: str = eqx.field(static=True)

    def __init__(
        self,
        decoder: Any,
        codes: Any,
        heights: Any,
        *,
        tau: Any = 0.0,
        mode: str = "smoothed",
        angle_threshold: float | None = None,
        max_mixing: float | None = None,
        source: str = "uniform",
    ):
        """Validate (see the class docstring)."""
        y, h = _check_codes(codes, heights)
        _validate.one_of("mode", mode, MODES)
        _validate.one_of("source", source, SOURCES)
        if y.shape[0] < 2:
            raise ValueError("AEOTGenerator needs at least 2 codes")
        if mode == "smoothed":
            _validate.positive("tau", tau)
        if mode == "pairs" and angle_threshold is None:
            raise ValueError("angle_threshold must be given for mode='pairs' (radians, e.g. 0.4)")
        if angle_threshold is not None:
            _validate.positive("angle_threshold", angle_threshold)
        if max_mixing is not None:
            _validate.in_closed_interval("max_mixing", max_mixing, 0.0, 1.0)
        self.decoder = decoder
        self.codes, self.heights = _validate.finite("codes", y), _validate.finite("heights", h)
        self.tau = jnp.asarray(tau, y.dtype)
        self.mode, self.source = mode, source
        self.angle_threshold = None if angle_threshold is None else float(angle_threshold)
        self.max_mixing = None if max_mixing is None else float(max_mixing)

    def propose(self, key: PRNGKeyArray, num: int) -> tuple[Float[Array, "num d"], Bool[Array, " num"]]:
        """``num`` candidate codes and whether each passes the rejection test (pure, jit-able)."""
        k_x, k_w = jr.split(key)
        y = self.codes
        x = _map_source(jr.uniform(k_x, (num, y.shape[1]), dtype=y.dtype), self.source, num)
        s = _scores(x, y, self.heights)
        ok = jnp.ones((num,), bool)
        if self.angle_threshold is not None:  # the top-2 pair and its angle only when a test needs them
            top = jax.lax.top_k(s, 2)[1]
            ok = pair_angles(y, top[:, 0], top[:, 1]) < self.angle_threshold
        if self.mode == "pairs":
            wgt = jr.uniform(k_w, (num, 1), dtype=y.dtype)
            return wgt * y[top[:, 0]] + (1.0 - wgt) * y[top[:, 1]], ok
        p = jax.nn.softmax(s / self.tau, axis=-1)
        if self.max_mixing is not None:
            ok = ok & (1.0 - jnp.max(p, axis=-1) <= self.max_mixing)
        return p @ y, ok

    def sample_codes(self, key: PRNGKeyArray, num: int, *, max_rounds: int = 100) -> Float[Array, "num d"]:
        """``num`` accepted codes, drawing proposals in rounds (host loop) until enough pass.

        Raises:
            RuntimeError: fewer than ``num`` accepted after ``max_rounds`` rounds (the rejection test
                is too strict for these codes: raise ``angle_threshold`` / ``max_mixing``).
        """
        num = _validate.positive_int("num", num)
        kept, total = [], 0
        for r in range(_validate.positive_int("max_rounds", max_rounds)):
            cand, ok = _propose(self, jr.fold_in(key, r), num)
            good = np.asarray(cand)[np.asarray(ok)]
            kept.append(good)
            total += good.shape[0]
            if total >= num:
                return jnp.asarray(np.concatenate(kept)[:num])
        raise RuntimeError(
            f"AEOTGenerator accepted {total} of {num * max_rounds} proposals, fewer than num={num}; "
            "raise angle_threshold (or max_mixing)"
        )

    def acceptance_rate(self, key: PRNGKeyArray, num: int = 4096) -> float:
        """Fraction of proposals that pass the rejection test."""
        return float(jnp.mean(_propose(self, key, _validate.positive_int("num", num))[1]))

    def decode(self, codes: Any) -> Array:
        """Decode codes (n, d) with the decoder (identity if None)."""
        if self.decoder is None:
            return jnp.asarray(codes)
        dec = getattr(self.decoder, "decode", self.decoder)
        return jax.vmap(dec)(jnp.asarray(codes))

    def sample(self, key: PRNGKeyArray, num: int, *, max_rounds: int = 100) -> Array:
        """``num`` decoded samples: decode(:meth:`sample_codes`)."""
        return self.decode(self.sample_codes(key, num, max_rounds=max_rounds))


@eqx.filter_jit
def _propose(gen: AEOTGenerator, key: PRNGKeyArray, num: int):
    return gen.propose(key, num)


# --------------------------------------------------------------------------------- the autoencoder
class _ReconstructionLoss(eqx.Module):
    """loss(model, key) = mean ‖model(x) − x‖² over a minibatch drawn without replacement (for :func:`fit`)."""

    data: Float[Array, "N D"]
    batch_size: int = eqx.field(static=True)

    def __call__(self, model: Any, key: PRNGKeyArray) -> Float[Array, ""]:
        """The minibatch loss; differentiable in the model's weights."""
        batch = self.data[jr.choice(key, self.data.shape[0], (self.batch_size,), replace=False)]
        return jnp.mean((jax.vmap(model)(batch) - batch) ** 2)


def train_autoencoder(
    autoencoder: MLPAutoencoder,
    data: Any,
    *,
    key: PRNGKeyArray,
    num_steps: int,
    batch_size: int = 128,
    learning_rate: Any = 1e-3,
    progress: bool = False,
    chunk_size: int = 500,
    checkpoint: Any = None,
    checkpoint_every: int | None = None,
) -> tuple[MLPAutoencoder, Array]:
    """Fit an autoencoder by Adam on the mean squared reconstruction error; returns (model, losses).

    Runs on :func:`dpflows.fit`: step i draws its minibatch with ``fold_in(key, i)``; the rate is a
    leaf of the optimizer state (``optax.inject_hyperparams``), so a grid of rates is ``jax.vmap`` of
    this function and compiles once.

    Args:
        autoencoder: e.g. :class:`dpflows.nn.MLPAutoencoder` (its inexact arrays are trained).
        data: (N, D) training samples.
        key: PRNG key for the minibatches.
        num_steps: Adam steps.
        batch_size: samples per step (capped at N; drawn without replacement).
        learning_rate: Adam's rate (> 0; an array leaf).
        progress: show a progress bar between compiled chunks.
        chunk_size: steps per compiled ``lax.scan`` chunk.
        checkpoint: a folder for atomic checkpoints between chunks (resumes bitwise).
        checkpoint_every: steps between checkpoints (default: every chunk).

    Raises:
        ValueError: data not (N, D) or not finite; a non-positive size or rate.
    """
    x = _validate.finite("data", _validate.floating_array("data", data))
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"data must have shape (N, D) with N >= 1, got {x.shape}")
    num_steps = _validate.positive_int("num_steps", num_steps)
    batch_size = min(_validate.positive_int("batch_size", batch_size), x.shape[0])
    _validate.positive("learning_rate", learning_rate)
    chunk_size = _validate.positive_int("chunk_size", chunk_size)
    optimizer = optax.inject_hyperparams(optax.adam)(learning_rate=jnp.asarray(learning_rate, x.dtype))
    res = fit(
        _ReconstructionLoss(x, batch_size),
        autoencoder,
        optimizer,
        key,
        num_steps,
        progress=progress,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        chunk_size=chunk_size,
    )
    return res.model, res.trace.info["loss"]
