"""Density estimates on particles: Silverman's bandwidth, the exact Gaussian KDE and its O(n·m) subsample.

A weighted cloud {(xᵢ, wᵢ)} (Σ wᵢ = 1) in ℝᵈ has the isotropic Gaussian kernel density estimate

    ρ̂(y) = Σⱼ wⱼ N(y; xⱼ, δ² I) = (2πδ²)^{−d/2} Σⱼ wⱼ exp(−‖y − xⱼ‖² / (2δ²)),

with bandwidth δ > 0. The SHK sampler evaluates log ρ̂ at the particles themselves:

* :func:`kde_log_density` does it exactly, O(n²) time (in blocks of rows, so memory stays O(n·chunk));
* :func:`subsample_kde_log_density` does it against m ≪ n reference particles J₁, …, J_m drawn ∝ w
  (stratified) from the cloud, O(n·m) time and O(chunk·m) memory:

      ρ̃(y) = (1/m) Σₖ N(y; x_{Jₖ}, δ² I),   E[ρ̃(y) | cloud] = ρ̂(y)   (unbiased for the exact KDE).

Why this estimator. The reaction needs log ρ̂ at every particle, in any d, inside a jit-compiled step
whose randomness comes from the step's key. Subsampling the kernel centres works in any d, is exactly
unbiased for ρ̂ given the cloud, is positive (so log ρ̃ is always defined) and reuses the exact KDE's
blocked matmul. Its error is an m-sample KDE's: the relative variance at y is
(1/m)(Σⱼ wⱼKⱼ²/(Σⱼ wⱼKⱼ)² − 1) ≈ 1/(m ρ(y) (4πδ²)^{d/2}), so the bandwidth must suit m, not n (the
SHK sampler's Silverman rule uses min(n_eff, m)). Redrawn every step, the noise of log ρ̃ averages
out along the flow; what stays is the Jensen bias E log ρ̃ − log ρ̂ ≈ −(relative variance)/2, which is
largest in the sparse tails (tests/shk/test_shk_kde_scalable.py states it). The alternatives:

* random Fourier features estimate ρ̂ by an inner product φ(y)ᵀ Σⱼ wⱼ φ(xⱼ) whose error is of
  the order 1/√D in absolute terms: in the tails ρ̂ is below that error, the estimate is often
  negative and log ρ̂ undefined, exactly where the reaction acts most;
* linear binning on a grid with an FFT convolution is O(n + G log G) and very accurate, but only in
  d ≤ 3 (G grows like (range/δ)ᵈ); it would be the better choice for d ≤ 2 and could sit beside
  this one, but it does not reach d = 10;
* tree or fast-Gauss-transform summation is data-dependent control flow, which neither jit nor vmap
  handle well, and it also degrades with d.

Everything is pure JAX: jit- and vmap-safe. The exact KDE is differentiable in the positions, the
log-weights and the bandwidth; the subsample in the positions and the bandwidth (the draw of the
references is discrete).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
from jax.scipy.special import logsumexp

from . import _validate
from ._typing import Array, Float, PRNGKeyArray

__all__ = ["kde_log_density", "silverman_bandwidth", "subsample_kde_log_density"]


def _normalised_weights(logw: Array | None, n: int, dtype: Any) -> Array:
    if logw is None:
        return jnp.full((n,), 1.0 / n, dtype)
    return jnp.exp(logw - logsumexp(logw))


def silverman_bandwidth(
    x: Float[Array, "n ..."], logw: Float[Array, " n"] | None = None, *, max_sample_size: int | None = None
) -> Float[Array, ""]:
    """Silverman's rule for an isotropic Gaussian KDE: δ = (4/(d+2))^{1/(d+4)} n_eff^{−1/(d+4)} σ̂.

    σ̂² is the mean over coordinates of the weighted variance Σᵢ wᵢ (xᵢ − x̄)², and n_eff = 1/Σ wᵢ²
    the effective sample size (n for equal weights). Scale-equivariant: δ(cx) = |c| δ(x). A cloud of
    identical points gives δ = 0 (callers floor it). Differentiable in ``x`` and ``logw``.

    Args:
        x: positions ``(n, *event)``; the event axes are flattened to d coordinates.
        logw: optional log-weights (normalised here); uniform when ``None``.
        max_sample_size: optional cap m on n_eff (static): the rule for an estimator built on m
            kernel centres, such as :func:`subsample_kde_log_density` with ``num_reference=m``.

    Returns:
        The bandwidth δ ≥ 0, a scalar of ``x``'s dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[-1.0], [1.0]])
        >>> round(float(silverman_bandwidth(x)), 4)  # (4/3)^{1/5} · 2^{−1/5} · 1
        0.9221
    """
    n = x.shape[0]
    flat = x.reshape(n, -1)
    d = flat.shape[1]
    w = _normalised_weights(logw, n, flat.dtype).astype(flat.dtype)
    mean = w @ flat
    var = jnp.mean(w @ (flat - mean[None, :]) ** 2)
    n_eff = 1.0 / jnp.sum(w**2)
    if max_sample_size is not None:
        n_eff = jnp.minimum(n_eff, _validate.positive_int("max_sample_size", max_sample_size))
    factor = (4.0 / (d + 2)) ** (1.0 / (d + 4))
    return factor * n_eff ** (-1.0 / (d + 4)) * jnp.sqrt(var)


def kde_log_density(
    x: Float[Array, "n ..."],
    logw: Float[Array, " n"] | None = None,
    *,
    bandwidth: Any,
    chunk_size: int = 1024,
    leave_one_out: bool = False,
) -> Float[Array, " n"]:
    """Exact Gaussian-KDE log-density at every particle: log ρ̂(xᵢ) = log Σⱼ wⱼ N(xᵢ; xⱼ, δ² I).

    O(n²) time, O(n · chunk) memory: rows are processed ``chunk_size`` at a time (``lax.map``), so
    no n × n array is formed. Squared distances come from one matmul per block after centring the
    cloud (which keeps the ‖x‖² + ‖y‖² − 2⟨x, y⟩ form accurate in float32).

    With ``leave_one_out`` the particle's own kernel is left out and the rest renormalised:

        log Σ_{j≠i} wⱼ K(xᵢ − xⱼ) − log(1 − wᵢ).

    The self term wᵢ K(0) ∝ wᵢ δ^{−d} inflates the estimate most where particles are sparse (the
    tails), and it grows as δ shrinks.

    Differentiable in ``x``, ``logw`` and ``bandwidth``.

    Args:
        x: positions ``(n, *event)``.
        logw: log-weights, normalised (log Σ wⱼ = 0); uniform when ``None``.
        bandwidth: δ > 0 (a scalar; may be traced).
        chunk_size: rows per block (static).
        leave_one_out: drop each particle's own kernel (static).

    Returns:
        ``(n,)`` values of log ρ̂ at the particles.

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.zeros((3, 2))  # three coincident points: ρ̂(0) = N(0; 0, I)
        >>> bool(jnp.allclose(kde_log_density(x, bandwidth=1.0), -jnp.log(2 * jnp.pi)))
        True
    """
    n = x.shape[0]
    flat = x.reshape(n, -1)
    d = flat.shape[1]
    logw = jnp.full((n,), -jnp.log(jnp.asarray(n, flat.dtype))) if logw is None else logw
    flat = flat - jnp.mean(flat, axis=0, keepdims=True)
    delta = jnp.asarray(bandwidth, flat.dtype)
    loo = leave_one_out and n > 1
    cols = jnp.arange(n, dtype=jnp.int32)
    out = _blocked_log_kernel_sums(flat, flat, logw, cols if loo else None, delta, chunk_size)
    if loo:
        out = out - jnp.log1p(-jnp.exp(logw))
    return out - 0.5 * d * jnp.log(2.0 * jnp.pi * delta**2)


def _blocked_log_kernel_sums(
    rows: Array, cols: Array, col_logw: Array, col_index: Array | None, delta: Array, chunk_size: int
) -> Array:
    """Per row, log Σₖ exp(col_logwₖ − ‖rowᵢ − colₖ‖²/(2δ²)), computed ``chunk_size`` rows at a time.

    Squared distances come from one matmul per block (the caller centres both clouds, which keeps the
    ‖x‖² + ‖y‖² − 2⟨x, y⟩ form accurate in float32). With ``col_index`` (the particle index of each
    column) the terms whose column is the row's own particle are left out.
    """
    n, d = rows.shape
    sq = jnp.sum(rows**2, axis=1)
    col_sq = sq if cols is rows else jnp.sum(cols**2, axis=1)
    chunk = min(int(chunk_size), n)
    num_blocks = -(-n // chunk)
    pad = num_blocks * chunk - n
    blocks = jnp.pad(rows, ((0, pad), (0, 0))).reshape(num_blocks, chunk, d)
    block_sq = jnp.pad(sq, (0, pad)).reshape(num_blocks, chunk)
    starts = jnp.arange(num_blocks, dtype=jnp.int32) * chunk
    inv = 0.5 / delta**2

    def block(args):
        xb, sqb, start = args
        d2 = jnp.maximum(sqb[:, None] + col_sq[None, :] - 2.0 * (xb @ cols.T), 0.0)
        logits = col_logw[None, :] - inv * d2
        if col_index is not None:
            own = (start + jnp.arange(chunk, dtype=jnp.int32))[:, None] == col_index[None, :]
            logits = jnp.where(own, -jnp.inf, logits)
        return logsumexp(logits, axis=1)

    return jax.lax.map(block, (blocks, block_sq, starts)).reshape(-1)[:n]


def _stratified_indices(key: PRNGKeyArray, weights: Array, num: int) -> Array:
    """Jₖ = F⁻¹((k + uₖ)/m), uₖ iid U[0, 1), F the cumulative weights: Σₖ P(Jₖ = j) = m wⱼ.

    Stratified rather than systematic (one u for all k): a single offset picks every (n/m)-th index,
    which lines up with any periodic order of the cloud (a tiled cloud would give one tile only).
    """
    n = weights.shape[0]
    cdf = jnp.cumsum(weights / jnp.sum(weights))
    u = jr.uniform(key, (num,), dtype=weights.dtype)
    positions = (jnp.arange(num, dtype=weights.dtype) + u) / num
    # Round-off can leave cdf[-1] slightly below the last position: clamp to a valid index.
    return jnp.minimum(jnp.searchsorted(cdf, positions, side="right"), n - 1).astype(jnp.int32)


def subsample_kde_log_density(
    key: PRNGKeyArray,
    x: Float[Array, "n ..."],
    logw: Float[Array, " n"] | None = None,
    *,
    bandwidth: Any,
    num_reference: int,
    chunk_size: int = 1024,
    leave_one_out: bool = False,
) -> Float[Array, " n"]:
    """Gaussian-KDE log-density at every particle against m = ``num_reference`` reference particles.

    The references J₁, …, J_m are drawn ∝ w from the cloud by stratified sampling
    (Jₖ = F⁻¹((k + uₖ)/m), so Σₖ P(Jₖ = j) = m wⱼ) and

        ρ̃(xᵢ) = (1/m) Σₖ N(xᵢ; x_{Jₖ}, δ² I),   E[ρ̃(xᵢ)] = ρ̂(xᵢ) = Σⱼ wⱼ N(xᵢ; xⱼ, δ² I).

    With ``leave_one_out`` the references equal to i are dropped (a Horvitz–Thompson correction):

        ρ̃₋ᵢ(xᵢ) = Σₖ 1{Jₖ ≠ i} N(xᵢ; x_{Jₖ}, δ² I) / (m (1 − wᵢ)),   unbiased for Σ_{j≠i} wⱼ K / (1 − wᵢ),

    the estimate :func:`kde_log_density` computes exactly. With v = (1/m)(Σⱼ wⱼKⱼ²/(Σⱼ wⱼKⱼ)² − 1)
    the relative variance (for independent draws; stratified ones are no noisier), log ρ̃ − log ρ̂
    has standard deviation ≈ √v and mean ≈ −v/2, both largest where particles are sparse; choose δ
    for m centres (``silverman_bandwidth(x, logw, max_sample_size=m)``), not for n.

    O(n·m·d) time and O(``chunk_size`` · m) memory; with m ≥ n it costs more than the exact KDE and is
    noisier. Jit/vmap-safe; differentiable in ``x`` and ``bandwidth`` (the draw is discrete).

    Args:
        key: PRNG key of the reference draw (an SHK step folds it from its own key).
        x: positions ``(n, *event)``.
        logw: log-weights, normalised (log Σ wⱼ = 0); uniform when ``None``.
        bandwidth: δ > 0 (a scalar; may be traced).
        num_reference: m ≥ 1, the number of references (static: it sets the shapes).
        chunk_size: rows per block (static); a block holds ``chunk_size`` × m kernel values.
        leave_one_out: drop each particle's own kernel (static).

    Returns:
        ``(n,)`` values of log ρ̃ at the particles.

    Raises:
        ValueError: ``num_reference`` or ``chunk_size`` below 1, ``logw`` not of shape (n,), or a
            concrete ``bandwidth`` that is not > 0.
        TypeError: ``num_reference`` or ``chunk_size`` not an int.

    Example:
        >>> import jax.numpy as jnp, jax.random as jr
        >>> x = jr.normal(jr.key(0), (4000, 1))
        >>> exact = kde_log_density(x, bandwidth=0.5)
        >>> approx = subsample_kde_log_density(jr.key(1), x, bandwidth=0.5, num_reference=500)
        >>> bool(jnp.mean(jnp.abs(approx - exact)) < 0.1)  # E|error| ≈ √(2v/π) ≈ 0.04 on average
        True
    """
    m = _validate.positive_int("num_reference", num_reference)
    _validate.positive_int("chunk_size", chunk_size)
    _validate.positive("bandwidth", bandwidth)
    n = x.shape[0]
    flat = x.reshape(n, -1)
    d = flat.shape[1]
    if logw is not None and logw.shape != (n,):
        raise ValueError(f"logw must have shape ({n},) to match x, got {tuple(logw.shape)}")
    logw = jnp.full((n,), -jnp.log(jnp.asarray(n, flat.dtype))) if logw is None else logw.astype(flat.dtype)
    flat = flat - jnp.mean(flat, axis=0, keepdims=True)
    delta = jnp.asarray(bandwidth, flat.dtype)
    idx = _stratified_indices(key, jnp.exp(logw), m)
    loo = leave_one_out and n > 1
    col_logw = jnp.zeros((m,), flat.dtype)
    out = _blocked_log_kernel_sums(flat, flat[idx], col_logw, idx if loo else None, delta, chunk_size)
    if loo:
        out = out - jnp.log1p(-jnp.exp(logw))
    return out - jnp.log(jnp.asarray(m, flat.dtype)) - 0.5 * d * jnp.log(2.0 * jnp.pi * delta**2)
