"""Regularised Muon: the smoothed polar map, an optax transform and the mean-field Hamiltonian flow.

Idealised Muon moves a matrix parameter along polar(M) = UVᵀ of its momentum M = UΣVᵀ, a subgradient
of the nuclear norm ‖M‖_* = Σᵢ σᵢ. Regularised Muon replaces ‖·‖_* by a smooth convex φ_ε and moves
along the mirror map ∇φ_ε(M). Three kinetic energies (``kind``), all functions of the singular
values, all with ``‖∇φ_ε(M)‖_op ≤ 1`` except the last:

    "sqrt"       φ_ε(M) = Σᵢ (√(σᵢ² + ε²) − ε),   ∇φ_ε(M) = M (MᵀM + ε²I)^{-1/2} = U diag(σ/√(σ²+ε²)) Vᵀ
    "huber"      φ_ε(M) = Σᵢ h_ε(σᵢ),              ∇φ_ε(M) = U diag(min(σ/ε, 1)) Vᵀ
                 (h_ε(σ) = σ²/(2ε) for σ ≤ ε, σ − ε/2 otherwise: Nesterov's quadratic-prox smoothing)
    "quadratic"  φ_ε(M) = ‖M‖_F² / (2ε),           ∇φ_ε(M) = M / ε   (heavy-ball momentum, the ε → ∞ limit)

**Default: "sqrt".** The paper's abstract calls the smoothing "analytic"; only "sqrt" is analytic
(real-analytic in M, smooth through rank deficiency), "huber" is C¹ with a kink at σ = ε. Which
one the paper uses is not known (METHODS.md §3h); both are supported. As ε → 0 both tend to polar(M);
as ε → ∞, ε∇φ_ε(M) → M for "sqrt".

**Scaling convention.** ε is measured in units of the *h-scaled* accumulator M_{k+1} = (1 − γh)M_k +
h∇𝓛(W_k) (METHODS.md §3c), whose fixed point under a constant gradient g is g/γ. In Keller Jordan's
unnormalised form B = M/h the same smoothing is ε/h.

Computation of the map (``method``). Every path transposes a wide M (it works on the smaller
side, q = min(p, q)) and first scales M by s = ‖M‖_F (overflow-safe; the map is invariant under
(M, ε) → (M/s, ε/s)), so every intermediate is O(1):

    "eigh"    (default) eigendecomposition of the q × q Gram M̃ᵀM̃ (eigenvalues clamped ≥ 0):
              M̃ V diag((λ + ε̃²)^{-1/2}) Vᵀ; one Gram, one q × q eigh and two matmuls
    "svd"     the SVD of M: the accurate reference, slow on CPU
    "newton"  matmul-only: the polar factor of the augmented matrix A = [M̃; ε̃I] is
              [M̃(M̃ᵀM̃+ε̃²I)^{-1/2}; ε̃(M̃ᵀM̃+ε̃²I)^{-1/2}], whose top block is the "sqrt" map. It runs
              Newton–Schulz on A/‖A‖_F itself (not on the Gram: so its round-off grows like that of
              the SVD), with odd-quintic steps designed by greedy minimax composition (Polar Express)
              for normalised singular values in [NEWTON_LOWER, 1] = [1e-3, 1], then classic quintic
              steps. "sqrt" and "quadratic" only.

**Accuracy** (:func:`regularized_polar_error_bound`; tested by a property test over shapes, ranks
0…q, spectra, ε ∈ [1e-4, 10]·‖M‖_op, batches and float32/float64 against a float64 SVD). With u the
dtype's unit round-off (1.2e-7 float32, 2.2e-16 float64), ρ = ‖M‖_F/ε and r = max(p, q), in
operator norm against the exact map of the (rounded) input:

    svd     ‖X − X*‖ ≤ SVD_ERROR_CONSTANT · u · (r + ρ)      (the map's condition number is ~‖M‖/ε)
    newton  ‖X − X*‖ ≤ NEWTON_ERROR_CONSTANT · u · (r + ρ) + 2 × the schedule's design error
            (design error 2e-8 for the default 7 steps), where ε̃/√(1 + qε̃²) ≥ NEWTON_LOWER, ε̃ = ε/‖M‖_F
    eigh    ‖X − X*‖ ≤ GRAM_ERROR_CONSTANT · u · (r + ρ²)    (forming MᵀM squares the condition number),
            where that is ≤ GRAM_TOLERANCE_FACTOR · √u (≈ 1e-3 in float32, 4.5e-8 in float64)

Outside its range a path **falls back automatically**, per matrix: "eigh" to "newton", then to the
SVD; "newton" to the SVD ("huber" goes from "eigh" straight to the SVD). Each fallback is a
``lax.cond`` on "any matrix of the batch needs it", so the fast path costs nothing extra when none
does (under ``jax.vmap`` a cond turns into a select and every branch runs: pass batches as leading
axes). In float32 "eigh" itself serves ε ≳ ‖M‖_F/60 and "newton" ε ≥ 1e-3‖M‖_F; in float64 "eigh"
serves ε ≳ 1e-4‖M‖_F. So every path returns the map within its stated bound, with
‖X‖_op ≤ 1 + bound ("sqrt" and "huber"), never a silently wrong matrix. (Before issue 20, float32
"newton" on wide low-rank matrices returned ‖X‖_op up to 1e3, and both Gram paths lost up to 0.5 at
ε = 1e-3‖M‖ in float32.) NaN/inf input: ``ValueError`` naming ``m`` when concrete, NaN output under
``jit`` (:func:`regularized_polar`).

References:
    Mustafi, Mukherjee & Sriperumbudur (2026), "Move on Muon: A Hamiltonian probability gradient flow
    perspective of Muon optimizer", arXiv:2605.23871 (abstract; the rest is reconstructed, METHODS.md §3).
    Jordan et al. (2024), Muon. Amsel et al. (2025), "The Polar Express", arXiv:2505.16932.
"""

from __future__ import annotations

import abc
import functools
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import _validate
from ._typing import Array, Float, Info, PRNGKeyArray, PyTreeAny
from .flow import AbstractFlow
from .particles import Particles

__all__ = [
    "KINDS",
    "METHODS",
    "AbstractMeanFieldObjective",
    "MeanFieldObjective",
    "MixtureOfExperts",
    "MuonMeanFieldFlow",
    "RegularizedMuonState",
    "TwoLayerNetwork",
    "inverse_regularized_polar",
    "newton_coefficients",
    "operator_norm",
    "regularized_muon",
    "regularized_polar",
    "regularized_polar_error_bound",
    "scale_by_regularized_muon",
    "smoothed_nuclear_norm",
    "smoothed_nuclear_norm_conjugate",
]

KINDS = ("sqrt", "huber", "quadratic")
METHODS = ("eigh", "svd", "newton")

# Odd quintics p(x) = a x + b x³ + c x⁵ for the "newton" path: greedy minimax composition for
# singular values in [1e-3, 1], each interval widened by 1 % (scripts/muon_coefficients.py prints
# this table). After the designed steps, the classic quintic (15x − 10x³ + 3x⁵)/8 (p(1) = 1,
# p'(1) = p''(1) = 0: cubic convergence) refines further.
_NEWTON_COEFFS = (
    (8.3822454843, -24.3298299688, 17.6828673680),  # image [8.298e-03, 1.991702]
    (4.1256733594, -2.9782431665, 0.5401572832),  # image [3.389e-02, 1.966108]
    (3.9403502116, -2.8805409476, 0.5375798463),  # image [1.321e-01, 1.867896]
    (3.3148113081, -2.4430353520, 0.4905042044),  # image [4.281e-01, 1.571926]
    (2.3226789879, -1.6710058945, 0.4101033768),  # image [8.628e-01, 1.137244]
    (1.8956034926, -1.2703112312, 0.3749836271),  # image [9.980e-01, 1.002001]
)
_CLASSIC_QUINTIC = (15.0 / 8.0, -10.0 / 8.0, 3.0 / 8.0)
NEWTON_LOWER = 1e-3  # the design bound on ε / ‖MᵀM + ε²I‖_F^{1/2}
DEFAULT_NEWTON_ITERATIONS = 7


def newton_coefficients(num_iterations: int) -> tuple[tuple[float, float, float], ...]:
    """The quintic schedule used by ``method="newton"`` with ``num_iterations`` steps."""
    num_iterations = _validate.positive_int("num_iterations", num_iterations)
    extra = max(0, num_iterations - len(_NEWTON_COEFFS))
    return (_NEWTON_COEFFS + (_CLASSIC_QUINTIC,) * extra)[:num_iterations]


# ------------------------------------------------------------------------------- validation
def _check_kind_method(kind: str, method: str) -> None:
    _validate.one_of("kind", kind, KINDS)
    _validate.one_of("method", method, METHODS)
    if method == "newton" and kind == "huber":
        raise ValueError(
            'method="newton" supports kind "sqrt" and "quadratic" only (min(σ/ε, 1) has no smooth '
            'matmul-only iteration); use method="eigh" or "svd" for kind="huber"'
        )


def _check_matrix(name: str, m: Any) -> jax.Array:
    m = _validate.floating_array(name, m)
    if m.ndim < 2 or 0 in m.shape[-2:]:
        raise ValueError(f"{name} must be a (..., p, q) array of non-empty matrices, got shape {m.shape}")
    return m


def _check_eps(eps: Any, m: jax.Array) -> jax.Array:
    """ε as an array of the leading (batch) shape of ``m`` and its dtype."""
    _validate.positive("eps", eps)
    eps = jnp.asarray(eps)
    try:
        return jnp.broadcast_to(eps, m.shape[:-2]).astype(m.dtype)
    except ValueError as err:
        raise ValueError(
            f"eps must be a scalar or broadcast to the leading axes {m.shape[:-2]} of the matrices, "
            f"got shape {eps.shape}"
        ) from err


def _mT(a: jax.Array) -> jax.Array:
    return jnp.swapaxes(a, -1, -2)


def _gram(m: jax.Array) -> tuple[jax.Array, bool]:
    """The smaller Gram matrix of ``m`` and whether it is MᵀM (tall or square m)."""
    tall = m.shape[-2] >= m.shape[-1]
    return (_mT(m) @ m if tall else m @ _mT(m)), tall


def _squared_singular_values(m: jax.Array, method: str) -> jax.Array:
    """σᵢ² of each matrix (min(p, q) of them), from the Gram eigenvalues or the SVD."""
    if method == "svd":
        return jnp.linalg.svd(m, compute_uv=False) ** 2
    gram, _ = _gram(m)
    return jnp.maximum(jnp.linalg.eigvalsh(gram), 0.0)


# --------------------------------------------------------------------------- the smoothed norm
def smoothed_nuclear_norm(m: Any, eps: Any, kind: str = "sqrt", *, method: str = "eigh") -> Array:
    """φ_ε(M), the smoothed nuclear norm (module docstring), over the last two axes.

    Differentiable: ``jax.grad`` of it is :func:`regularized_polar` (tested, including at
    rank-deficient M, where "sqrt" is smooth).

    Args:
        m: (..., p, q) matrices.
        eps: ε > 0 (a scalar or broadcastable to the leading axes).
        kind: "sqrt" (default), "huber" or "quadratic".
        method: "eigh" (Gram eigenvalues) or "svd" (singular values); "newton" is treated as "eigh".

    Returns:
        (...,) values; φ_ε(0) = 0.

    Example:
        >>> import jax.numpy as jnp
        >>> float(smoothed_nuclear_norm(jnp.diag(jnp.array([3.0, 4.0])), 4.0))  # (5 − 4) + (√32 − 4)
        2.656854...
    """
    _check_kind_method(kind, "eigh" if method == "newton" else method)
    m = _check_matrix("m", m)
    eps = _check_eps(eps, m)
    if kind == "quadratic":
        return jnp.sum(m**2, axis=(-2, -1)) / (2 * eps)
    lam = _squared_singular_values(m, "svd" if method == "svd" else "eigh")
    e = eps[..., None]
    if kind == "sqrt":
        return jnp.sum(lam / (jnp.sqrt(lam + e**2) + e), axis=-1)  # √(σ²+ε²) − ε without cancellation
    sigma = jnp.sqrt(jnp.where(lam > e**2, lam, e**2))  # safe sqrt: the branch below never uses σ ≤ ε
    return jnp.sum(jnp.where(lam <= e**2, lam / (2 * e), sigma - e / 2), axis=-1)


def smoothed_nuclear_norm_conjugate(o: Any, eps: Any, kind: str = "sqrt") -> Array:
    """φ_ε*(O), the Fenchel conjugate, finite on the unit operator-norm ball (all ``O`` for "quadratic").

        "sqrt":       φ_ε*(O) = ε Σᵢ (1 − √(1 − sᵢ²))     (sᵢ the singular values of O)
        "huber":      φ_ε*(O) = (ε/2) ‖O‖_F²              (‖O‖_op ≤ 1)
        "quadratic":  φ_ε*(O) = (ε/2) ‖O‖_F²

    Outside the ball it returns NaN ("sqrt") or the formula ("huber"); the conjugate is +∞ there.
    Fenchel–Young holds with equality at O = ∇φ_ε(M): φ_ε(M) + φ_ε*(O) = ⟨M, O⟩.
    """
    _validate.one_of("kind", kind, KINDS)
    o = _check_matrix("o", o)
    eps = _check_eps(eps, o)
    if kind != "sqrt":
        return eps / 2 * jnp.sum(o**2, axis=(-2, -1))
    s2 = _squared_singular_values(o, "eigh")
    return eps * jnp.sum(s2 / (1 + jnp.sqrt(1 - s2)), axis=-1)  # 1 − √(1 − s²) without cancellation


# ------------------------------------------------------------------------------------ the map
def _gram_function(m: jax.Array, fn: Callable[[jax.Array], jax.Array]) -> jax.Array:
    """M · fn(MᵀM) (= fn(MMᵀ) · M) through the smaller Gram's eigendecomposition."""
    gram, tall = _gram(m)
    lam, vec = jnp.linalg.eigh(gram)
    mid = (vec * fn(jnp.maximum(lam, 0.0))[..., None, :]) @ _mT(vec)
    return m @ mid if tall else mid @ m


# Documented accuracy: module docstring, "Accuracy". The constants are calibrated with a safety
# margin by tests/muon/test_muon_accuracy.py (float64 SVD reference over shapes, ranks, spectra, ε).
SVD_ERROR_CONSTANT = 8.0
NEWTON_ERROR_CONSTANT = 8.0
GRAM_ERROR_CONSTANT = 2.0
GRAM_TOLERANCE_FACTOR = 3.0


def _design_error(num_iterations: int) -> float:
    """The largest |1 − p(x)| over the design range of the ``num_iterations``-step Newton schedule."""
    return _DESIGN_ERRORS.setdefault(num_iterations, _composite_error(newton_coefficients(num_iterations)))


def _composite_error(coeffs: tuple[tuple[float, float, float], ...]) -> float:
    x = np.geomspace(NEWTON_LOWER, 1.0, 20001)
    for a, b, c in coeffs:
        x = a * x + b * x**3 + c * x**5
    return float(np.max(np.abs(x - 1.0)))


_DESIGN_ERRORS: dict[int, float] = {}


def _as_tall(m: jax.Array) -> tuple[jax.Array, bool]:
    """``m`` with at least as many rows as columns (transposed if wide) and whether it was wide."""
    wide = m.shape[-2] < m.shape[-1]
    return (_mT(m) if wide else m), wide


def _scaled(m: jax.Array, eps: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(M/s, ε/s, s) with s = ‖M‖_F (computed without overflow; s = 1 for M = 0)."""
    amax = jnp.max(jnp.abs(m), axis=(-2, -1))
    safe = jnp.where(amax > 0, amax, 1.0)
    s = safe * jnp.sqrt(jnp.sum((m / safe[..., None, None]) ** 2, axis=(-2, -1)))
    s = jnp.where(amax > 0, s, 1.0)
    return m / s[..., None, None], eps / s, s


def _eigh_map(mt: jax.Array, e: jax.Array, kind: str) -> jax.Array:
    """M̃ · f(M̃ᵀM̃) for tall scaled M̃ via the Gram eigendecomposition."""
    lam, vec = jnp.linalg.eigh(_mT(mt) @ mt)
    lam = jnp.maximum(lam, 0.0)
    ee = e[..., None]
    den = jnp.sqrt(lam + ee**2) if kind == "sqrt" else jnp.maximum(jnp.sqrt(lam), ee)
    f = jnp.where(den > 0, 1.0 / jnp.where(den > 0, den, 1.0), 0.0)  # den = 0 only on M's null space
    return mt @ ((vec * f[..., None, :]) @ _mT(vec))


def _svd_map(mt: jax.Array, e: jax.Array, kind: str) -> jax.Array:
    """U diag(f(σ)) Vᵀ from the SVD (the accurate reference)."""
    u, s, vt = jnp.linalg.svd(mt, full_matrices=False)
    ee = e[..., None]
    if kind == "sqrt":
        den = jnp.sqrt(s**2 + ee**2)
        f = jnp.where(den > 0, s / jnp.where(den > 0, den, 1.0), 0.0)
    else:
        f = jnp.where(s > 0, jnp.minimum(s / jnp.where(s > 0, ee, 1.0), 1.0), 0.0)
    return (u * f[..., None, :]) @ vt


def _newton_map(mt: jax.Array, e: jax.Array, num_iterations: int) -> tuple[jax.Array, jax.Array]:
    """M̃ (M̃ᵀM̃ + ẽ²I)^{-1/2} with matmuls only, and the normalised ε (for the design-range check).

    Newton–Schulz on the augmented matrix itself: Q₀ = [M̃; ẽI]/c with c² = ‖[M̃; ẽI]‖_F² = 1 + qẽ²
    (M̃ has unit Frobenius norm), so its singular values √(σ̃ᵢ² + ẽ²)/c lie in [ẽ/c, 1]. Each step
    Q ← Q·P(QᵀQ), P(S) = aI + bS + cS², with QᵀQ = XᵀX + YᵀY for the blocks Q = [X; Y] (X p × q, Y q × q),
    keeps the polar factor and maps every singular value x to p(x) (module docstring). Iterating on
    Q rather than on the Gram keeps the round-off of each step at u·‖Q‖, so the float error grows like
    u·(‖M‖_F/ε) (as for the SVD), not like u·(‖M‖_F/ε)². The top block is the map. Cost per step: two
    p × q × q matmuls and three q × q × q.
    """
    q = mt.shape[-1]
    c = jnp.sqrt(1.0 + q * e**2)
    x = mt / c[..., None, None]
    eye = jnp.broadcast_to(jnp.eye(q, dtype=mt.dtype), x.shape[:-2] + (q, q))
    y = (e / c)[..., None, None] * eye
    for a, b, cc in newton_coefficients(num_iterations):
        gram = _mT(x) @ x + _mT(y) @ y
        p = a * eye + b * gram + cc * (gram @ gram)
        x, y = x @ p, y @ p
    return x, e / c


class _Plan(NamedTuple):
    """The scaled tall problem, which path serves each matrix, and its documented error bound."""

    mt: jax.Array  # M/‖M‖_F, transposed if wide: (..., p, q) with p ≥ q
    e: jax.Array  # ε/‖M‖_F: (...,)
    wide: bool
    finite: jax.Array  # M and ε finite
    gram_ok: jax.Array  # the "eigh" bound is within GRAM_TOLERANCE_FACTOR·√u
    newton_ok: jax.Array  # the normalised ε is in the Newton design range
    bound: jax.Array  # the documented operator-norm error bound of the path actually taken


def _plan(m: jax.Array, eps: jax.Array, kind: str, method: str, num_iterations: int) -> _Plan:
    tall, wide = _as_tall(m)
    mt, e, _ = _scaled(tall, eps)
    q = mt.shape[-1]
    finite = jnp.all(jnp.isfinite(m), axis=(-2, -1)) & jnp.isfinite(e)
    u = float(jnp.finfo(m.dtype).eps)
    rho = 1.0 / e  # ‖M‖_F / ε
    floor = float(max(m.shape[-2:]))  # accumulation round-off of the matmuls (sums of max(p, q) terms)
    svd_bound = SVD_ERROR_CONSTANT * u * (floor + rho)
    newton_bound = NEWTON_ERROR_CONSTANT * u * (floor + rho) + 2.0 * _design_error(num_iterations)
    gram_bound = GRAM_ERROR_CONSTANT * u * (floor + rho**2)
    # the normalised smallest singular value of the Newton start [M̃; ε̃I]/√(1 + qε̃²)
    never = jnp.zeros(e.shape, bool)
    newton_ok = e / jnp.sqrt(1.0 + q * e**2) >= NEWTON_LOWER if kind == "sqrt" else never
    gram_ok = gram_bound <= GRAM_TOLERANCE_FACTOR * math.sqrt(u) if method == "eigh" else never
    if method == "svd":
        bound = svd_bound
    elif method == "newton":
        bound = jnp.where(newton_ok, newton_bound, svd_bound)
    else:
        bound = jnp.where(gram_ok, gram_bound, jnp.where(newton_ok, newton_bound, svd_bound))
    return _Plan(mt, e, wide, finite, gram_ok, newton_ok, bound)


def _compute(plan: _Plan, kind: str, method: str, num_iterations: int) -> jax.Array:
    """The map along the plan: eigh where ``gram_ok``, else Newton where ``newton_ok``, else the SVD.

    Each fallback is a ``lax.cond`` on "any finite matrix of the batch needs it", so a path that no
    matrix needs is not evaluated (under ``vmap`` a cond becomes a select and both run).
    """
    mt, e, finite = plan.mt, plan.e, plan.finite

    def svd_rest(best: jax.Array, served: jax.Array) -> jax.Array:
        return jax.lax.cond(
            jnp.any(finite & ~served),
            lambda: jnp.where(served[..., None, None], best, _svd_map(mt, e, kind)),
            lambda: best,
        )

    def newton_rest(best: jax.Array, served: jax.Array) -> jax.Array:
        def fill():
            newton = _newton_map(mt, e, num_iterations)[0]
            return jnp.where(served[..., None, None], best, jnp.where(plan.newton_ok[..., None, None], newton, best))

        filled = jax.lax.cond(jnp.any(finite & ~served & plan.newton_ok), fill, lambda: best)
        return svd_rest(filled, served | plan.newton_ok)

    if method == "svd":
        out = _svd_map(mt, e, kind)
    elif method == "newton":
        out = svd_rest(_newton_map(mt, e, num_iterations)[0], plan.newton_ok)
    else:
        # The Gram range is known from ‖M‖_F/ε before any decomposition: skip eigh when no matrix is in it.
        fast = jax.lax.cond(
            jnp.any(finite & plan.gram_ok), lambda: _eigh_map(mt, e, kind), lambda: jnp.zeros(mt.shape, mt.dtype)
        )
        out = jax.lax.cond(jnp.any(finite & ~plan.gram_ok), lambda: newton_rest(fast, plan.gram_ok), lambda: fast)
    out = jnp.where(finite[..., None, None], out, jnp.nan)  # NaN/inf in: NaN out (documented)
    return _mT(out) if plan.wide else out


def _polar(m: jax.Array, eps: jax.Array, kind: str, method: str, num_iterations: int) -> jax.Array:
    return _compute(_plan(m, eps, kind, method, num_iterations), kind, method, num_iterations)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def _sqrt_map(m: jax.Array, eps: jax.Array, method: str, num_iterations: int) -> jax.Array:
    return _polar(m, eps, "sqrt", method, num_iterations)


@_sqrt_map.defjvp
def _sqrt_map_jvp(method, num_iterations, primals, tangents):
    """The tangent dX = dM K + M dK, K = A^{-1/2}, A = MᵀM + ε²I, in A's eigenbasis (Daleckii–Krein).

    dK = V [ −(Vᵀ dA V)ᵢⱼ / (hᵢ hⱼ (hᵢ + hⱼ)) ] Vᵀ with hᵢ = √(λᵢ + ε²) ≥ ε > 0: finite for every M,
    including rank-deficient and zero M, where the eigenvector derivative of ``eigh`` is not.
    """
    m, eps = primals
    dm, deps = tangents
    out = _sqrt_map(m, eps, method, num_iterations)
    tall, wide = _as_tall(m)
    dtall = _mT(dm) if wide else dm
    mt, e, s = _scaled(tall, eps)
    dmt, de = dtall / s[..., None, None], deps / s
    lam, vec = jnp.linalg.eigh(_mT(mt) @ mt)
    h = jnp.sqrt(jnp.maximum(lam, 0.0) + (e**2)[..., None])
    k = (vec / h[..., None, :]) @ _mT(vec)
    q = mt.shape[-1]
    eye = jnp.broadcast_to(jnp.eye(q, dtype=mt.dtype), mt.shape[:-2] + (q, q))
    da = _mT(dmt) @ mt + _mT(mt) @ dmt + (2 * e * de)[..., None, None] * eye
    da_eig = _mT(vec) @ da @ vec
    dk = vec @ (-da_eig / (h[..., :, None] * h[..., None, :] * (h[..., :, None] + h[..., None, :]))) @ _mT(vec)
    dout = dmt @ k + mt @ dk
    dout = _mT(dout) if wide else dout
    return out, dout


def regularized_polar(
    m: Any,
    eps: Any,
    kind: str = "sqrt",
    *,
    method: str = "eigh",
    num_iterations: int = DEFAULT_NEWTON_ITERATIONS,
) -> Array:
    """∇φ_ε(M), the regularised polar factor (module docstring), over the last two axes.

        "sqrt":       M (MᵀM + ε²I)^{-1/2} = U diag(σ/√(σ² + ε²)) Vᵀ     (‖·‖_op < 1)
        "huber":      U diag(min(σ/ε, 1)) Vᵀ                             (‖·‖_op ≤ 1)
        "quadratic":  M / ε

    Every path works on the smaller side (a wide M is transposed), scales M by ‖M‖_F, and meets the
    error bound of :func:`regularized_polar_error_bound` in operator norm against the exact map
    (module docstring, "Accuracy"): a matrix outside a path's accurate range falls back
    automatically (eigh → newton → svd; ``lax.cond`` on "any matrix of the batch needs it": under
    ``jax.vmap`` the cond becomes a select and every branch is evaluated, so pass batches as leading
    axes). So ‖·‖_op ≤ 1 + bound for "sqrt" and "huber".

    Differentiable in ``m`` and ``eps``: "sqrt" has a custom JVP (Daleckii–Krein in the eigenbasis of
    MᵀM + ε²I) that is finite everywhere, including zero and rank-deficient M; "huber" differentiates
    through ``eigh``/``svd``.

    NaN/inf: a concrete ``m`` with NaN/inf entries raises ``ValueError`` naming ``m``; under
    ``jit``/``vmap`` the check is not raised (it would stop a whole sweep for one diverged member):
    a matrix with a non-finite entry maps to all-NaN, so the failure propagates visibly.

    Args:
        m: (..., p, q) matrices (the momentum).
        eps: ε > 0 (a scalar or broadcastable to the leading axes).
        kind: "sqrt" (default), "huber" or "quadratic".
        method: "eigh" (default), "svd" or "newton" (matmul-only; "sqrt"/"quadratic").
        num_iterations: quintic steps of the "newton" path (default 7: design error 2e-8).

    Returns:
        (..., p, q) array.

    Raises:
        ValueError: unknown ``kind``/``method``, ``eps`` ≤ 0, empty or non-matrix ``m``, concrete
            ``m`` with NaN/inf entries.

    Example:
        >>> import jax.numpy as jnp
        >>> x = regularized_polar(jnp.diag(jnp.array([3.0, 0.0])), 4.0)  # 3/5 and 0
        >>> [[round(float(v), 6) for v in row] for row in x]
        [[0.6, 0.0], [0.0, 0.0]]
    """
    _check_kind_method(kind, method)
    m = _check_matrix("m", m)
    eps = _check_eps(eps, m)
    if _validate.is_concrete(m):
        _validate.finite("m", m)
    if kind == "quadratic":
        return m / eps[..., None, None]
    num_iterations = _validate.positive_int("num_iterations", num_iterations)
    if kind == "sqrt":
        return _sqrt_map_jit(m, eps, method, num_iterations)
    return _polar_jit(m, eps, kind, method, num_iterations)


# Compiled once per (shape, dtype, kind, method, num_iterations): called eagerly, the fallback conds
# would otherwise be re-traced on every call (~0.7 s per call on CPU); inside a jit these inline.
_sqrt_map_jit = jax.jit(_sqrt_map, static_argnums=(2, 3))
_polar_jit = jax.jit(_polar, static_argnums=(2, 3, 4))


def regularized_polar_error_bound(
    m: Any,
    eps: Any,
    kind: str = "sqrt",
    *,
    method: str = "eigh",
    num_iterations: int = DEFAULT_NEWTON_ITERATIONS,
) -> Array:
    """The documented operator-norm error bound of :func:`regularized_polar` for each matrix.

    With u = ``jnp.finfo(m.dtype).eps``, ρ = ‖M‖_F/ε and r = max(p, q), for the path that serves
    the matrix (module docstring, "Accuracy"):

        svd:     SVD_ERROR_CONSTANT · u · (r + ρ)
        newton:  NEWTON_ERROR_CONSTANT · u · (r + ρ) + 2 × the schedule's design error
                 (used where ε̃/√(1 + qε̃²) ≥ NEWTON_LOWER, ε̃ = ε/‖M‖_F; else the SVD)
        eigh:    GRAM_ERROR_CONSTANT · u · (r + ρ²)
                 (used where that is ≤ GRAM_TOLERANCE_FACTOR·√u; else Newton, else the SVD)

    "quadratic" is M/ε, exact to round-off. Both ``m`` and ``eps`` may be traced.

    Returns:
        (...,) bounds, one per matrix, in ``m``'s dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> float(regularized_polar_error_bound(jnp.eye(2), 1.0)) < 1e-5
        True
    """
    _check_kind_method(kind, method)
    m = _check_matrix("m", m)
    eps = _check_eps(eps, m)
    u = float(jnp.finfo(m.dtype).eps)
    if kind == "quadratic":
        _, e, _ = _scaled(m, eps)
        return 2.0 * u / e  # one division per entry: ‖fl(M/ε) − M/ε‖_op ≤ u‖M‖_F/ε
    return _plan(m, eps, kind, method, _validate.positive_int("num_iterations", num_iterations)).bound


def inverse_regularized_polar(o: Any, eps: Any, kind: str = "sqrt") -> Array:
    """The inverse mirror map ∇φ_ε*(O): momentum M with ∇φ_ε(M) = O (needs ‖O‖_op < 1 except "quadratic").

    "sqrt":                  M = ε O (I − OᵀO)^{-1/2}
    "huber" / "quadratic":   M = ε O    ("huber": only for ‖O‖_op < 1, where the map is 1-to-1)
    """
    _validate.one_of("kind", kind, KINDS)
    o = _check_matrix("o", o)
    eps = _check_eps(eps, o)
    if kind != "sqrt":
        return eps[..., None, None] * o
    return eps[..., None, None] * _gram_function(o, lambda lam: jax.lax.rsqrt(1.0 - lam))


# ------------------------------------------------------------------------- the optax transform
class RegularizedMuonState(NamedTuple):
    """State of :func:`scale_by_regularized_muon`: step count and the h-scaled momentum M."""

    count: jax.Array
    momentum: optax.Updates


def _check_optimizer_hyper(learning_rate, eps, damping) -> None:
    if not callable(learning_rate):
        _validate.positive("learning_rate", learning_rate)
    _validate.positive("eps", eps)
    _validate.positive("damping", damping, allow_zero=True)
    if not callable(learning_rate) and _validate.is_concrete((learning_rate, damping)):
        if float(jnp.max(jnp.asarray(learning_rate) * jnp.asarray(damping))) > 1.0:
            raise ValueError(
                f"learning_rate × damping must be <= 1 (the momentum factor 1 − γh must stay in [0, 1]), got "
                f"learning_rate={learning_rate}, damping={damping}"
            )


def scale_by_regularized_muon(
    learning_rate: float | Array | optax.Schedule,
    eps: float | Array,
    damping: float | Array,
    *,
    kind: str = "sqrt",
    method: str = "eigh",
    num_iterations: int = DEFAULT_NEWTON_ITERATIONS,
) -> optax.GradientTransformation:
    """Regularised Muon on matrix leaves (the whole update, learning rate included).

        M_{k+1} = (1 − γh) M_k + h g_k,     update_k = −h ∇φ_ε(M_{k+1})

    with h = ``learning_rate`` (or ``learning_rate(k)``), γ = ``damping``, g the gradient. Every
    leaf must be a (..., p, q) array; leading axes are batches of matrices.
    """
    _check_kind_method(kind, method)
    _check_optimizer_hyper(learning_rate, eps, damping)

    def init_fn(params):
        return RegularizedMuonState(jnp.zeros([], jnp.int32), jax.tree_util.tree_map(jnp.zeros_like, params))

    def update_fn(updates, state, params=None):
        del params
        h = learning_rate(state.count) if callable(learning_rate) else learning_rate

        def accumulate(g, m):
            hh = jnp.asarray(h, g.dtype)
            return (1 - jnp.asarray(damping, g.dtype) * hh) * m + hh * g

        def move(m):
            step = regularized_polar(m, jnp.asarray(eps, m.dtype), kind, method=method, num_iterations=num_iterations)
            return -jnp.asarray(h, m.dtype) * step

        momentum = jax.tree_util.tree_map(accumulate, updates, state.momentum)
        new_updates = jax.tree_util.tree_map(move, momentum)
        return new_updates, RegularizedMuonState(optax.safe_increment(state.count), momentum)

    return optax.GradientTransformation(init_fn, update_fn)


def regularized_muon(
    learning_rate: float | Array | optax.Schedule,
    eps: float | Array,
    damping: float | Array,
    *,
    kind: str = "sqrt",
    method: str = "eigh",
    num_iterations: int = DEFAULT_NEWTON_ITERATIONS,
    adam_learning_rate: float | Array | optax.Schedule | None = None,
    adam_b1: float = 0.9,
    adam_b2: float = 0.999,
) -> optax.GradientTransformation:
    """Regularised Muon as an ``optax`` optimizer: 2-D leaves by the regularised map, the rest by Adam.

    Matrix leaves follow :func:`scale_by_regularized_muon`; leaves that are not 2-D (biases, scalars,
    stacked tensors) go to ``optax.adam(adam_learning_rate or learning_rate)``, as
    ``optax.contrib.muon`` does. As ε → 0 the matrix update tends to −h·polar(M), the idealised Muon
    direction of ``optax.contrib.muon`` (which approximates polar by five Newton–Schulz steps).

    Args:
        learning_rate: h > 0 or a schedule; with the h-scaled momentum the step is h·∇φ_ε(M).
        eps: ε > 0, in units of M (module docstring: ε/h in the unnormalised convention).
        damping: γ ≥ 0 with γh ≤ 1; the momentum factor is μ = 1 − γh.
        kind: "sqrt" (default), "huber" or "quadratic" (:func:`regularized_polar`).
        method: "eigh" (default), "svd" or "newton" (:func:`regularized_polar`).
        num_iterations: steps of the "newton" path.
        adam_learning_rate: Adam's learning rate for the non-matrix leaves (default: ``learning_rate``).
        adam_b1: Adam's β₁.
        adam_b2: Adam's β₂.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
        >>> opt = regularized_muon(0.1, eps=0.01, damping=1.0)
        >>> grads = jax.grad(lambda p: jnp.sum((p["w"] @ jnp.ones(2) - 1.0) ** 2) + jnp.sum(p["b"] ** 2))(params)
        >>> updates, state = opt.update(grads, opt.init(params))
        >>> updates["w"].shape, updates["b"].shape
        ((3, 2), (2,))
    """
    adam_lr = learning_rate if adam_learning_rate is None else adam_learning_rate

    def labels(params):
        return jax.tree_util.tree_map(lambda p: "muon" if jnp.ndim(p) == 2 else "adam", params)

    inner = optax.partition(
        {
            "muon": scale_by_regularized_muon(
                learning_rate, eps, damping, kind=kind, method=method, num_iterations=num_iterations
            ),
            "adam": optax.adam(adam_lr, b1=adam_b1, b2=adam_b2),
        },
        labels,
    )
    return _standard_promotion(inner)


def _standard_promotion(inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """Run an optax transform under standard dtype promotion.

    optax's Adam mixes its int32 step count with Python floats, which fails when a user runs JAX
    with ``jax_numpy_dtype_promotion="strict"``; our own arithmetic is explicit, so this only
    relaxes optax's.
    """

    def init_fn(params):
        with jax.numpy_dtype_promotion("standard"):
            return inner.init(params)

    def update_fn(updates, state, params=None):
        with jax.numpy_dtype_promotion("standard"):
            return inner.update(updates, state, params)

    return optax.GradientTransformation(init_fn, update_fn)


# -------------------------------------------------------------------- mean-field objectives
class AbstractMeanFieldObjective(eqx.Module):
    """J(ρ) = R(∫F dρ): a feature map F of one particle and a risk R of the mean feature.

    Concrete objectives implement ``feature`` (one particle → a pytree in 𝓗) and ``risk``; calling
    the objective on stacked particles ``theta`` (leading axis n) with weights w gives
    J(ρ_N) = R(Σᵢ wᵢ F(θᵢ)).
    """

    @abc.abstractmethod
    def feature(self, theta: PyTreeAny) -> PyTreeAny:
        """F(θ) for one particle."""

    @abc.abstractmethod
    def risk(self, mean_feature: PyTreeAny) -> Array:
        """R(m) of the mean feature m = Σ wᵢ F(θᵢ)."""

    def mean_feature(self, theta: PyTreeAny, weights: Array) -> PyTreeAny:
        """m_N = Σᵢ wᵢ F(θᵢ)."""
        feats = jax.vmap(self.feature)(theta)
        return jax.tree_util.tree_map(lambda f: jnp.tensordot(weights.astype(f.dtype), f, axes=1), feats)

    def __call__(self, theta: PyTreeAny, weights: Array) -> Array:
        """J(ρ_N) = R(Σᵢ wᵢ F(θᵢ))."""
        return self.risk(self.mean_feature(theta, weights))


class MeanFieldObjective(AbstractMeanFieldObjective):
    """J(ρ) = R(∫F dρ) from two functions: ``feature(theta)`` and ``risk(mean_feature)``.

    Define both at module level (or as ``eqx.Module``s) so a new lambda does not recompile the flow.
    """

    feature_fn: Callable[[PyTreeAny], PyTreeAny]
    risk_fn: Callable[[PyTreeAny], Array]

    def feature(self, theta):
        """F(θ) = ``feature_fn(θ)``."""
        return self.feature_fn(theta)

    def risk(self, mean_feature):
        """R(m) = ``risk_fn(m)``."""
        return self.risk_fn(mean_feature)


def _check_regression_data(inputs: Any, targets: Any) -> tuple[jax.Array, jax.Array]:
    x = _validate.floating_array("inputs", inputs)
    y = _validate.floating_array("targets", targets)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"inputs must have shape (num_inputs, d) with num_inputs >= 1, got {x.shape}")
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2 or y.shape[0] != x.shape[0]:
        raise ValueError(f"targets must have shape ({x.shape[0]},) or ({x.shape[0]}, o), got {y.shape}")
    _validate.finite("inputs", x)
    _validate.finite("targets", y)
    return x, y


class TwoLayerNetwork(AbstractMeanFieldObjective):
    """Mean-field two-layer network, squared loss: f(x) = Σᵢ wᵢ F(θᵢ)(x), J = ½ E‖f(x) − y‖².

    A particle is a group of k hidden units: either one matrix ``W`` (k, d) with the fixed readout
    F(W)(x) = (1/k) Σ_r σ(W x)_r (scalar output), or blocks ``{"hidden": (k, d), "readout": (o, k)}``
    with F(θ)(x) = readout · σ(hidden · x). Append a constant column to ``inputs`` for biases.

    Args:
        inputs: (num_inputs, d) training inputs.
        targets: (num_inputs,) or (num_inputs, o).
        activation: σ, elementwise (module-level function; default tanh).
    """

    inputs: Float[Array, "s d"]
    targets: Float[Array, "s o"]
    activation: Callable[[Array], Array] = eqx.field(static=True, default=jnp.tanh)

    def __init__(self, inputs: Any, targets: Any, activation: Callable[[Array], Array] = jnp.tanh):
        """See the class docstring."""
        self.inputs, self.targets = _check_regression_data(inputs, targets)
        self.activation = activation

    def feature(self, theta):
        """F(θ)(xₛ) for all inputs: (num_inputs, o)."""
        if isinstance(theta, Mapping):
            hidden = self.activation(self.inputs.astype(theta["hidden"].dtype) @ theta["hidden"].T)
            return hidden @ theta["readout"].T
        hidden = self.activation(self.inputs.astype(theta.dtype) @ theta.T)
        return jnp.mean(hidden, axis=-1, keepdims=True)

    def risk(self, mean_feature):
        """½ mean over inputs of ‖f(x) − y‖²."""
        return 0.5 * jnp.mean(jnp.sum((mean_feature - self.targets.astype(mean_feature.dtype)) ** 2, axis=-1))

    def predict(self, theta: PyTreeAny, weights: Array) -> Array:
        """The network output f on the stored inputs: (num_inputs, o)."""
        return self.mean_feature(theta, weights)


class MixtureOfExperts(AbstractMeanFieldObjective):
    """Softmax-gated mixture of experts as a mean field (METHODS.md §3b), squared loss.

        h(x) = Σᵢ wᵢ e^{⟨gᵢ, x⟩} Eᵢ(x) / Σᵢ wᵢ e^{⟨gᵢ, x⟩},   Eᵢ(x) = readoutᵢ · σ(hiddenᵢ · x)

    i.e. F(θ) = (e^{⟨g, ·⟩} E(θ; ·), e^{⟨g, ·⟩}) ∈ 𝓗 × 𝓗 and R(u, v) = ½ E‖u/v − y‖². A particle
    (expert) is the blocks ``{"gate": (1, d), "hidden": (k, d), "readout": (o, k)}``.

    Args:
        inputs: (num_inputs, d).
        targets: (num_inputs,) or (num_inputs, o).
        activation: σ (default tanh).
    """

    inputs: Float[Array, "s d"]
    targets: Float[Array, "s o"]
    activation: Callable[[Array], Array] = eqx.field(static=True, default=jnp.tanh)

    def __init__(self, inputs: Any, targets: Any, activation: Callable[[Array], Array] = jnp.tanh):
        """See the class docstring."""
        self.inputs, self.targets = _check_regression_data(inputs, targets)
        self.activation = activation

    def feature(self, theta):
        """(e^{⟨g,x⟩} E(x), e^{⟨g,x⟩}) on all inputs."""
        x = self.inputs.astype(theta["hidden"].dtype)
        gate = jnp.exp(x @ theta["gate"][0])
        expert = self.activation(x @ theta["hidden"].T) @ theta["readout"].T
        return gate[:, None] * expert, gate

    def risk(self, mean_feature):
        """½ mean ‖u/v − y‖²."""
        u, v = mean_feature
        return 0.5 * jnp.mean(jnp.sum((u / v[:, None] - self.targets.astype(u.dtype)) ** 2, axis=-1))

    def predict(self, theta: PyTreeAny, weights: Array) -> Array:
        """The gated prediction h on the stored inputs: (num_inputs, o)."""
        u, v = self.mean_feature(theta, weights)
        return u / v[:, None]


# ---------------------------------------------------------------------------- the particle flow
class _Carry(eqx.Module):
    """J, ∇J and Σwφ_ε(P) at the current state, so a step evaluates each once."""

    objective: Array
    grad: Array
    kinetic: Array


def _as_blocks(blocks: Any) -> tuple[tuple[str, tuple[int, int]], ...] | None:
    if blocks is None:
        return None
    if not isinstance(blocks, Mapping) or not blocks:
        raise TypeError(f"blocks must be a non-empty mapping name -> (p, q), got {blocks!r}")
    out = []
    for name, shape in blocks.items():
        if not isinstance(name, str):
            raise TypeError(f"blocks keys must be strings, got {name!r}")
        if (
            not isinstance(shape, tuple | list)
            or len(shape) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape)
        ):
            raise ValueError(f"blocks[{name!r}] must be a shape (p, q) of positive ints, got {shape!r}")
        out.append((name, (int(shape[0]), int(shape[1]))))
    return tuple(out)


class MuonMeanFieldFlow(AbstractFlow):
    """Regularised-Muon mean-field dynamics: damped Hamiltonian particles (W, P) over matrices.

    For J(ρ) = R(∫F dρ) and N weighted particles ρ_N = Σᵢ wᵢ δ_{Wᵢ} (wᵢ = 1/N: the usual mean field),
    the ODE (METHODS.md §3b, P = −M the momentum)

        Ẇᵢ = ∇φ_ε(Pᵢ),     Ṗᵢ = −Gᵢ − γ Pᵢ,     Gᵢ = ∇_{Wᵢ} J(ρ_N) / wᵢ  (= N ∇_{Wᵢ}J)

    has the Hamiltonian H_N = J(ρ_N) + Σᵢ wᵢ φ_ε(Pᵢ) and dH_N/dt = −γ Σᵢ wᵢ ⟨∇φ_ε(Pᵢ), Pᵢ⟩ ≤ 0.
    One step is regularised Muon with h-scaled momentum (``step_size`` = h, ``damping`` = γ):

        Pᵢ ← (1 − γh) Pᵢ − h Gᵢ,     Wᵢ ← Wᵢ + h ∇φ_ε(Pᵢ)

    Exactly, ΔH = −hγ Σwᵢ⟨∇φ_ε(P'ᵢ), Pᵢ⟩ + r_J + r_K with r_K ≤ 0 (φ_ε convex) and r_J the
    second-order remainder of J along the move, so ΔH ≤ hγ|Σwᵢ⟨∇φ_ε(P'ᵢ), Pᵢ − P'ᵢ⟩| + r_J. The step
    estimates r_J by the trapezoid rule r̂_J = ½⟨∇J(W') − ∇J(W), W' − W⟩ (error O(h³)) and reports
    ``discretisation_error`` = |r̂_J| + hγ|Σwᵢ⟨∇φ_ε(P'ᵢ), Pᵢ − P'ᵢ⟩| + round-off; ``energy_flag`` is
    1 when H rose by more than that (step too large for a non-smooth objective, or a bug).

    ``blocks`` (mixture of experts and other multi-matrix particles): each particle is a dict of
    matrix blocks, stored flat in ``state.x`` (n, Σ p_b q_b); the kinetic energy is Σ_b φ_{ε_b}(P^b),
    one ε per block, and every block moves by its own map. ``unflatten``/``flatten`` convert.

    ``info``: ``hamiltonian`` H, ``objective`` J, ``kinetic`` Σwφ_ε(P), ``dissipation``
    γΣw⟨∇φ_ε(P), P⟩ (the continuous dH/dt is minus this), ``energy_change`` ΔH,
    ``discretisation_error``, ``energy_flag``. Deterministic: the key is not used. Weights pass
    through; ``aux`` carries J, ∇J and the kinetic energy of the current state.

    Args:
        objective: J(θ, weights) → scalar for stacked particles θ (leading axis n): an
            :class:`AbstractMeanFieldObjective` or a module-level function.
        eps: ε > 0, or with ``blocks`` a mapping block → ε (a scalar is used for every block).
        damping: γ ≥ 0 (γh ≤ 1).
        step_size: h > 0.
        blocks: optional mapping name → (p, q).
        kind: "sqrt" (default), "huber" or "quadratic" (heavy-ball momentum with mass ε).
        method: how the map is computed (:func:`regularized_polar`).
        num_iterations: the Newton–Schulz step count for ``method="newton"`` (:func:`regularized_polar`).

    Example:
        >>> import jax.numpy as jnp, jax.random as jr
        >>> import dpflows
        >>> def objective(w, weights):  # J(ρ) = ½‖∫W dρ − I‖_F², minimised by any ρ with mean I
        ...     return 0.5 * jnp.sum((jnp.tensordot(weights, w, axes=1) - jnp.eye(2)) ** 2)
        >>> flow = MuonMeanFieldFlow(objective, eps=0.1, damping=2.0, step_size=0.05)
        >>> state, trace = dpflows.run(flow, flow.init(jr.normal(jr.key(0), (64, 2, 2))), jr.key(1), 400)
        >>> bool(trace["hamiltonian"][-1] < 1e-3 * trace["hamiltonian"][0])
        True
    """

    objective: Callable[[PyTreeAny, Array], Array]
    eps: Any
    damping: Float[Array, ...]
    step_size: Float[Array, ...]
    blocks: tuple[tuple[str, tuple[int, int]], ...] | None = eqx.field(static=True, default=None)
    kind: str = eqx.field(static=True, default="sqrt")
    method: str = eqx.field(static=True, default="eigh")
    num_iterations: int = eqx.field(static=True, default=DEFAULT_NEWTON_ITERATIONS)

    def __init__(
        self,
        objective: Callable[[PyTreeAny, Array], Array],
        *,
        eps: Any,
        damping: Any,
        step_size: Any,
        blocks: Mapping[str, tuple[int, int]] | None = None,
        kind: str = "sqrt",
        method: str = "eigh",
        num_iterations: int = DEFAULT_NEWTON_ITERATIONS,
    ):
        """See the class docstring."""
        if not callable(objective):
            raise TypeError(f"objective must be callable J(theta, weights), got {type(objective).__name__}")
        self.objective = objective
        self.blocks = _as_blocks(blocks)
        if self.blocks is None:
            if isinstance(eps, Mapping):
                raise TypeError("eps must be a number without blocks (a mapping of ε per block needs blocks=)")
            self.eps = jnp.asarray(eps)
        else:
            names = [name for name, _ in self.blocks]
            if isinstance(eps, Mapping):
                if set(eps) != set(names):
                    raise ValueError(f"eps must give one ε per block {sorted(names)}, got keys {sorted(eps)}")
                self.eps = {name: jnp.asarray(eps[name]) for name in names}
            else:
                self.eps = {name: jnp.asarray(eps) for name in names}
        self.damping = jnp.asarray(damping)
        self.step_size = jnp.asarray(step_size)
        self.kind = kind
        self.method = method
        self.num_iterations = num_iterations

    def __check_init__(self):
        _check_kind_method(self.kind, self.method)
        for name, value in self._eps_items():
            _validate.positive(name, value)
        _validate.positive("damping", self.damping, allow_zero=True)
        _validate.positive("step_size", self.step_size)
        _validate.positive_int("num_iterations", self.num_iterations)
        if _validate.is_concrete((self.damping, self.step_size)):
            if float(jnp.max(self.damping * self.step_size)) > 1.0:
                raise ValueError(
                    "step_size × damping must be <= 1 (the momentum factor 1 − γh must stay in [0, 1]), got "
                    f"step_size={self.step_size}, damping={self.damping}"
                )

    def _eps_items(self) -> list[tuple[str, Any]]:
        if self.blocks is None:
            return [("eps", self.eps)]
        return [(f"eps[{name!r}]", self.eps[name]) for name, _ in self.blocks]

    # ------------------------------------------------------------------------ layout helpers
    @property
    def event_size(self) -> int | None:
        """Σ_b p_b q_b for a blockwise flow (the width of ``state.x``); None otherwise."""
        return None if self.blocks is None else sum(p * q for _, (p, q) in self.blocks)

    def unflatten(self, x: Array) -> PyTreeAny:
        """(n, Σ p_b q_b) → {block: (n, p_b, q_b)} (the identity without blocks)."""
        if self.blocks is None:
            return x
        out, start = {}, 0
        for name, (p, q) in self.blocks:
            out[name] = x[..., start : start + p * q].reshape(*x.shape[:-1], p, q)
            start += p * q
        return out

    def flatten(self, theta: PyTreeAny) -> Array:
        """{block: (n, p_b, q_b)} → (n, Σ p_b q_b) (the identity without blocks)."""
        if self.blocks is None:
            return theta
        return jnp.concatenate(
            [theta[name].reshape(*theta[name].shape[:-2], p * q) for name, (p, q) in self.blocks], axis=-1
        )

    # --------------------------------------------------------------------------- the physics
    def _map(self, p: Array) -> Array:
        """∇φ_ε(P) for every particle (and every block)."""
        if self.blocks is None:
            return regularized_polar(
                p, self.eps.astype(p.dtype), self.kind, method=self.method, num_iterations=self.num_iterations
            )
        blocks = self.unflatten(p)
        return self.flatten(
            {
                name: regularized_polar(
                    blocks[name],
                    self.eps[name].astype(p.dtype),
                    self.kind,
                    method=self.method,
                    num_iterations=self.num_iterations,
                )
                for name, _ in self.blocks
            }
        )

    def _phi(self, p: Array) -> Array:
        """φ_ε(Pᵢ) per particle: (n,) (summed over blocks)."""
        method = "svd" if self.method == "svd" else "eigh"
        if self.blocks is None:
            return smoothed_nuclear_norm(p, self.eps.astype(p.dtype), self.kind, method=method)
        blocks = self.unflatten(p)
        return sum(
            smoothed_nuclear_norm(blocks[name], self.eps[name].astype(p.dtype), self.kind, method=method)
            for name, _ in self.blocks
        )

    def _value_and_grad(self, x: Array, weights: Array) -> tuple[Array, Array]:
        def j(flat):
            return self.objective(self.unflatten(flat), weights)

        value, grad = jax.value_and_grad(j)(x)
        return value, grad

    def kinetic_energy(self, state: Particles) -> Array:
        """Σᵢ wᵢ φ_ε(Pᵢ)."""
        return jnp.sum(state.weights * self._phi(state.v))

    def objective_value(self, state: Particles) -> Array:
        """J(ρ_N)."""
        return self.objective(self.unflatten(state.x), state.weights)

    def hamiltonian(self, state: Particles) -> Array:
        """H_N = J(ρ_N) + Σᵢ wᵢ φ_ε(Pᵢ)."""
        return self.objective_value(state) + self.kinetic_energy(state)

    def force(self, x: Array, weights: Array) -> Array:
        """Gᵢ = ∇_{Wᵢ} J(ρ_N) / wᵢ (zero for zero-weight particles)."""
        _, grad = self._value_and_grad(x, weights)
        return self._rescale(grad, weights)

    @staticmethod
    def _rescale(grad: Array, weights: Array) -> Array:
        w = weights.reshape(-1, *([1] * (grad.ndim - 1))).astype(grad.dtype)
        return jnp.where(w > 0, grad / jnp.where(w > 0, w, 1.0), 0.0)

    def vector_field(self, x: Array, v: Array, weights: Array) -> tuple[Array, Array]:
        """The ODE's right-hand side (Ẇ, Ṗ) = (∇φ_ε(P), −G − γP), for integrators and tests."""
        return self._map(v), -self.force(x, weights) - self.damping.astype(v.dtype) * v

    def dissipation_rate(self, state: Particles) -> Array:
        """γ Σᵢ wᵢ ⟨∇φ_ε(Pᵢ), Pᵢ⟩ = −dH/dt."""
        p = state.v
        inner = jnp.sum((self._map(p) * p).reshape(p.shape[0], -1), axis=-1)
        return self.damping.astype(p.dtype) * jnp.sum(state.weights * inner)

    # --------------------------------------------------------------------------- the interface
    def _check_positions(self, x: jax.Array) -> None:
        if self.blocks is None:
            if x.ndim != 3:
                raise ValueError(f"x must be matrices of shape (n, p, q), got shape {x.shape}")
        elif x.ndim != 2 or x.shape[1] != self.event_size:
            raise ValueError(
                f"x must be flat blocks of shape (n, {self.event_size}) or a dict of (n, p, q) blocks, got {x.shape}"
            )

    def init(self, x: Any, logw: Any = None, *, v: Any = None) -> Particles:
        """Particles at ``x`` with momenta ``v`` (default 0); ``x``/``v`` may be dicts of blocks."""
        if self.blocks is not None and isinstance(x, Mapping):
            x = self.flatten({name: _validate.floating_array(f"x[{name!r}]", x[name]) for name, _ in self.blocks})
        if self.blocks is not None and isinstance(v, Mapping):
            v = self.flatten({name: _validate.floating_array(f"v[{name!r}]", v[name]) for name, _ in self.blocks})
        state = Particles.create(x, logw, v=v)
        self._check_positions(state.x)
        _validate.finite("x", state.x)
        _validate.finite("v", state.v)
        value, grad = self._value_and_grad(state.x, state.weights)
        kinetic = jnp.sum(state.weights * self._phi(state.v))
        return Particles(x=state.x, logw=state.logw, v=state.v, t=state.t, aux=_Carry(value, grad, kinetic))

    def step(self, state: Particles, key: PRNGKeyArray) -> tuple[Particles, Info]:
        """One regularised-Muon step of every particle (class docstring)."""
        del key
        dtype = state.x.dtype
        h, gamma = self.step_size.astype(dtype), self.damping.astype(dtype)
        w = state.weights
        j0, g0 = state.aux.objective, state.aux.grad
        p0 = state.v
        p1 = (1 - gamma * h) * p0 - h * self._rescale(g0, w)
        d = self._map(p1)
        x1 = state.x + h * d
        j1, g1 = self._value_and_grad(x1, w)
        k0, k1 = state.aux.kinetic, jnp.sum(w * self._phi(p1))
        h0, h1 = j0 + k0, j1 + k1

        def wsum(a):  # Σᵢ wᵢ ⟨aᵢ⟩ over the event axes
            return jnp.sum(w * jnp.sum(a.reshape(a.shape[0], -1), axis=-1))

        remainder = 0.5 * jnp.sum((g1 - g0) * (x1 - state.x))
        mismatch = h * gamma * jnp.abs(wsum(d * (p0 - p1)))
        roundoff = 16 * jnp.finfo(dtype).eps * (jnp.abs(h0) + jnp.abs(h1) + jnp.abs(j1 - j0) + k0 + k1)
        error = jnp.abs(remainder) + mismatch + roundoff
        change = h1 - h0
        new = Particles(
            x=x1, logw=state.logw, v=p1, t=state.t + self.step_size.astype(state.t.dtype), aux=_Carry(j1, g1, k1)
        )
        info = {
            "hamiltonian": h1,
            "objective": j1,
            "kinetic": k1,
            "dissipation": gamma * wsum(d * p1),
            "energy_change": change,
            "discretisation_error": error,
            "energy_flag": (change > error).astype(dtype),
        }
        return new, info


def operator_norm(m: Any) -> Array:
    """‖M‖_op over the last two axes (largest singular value; for checks and reports)."""
    m = _check_matrix("m", m)
    return jnp.sqrt(jnp.max(_squared_singular_values(m, "svd"), axis=-1))
