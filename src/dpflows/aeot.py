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
and a scan over source chunks, so memory stays at ``chunk_elements`` floats whatever n is.
ott-jax's and POT's solvers are the cross-checks in the tests and the peers in ``bench_aeot.py``.

References:
    An, Guo, Lei, Luo, Yau & Gu (2020), "AE-OT: A new generative model based on extended semi-discrete
    optimal transport", ICLR. Mustafi (2021), "Convex Smoothed Autoencoder-Optimal Transport model",
    arXiv:2101.05679 (abstract; the smoothing here is reconstructed). Genevay, Cuturi, Peyré & Bach
    (2016), "Stochastic optimization for large-scale optimal transport" (the smoothed dual).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

from . import _validate
from ._typing import Array, Bool, Float, Int, PRNGKeyArray

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
class _Spec(NamedTuple):
    """Static solver settings (hashable: the compiled phase is cached per spec)."""

    source: str
    sampling: str
    batch_size: int
    chunk: int
    tol: float
    patience: int
    smoothed: bool


def _masses(x: Array, codes: Array, heights: Array, tau: Array, chunk: int, smoothed: bool) -> tuple[Array, Array]:
    """Cell masses (1/M)Σ_x 1[i*(x) = i] (or Σ_x sᵢ(x)) and the mean potential, in chunks of x."""
    n = codes.shape[0]
    xs = x.reshape(x.shape[0] // chunk, chunk, x.shape[1])

    def one(carry, xc):
        counts, u_sum = carry
        s = xc @ codes.T + heights[None, :]
        if smoothed:
            z = s / tau
            counts = counts + jnp.sum(jax.nn.softmax(z, axis=-1), axis=0)
            u_sum = u_sum + tau * jnp.sum(jax.nn.logsumexp(z, axis=-1))
        else:
            idx = jnp.argmax(s, axis=-1)
            counts = counts + jax.ops.segment_sum(jnp.ones(idx.shape, codes.dtype), idx, num_segments=n)
            u_sum = u_sum + jnp.sum(jnp.max(s, axis=-1))
        return (counts, u_sum), None

    init = (jnp.zeros((n,), codes.dtype), jnp.zeros((), codes.dtype))
    (counts, u_sum), _ = jax.lax.scan(one, init, xs)
    return counts / x.shape[0], u_sum / x.shape[0]


_masses_jit = eqx.filter_jit(_masses)  # chunk and smoothed are Python values: static


class _PhaseState(NamedTuple):
    heights: Array
    opt_state: Any
    best: Array
    since_best: Array
    error: Array
    converged: Array
    stalled: Array


def _draw(key: PRNGKeyArray, table: Array, spec: _Spec, d: int, dtype: Any) -> Array:
    if spec.sampling == "sobol":
        return _shifted(table, key, spec.source)
    return _map_source(jr.uniform(key, (spec.batch_size, d), dtype=dtype), spec.source, spec.batch_size)


@eqx.filter_jit
def _phase(state: _PhaseState, keys: Array, table: Array, codes: Array, weights: Array, tau: Array, lr: Array, spec):
    """Run Adam steps on h for each key until convergence or a stall; record error and dual value."""
    n = codes.shape[0]
    optimizer = optax.adam(lr)

    def live(st, key):
        x = _draw(key, table, spec, codes.shape[1], codes.dtype)
        masses, u_mean = _masses(x, codes, st.heights, tau, spec.chunk, spec.smoothed)
        grad = masses - weights
        error = n * jnp.max(jnp.abs(grad))
        dual = u_mean - jnp.dot(weights, st.heights)
        converged = error < spec.tol
        with jax.numpy_dtype_promotion("standard"):  # optax mixes int step counts with floats
            updates, opt_state = optimizer.update(grad, st.opt_state)
        h = st.heights + updates
        gnorm = jnp.linalg.norm(grad)
        since = jnp.where(gnorm < st.best, 0, st.since_best + 1)
        new = _PhaseState(
            heights=jnp.where(converged, st.heights, h - jnp.mean(h)),  # stop at the h that met tol
            opt_state=jax.tree.map(lambda a, b: jnp.where(converged, b, a), opt_state, st.opt_state),
            best=jnp.minimum(gnorm, st.best),
            since_best=since,
            error=error,
            converged=converged,
            stalled=~converged & (since >= spec.patience),
        )
        return new, (error, dual)

    def idle(st, key):  # the phase ended earlier in this block: no pass over the source
        nan = jnp.asarray(jnp.nan, codes.dtype)
        return st, (nan, nan)

    def body(st, key):
        return jax.lax.cond(st.converged | st.stalled, idle, live, st, key)

    return jax.lax.scan(body, state, keys)


class SemiDiscreteResult(eqx.Module):
    """What :meth:`SemiDiscreteOT.solve` returns.

    Attributes:
        codes: (n, d) the codes. weights: (n,) their masses ν.
        heights: (n,) the heights h (mean zero) of u_h(x) = maxᵢ⟨x, yᵢ⟩ + hᵢ.
        cell_masses: (n,) μ(Wᵢ(h)) (or E_μ[sᵢ] when ``tau > 0``) estimated on a fresh quasi-MC batch
            of ``evaluation_size`` points drawn after the solve (independent of the iterates).
        cell_mass_error: n·maxᵢ|cell_massesᵢ − νᵢ| on that batch (the §6c criterion, 1e-2 by default).
        converged: whether a training batch met ``tol`` (the fresh estimate is what to trust).
        num_iterations: Adam steps taken. batch_size: the final batch size (after doublings).
        errors, duals, batch_sizes: per iteration, n·max|ĝ|, the dual value E(h) and the batch size.
        noise_levels: at each stall, the measured noise of the criterion (see the solver).
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
    tau: float = eqx.field(static=True)
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


class SemiDiscreteOT(eqx.Module):
    """Semi-discrete OT from a continuous source to weighted codes: the heights of the Brenier potential.

    Minimises E(h) = ∫u_h dμ − Σνᵢhᵢ (hard, ``tau=0``: AE-OT) or the smoothed dual
    E_τ(h) = ∫u_{h,τ} dμ − Σνᵢhᵢ (``tau > 0``, entropic semi-discrete OT) by Adam on the estimated
    gradient ĝ = (cell masses on a batch of source points) − ν, then h ← h − mean(h) (§6c):

        repeat: x₁..x_M ~ μ (randomised Sobol);  ĝᵢ = #{x: i*(x) = i}/M − νᵢ;  h ← Adam(h, ĝ);  h −= mean h
        stop when n·maxᵢ|ĝᵢ| < tol;  if ‖ĝ‖ has not improved for ``patience`` steps (a stall):
            lr ← lr·lr_decay, and M ← 2M if the estimate's own noise exceeds tol/2

    AE-OT doubles M at every stall and keeps the rate. Two refinements of ours: (i) the rate decays
    at each stall (``lr_decay=1`` switches it off), because Adam's step does not shrink with the
    gradient, so at a fixed rate h keeps jittering by ~lr and caps the attainable accuracy; (ii) M
    doubles only when two independent estimates at the current h differ by more than tol/2 (noise is
    then the floor), so quasi-MC in low dimension does not pay for points it does not need. M never
    exceeds ``max_batch_size``. Source points are processed in chunks so that at most
    ``chunk_elements`` scores exist at once (memory O(chunk_elements + n d), any n).

    Args:
        codes: (n, d) codes yᵢ.
        weights: (n,) masses ν (positive, summing to 1); uniform if None.
        source: ``"uniform"`` ([0, 1]ᵈ, as AE-OT) or ``"gaussian"`` (N(0, I)).
        tau: 0 for the hard problem; τ > 0 optimises the smoothed dual directly.
        learning_rate: initial Adam rate; default 0.05·σ_μ·maxᵢ‖yᵢ − ȳ‖ (σ_μ the source's per-axis
            sd), a twentieth of the spread of the scores ⟨x, yᵢ⟩ over the source.
        batch_size: initial M (rounded up to a power of two). max_batch_size: cap on the doubling.
        tol: stop when n·maxᵢ|ĝᵢ| < tol (AE-OT: 1e-2, i.e. cell masses within 1e-2/n).
        max_iterations: Adam step budget. patience: stalled steps before doubling (AE-OT: 20).
        lr_decay: learning-rate factor at each stall, in (0, 1].
        sampling: ``"sobol"`` (randomised QMC, default) or ``"random"`` (i.i.d.).
        chunk_elements: scores held at once (source chunk × n).
        evaluation_size: points of the final fresh estimate (default: the final batch size).

    Example:
        >>> import jax.numpy as jnp, jax.random as jr
        >>> codes = jnp.linspace(0.0, 1.0, 4)[:, None]
        >>> res = SemiDiscreteOT(codes, batch_size=4096, tol=2e-2).solve(jr.key(0))
        >>> bool(res.cell_mass_error < 0.05), [round(float(m), 2) for m in res.cell_masses]
        (True, [0.25, 0.25, 0.25, 0.25])
    """

    codes: Float[Array, "n d"]
    weights: Float[Array, " n"]
    source: str = eqx.field(static=True)
    tau: float = eqx.field(static=True)
    learning_rate: float = eqx.field(static=True)
    batch_size: int = eqx.field(static=True)
    max_batch_size: int = eqx.field(static=True)
    tol: float = eqx.field(static=True)
    max_iterations: int = eqx.field(static=True)
    patience: int = eqx.field(static=True)
    lr_decay: float = eqx.field(static=True)
    sampling: str = eqx.field(static=True)
    chunk_elements: int = eqx.field(static=True)
    evaluation_size: int | None = eqx.field(static=True)

    def __init__(
        self,
        codes: Any,
        weights: Any = None,
        *,
        source: str = "uniform",
        tau: float = 0.0,
        learning_rate: float | None = None,
        batch_size: int = 2**14,
        max_batch_size: int = 2**20,
        tol: float = 1e-2,
        max_iterations: int = 5000,
        patience: int = 20,
        lr_decay: float = 0.5,
        sampling: str = "sobol",
        chunk_elements: int = 2**22,
        evaluation_size: int | None = None,
    ):
        """Validate the codes, weights and settings (see the class docstring)."""
        y = _validate.finite("codes", _validate.floating_array("codes", codes))
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
            total = float(jnp.sum(w))
            if abs(total - 1.0) > 1e-5:
                raise ValueError(f"weights must sum to 1, got {total:.6g} (normalise them: weights / weights.sum())")
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
            spread = float(jnp.max(jnp.linalg.norm(y - jnp.mean(y, axis=0, keepdims=True), axis=1)))
            learning_rate = 0.05 * sd * (spread if spread > 0 else 1.0)
        _validate.positive("learning_rate", learning_rate)
        self.codes, self.weights = y, w
        self.source, self.sampling, self.tau = source, sampling, float(tau)
        self.learning_rate = float(learning_rate)
        self.batch_size, self.max_batch_size = batch_size, max_batch_size
        self.tol, self.lr_decay = float(tol), float(lr_decay)
        self.max_iterations = _validate.positive_int("max_iterations", max_iterations)
        self.patience = _validate.positive_int("patience", patience)
        self.chunk_elements = _validate.positive_int("chunk_elements", chunk_elements)
        self.evaluation_size = (
            None if evaluation_size is None else _validate.positive_int("evaluation_size", evaluation_size)
        )

    def _spec(self, batch_size: int) -> _Spec:
        n = self.codes.shape[0]
        chunk = min(batch_size, 1 << max(0, int(math.log2(max(1, self.chunk_elements // n)))))
        return _Spec(self.source, self.sampling, batch_size, chunk, self.tol, self.patience, self.tau > 0)

    def cell_masses(self, key: PRNGKeyArray, heights: Any, num: int | None = None) -> Array:
        """Estimate μ(Wᵢ(h)) (or E_μ[sᵢ] when ``tau > 0``) on ``num`` fresh randomised-QMC source points."""
        y, h = _check_codes(self.codes, heights)
        num = _next_pow2(self.batch_size if num is None else _validate.positive_int("num", num))
        spec = self._spec(num)
        x = sample_source(key, num, y.shape[1], source=self.source, sampling=self.sampling, dtype=y.dtype)
        return _masses_jit(x, y, h, jnp.asarray(self.tau or 1.0, y.dtype), spec.chunk, spec.smoothed)[0]

    def _noise_level(self, key: PRNGKeyArray, heights: Array, num: int) -> float:
        """n·max|m̂ − m̂'|/√2 for two independent estimates on ``num`` points: the noise of ĝ's criterion."""
        k1, k2 = jr.split(key)
        diff = self.cell_masses(k1, heights, num) - self.cell_masses(k2, heights, num)
        return float(self.codes.shape[0] * jnp.max(jnp.abs(diff)) / math.sqrt(2.0))

    def solve(
        self, key: PRNGKeyArray, *, init: Any = None, progress: bool = False, steps_per_call: int = 200
    ) -> SemiDiscreteResult:
        """Run the solver (a Python loop over compiled blocks of ``steps_per_call`` Adam steps).

        Args:
            key: PRNG key (Sobol scrambling, random shifts, the final evaluation).
            init: initial heights (a warm start, e.g. a previous solution); zeros if None.
            progress: show a progress bar (tqdm) between compiled blocks.
            steps_per_call: Adam steps per compiled block (a new batch size compiles once more).

        Returns:
            :class:`SemiDiscreteResult`.
        """
        steps_per_call = _validate.positive_int("steps_per_call", steps_per_call)
        y, w = self.codes, self.weights
        h = jnp.zeros_like(w) if init is None else _check_codes(y, init)[1]
        h = _validate.finite("init", h - jnp.mean(h))
        tau = jnp.asarray(self.tau or 1.0, y.dtype)
        lr, m = self.learning_rate, self.batch_size
        k_eval, key = jr.split(key)
        errors, duals, sizes, noise_levels = [], [], [], []
        done = converged = False
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.max_iterations, desc="SemiDiscreteOT")
        while not done:
            spec = self._spec(m)
            k_table, key = jr.split(jr.fold_in(key, m))
            table = _sobol_table(k_table, m, y.shape[1], y.dtype) if self.sampling == "sobol" else jnp.zeros((1, 1))
            with jax.numpy_dtype_promotion("standard"):
                opt_state = optax.adam(lr).init(h)
            st = _PhaseState(h, opt_state, jnp.asarray(jnp.inf, y.dtype), jnp.asarray(0), jnp.asarray(jnp.inf, y.dtype),
                             jnp.asarray(False), jnp.asarray(False))  # fmt: skip
            while True:
                budget = self.max_iterations - len(errors)
                if budget <= 0:
                    done = True
                    break
                n_keys = min(steps_per_call, budget)
                keys = jr.split(jr.fold_in(key, len(errors)), steps_per_call)[:n_keys]
                st, (err, dual) = _phase(st, keys, table, y, w, tau, jnp.asarray(lr, y.dtype), spec)
                err, dual = np.asarray(err), np.asarray(dual)
                taken = int(np.sum(~np.isnan(err)))
                errors.extend(err[:taken].tolist())
                duals.extend(dual[:taken].tolist())
                sizes.extend([m] * taken)
                if bar is not None:
                    bar.update(taken)
                    bar.set_postfix(error=f"{float(st.error):.3g}", batch=m)
                if bool(st.converged):
                    done = converged = True
                    break
                if bool(st.stalled):
                    break
            h = st.heights
            if not done:  # stalled: a smaller rate, and more points if the estimate's noise is the floor
                k_noise, key = jr.split(key)
                noise = self._noise_level(k_noise, h, m)
                noise_levels.append(noise)
                if noise > 0.5 * self.tol:
                    m = min(2 * m, self.max_batch_size)
                lr *= self.lr_decay
        if bar is not None:
            bar.close()
        num_eval = self.evaluation_size or m
        masses = self.cell_masses(k_eval, h, num_eval)
        return SemiDiscreteResult(
            codes=y,
            weights=w,
            heights=h,
            cell_masses=masses,
            cell_mass_error=y.shape[0] * jnp.max(jnp.abs(masses - w)),
            converged=jnp.asarray(converged),
            num_iterations=len(errors),
            batch_size=m,
            errors=jnp.asarray(errors, y.dtype),
            duals=jnp.asarray(duals, y.dtype),
            batch_sizes=jnp.asarray(sizes, jnp.int32),
            noise_levels=jnp.asarray(noise_levels, y.dtype),
            tau=self.tau,
            source=self.source,
        )


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
class MLPAutoencoder(eqx.Module):
    """A small MLP autoencoder: encode ℝᴰ → ℝᵈ, decode ℝᵈ → ℝᴰ (sigmoid output for data in [0, 1]).

    ``normalize=True`` puts codes on the unit sphere (the sliced-flow pipeline's bounded latent).
    """

    encoder: eqx.nn.MLP
    decoder: eqx.nn.MLP
    latent_dim: int = eqx.field(static=True)
    normalize: bool = eqx.field(static=True)
    sigmoid: bool = eqx.field(static=True)

    def __init__(
        self,
        key: PRNGKeyArray,
        *,
        data_dim: int,
        latent_dim: int,
        width: int = 256,
        depth: int = 2,
        normalize: bool = False,
        sigmoid: bool = True,
    ):
        """Build the two MLPs (``depth`` hidden layers of ``width`` units, SiLU activations)."""
        data_dim = _validate.positive_int("data_dim", data_dim)
        self.latent_dim = _validate.positive_int("latent_dim", latent_dim)
        width = _validate.positive_int("width", width)
        depth = _validate.positive_int("depth", depth)
        k1, k2 = jr.split(key)
        self.encoder = eqx.nn.MLP(data_dim, latent_dim, width, depth, activation=jax.nn.silu, key=k1)
        self.decoder = eqx.nn.MLP(latent_dim, data_dim, width, depth, activation=jax.nn.silu, key=k2)
        self.normalize, self.sigmoid = bool(normalize), bool(sigmoid)

    def encode(self, x: Float[Array, " D"]) -> Float[Array, " d"]:
        """One code from one sample."""
        z = self.encoder(x)
        return z / jnp.maximum(jnp.linalg.norm(z), 1e-12) if self.normalize else z

    def decode(self, z: Float[Array, " d"]) -> Float[Array, " D"]:
        """One sample from one code."""
        out = self.decoder(z)
        return jax.nn.sigmoid(out) if self.sigmoid else out

    def __call__(self, x: Float[Array, " D"]) -> Float[Array, " D"]:
        """Reconstruction decode(encode(x))."""
        return self.decode(self.encode(x))


@eqx.filter_jit
def _ae_chunk(params, static, opt_state, keys, data, optimizer, batch_size):
    def one(carry, key):
        params, opt_state = carry
        batch = data[jr.choice(key, data.shape[0], (batch_size,), replace=False)]

        def loss_fn(p):
            model = eqx.combine(p, static)
            return jnp.mean((jax.vmap(model)(batch) - batch) ** 2)

        loss, grads = eqx.filter_value_and_grad(loss_fn)(params)
        with jax.numpy_dtype_promotion("standard"):  # optax mixes int step counts with floats
            updates, opt_state = optimizer.update(grads, opt_state, params)
        return (eqx.apply_updates(params, updates), opt_state), loss

    (params, opt_state), losses = jax.lax.scan(one, (params, opt_state), keys)
    return params, opt_state, losses


def train_autoencoder(
    autoencoder: MLPAutoencoder,
    data: Any,
    *,
    key: PRNGKeyArray,
    num_steps: int,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    progress: bool = False,
    chunk_size: int = 500,
) -> tuple[MLPAutoencoder, Array]:
    """Fit an autoencoder by Adam on the mean squared reconstruction error; returns (model, losses).

    Args:
        autoencoder: e.g. :class:`MLPAutoencoder`.
        data: (N, D) training samples.
        key: PRNG key for the minibatches.
        num_steps: Adam steps.
        batch_size: samples per step (capped at N; drawn without replacement).
        learning_rate: Adam's rate.
        progress: show a progress bar between compiled chunks.
        chunk_size: steps per compiled ``lax.scan`` chunk.
    """
    x = _validate.finite("data", _validate.floating_array("data", data))
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"data must have shape (N, D) with N >= 1, got {x.shape}")
    num_steps = _validate.positive_int("num_steps", num_steps)
    batch_size = min(_validate.positive_int("batch_size", batch_size), x.shape[0])
    _validate.positive("learning_rate", learning_rate)
    chunk_size = _validate.positive_int("chunk_size", chunk_size)
    optimizer = optax.adam(learning_rate)
    params, static = eqx.partition(autoencoder, eqx.is_inexact_array)
    with jax.numpy_dtype_promotion("standard"):
        opt_state = optimizer.init(params)
    keys = jr.split(key, num_steps)
    losses = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=num_steps, desc="train_autoencoder")
    for start in range(0, num_steps, chunk_size):
        chunk = keys[start : start + chunk_size]
        params, opt_state, loss = _ae_chunk(params, static, opt_state, chunk, x, optimizer, batch_size)
        losses.append(loss)
        if bar is not None:
            bar.update(chunk.shape[0])
            bar.set_postfix(loss=f"{float(loss[-1]):.4g}")
    if bar is not None:
        bar.close()
    return eqx.combine(params, static), jnp.concatenate(losses)
