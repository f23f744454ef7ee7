"""DP sliced-Wasserstein flow: a generative particle flow driven by privatised random projections (METHODS.md §4).

The private data ν = (1/m) Σ_j δ_{y_j} (rows clipped to the unit ball) is seen only by
:func:`private_release`, the DP-SWD Gaussian mechanism (Rakotomamonjy & Ralaivola 2021):

    V_t = Θ_t Y_tᵀ + Z_t,   Θ_t ∈ ℝ^{k×d} uniform unit rows,   Z_t ~ N(0, σ_t²) i.i.d.,   t < T,

which returns a :class:`SlicedRelease` (directions, sorted noisy tables, batch counts, σ_t, and the
privacy numbers as array leaves — never the data) and its certificate. Everything else is
post-processing of a release and costs no further privacy:

* :class:`DPSlicedWassersteinFlow` (DPSWflow with T = 1; DPSWflow-r with one release per step,
  each on a fresh Poisson batch): step i uses release ``i mod T``;
* :func:`train_sliced_generator` (DPSWgen): a generator fitted by the sliced loss.

Releases at different ε (or keys) stack: ``dpflows.sweep([DPSlicedWassersteinFlow(r, step_size=τ)
for r in releases], ...)`` compiles once, and a stacked flow's ``.certificate`` is a tuple with one
certificate per member. ``DPSlicedWassersteinFlow.from_data(data, epsilon=..., ...)`` draws the
release and builds the flow in one call.

**Privacy** (``covers="mechanism"``: the released projections, hence the flow, under the threat
model of :data:`dpflows.privacy.THREAT_MODEL`):

* sensitivity (host-side theory, :func:`sensitivity_bound`): for a replace-one neighbour
  ‖y − y'‖ ≤ 2 and ‖Θᵀ(y − y')‖² = 4 Σ_l ⟨θ_l, z⟩² with ⟨θ, z⟩² ~ Beta(½, (d−1)/2) for a unit z.
  ``sensitivity="chernoff"`` (default) bounds the sum's tail by the exact Beta moment-generating
  function (₁F₁(½; d/2; λ)); it holds with probability ≥ 1 − δ_s over Θ, and the failure probability
  is charged to δ (δ/2, split over the releases). ``"clt"`` is the paper's normal approximation and
  ``"bernstein"`` its k ≤ 30 form. **The CLT form is not a bound**: at the paper's d = 8, k = 70
  the sum exceeds it with probability 2.1e-3 at δ_s = 1e-3 and 4e-5 at δ_s = 5e-6 (tested).
  ``"operator"`` uses Δ_t = 2‖Θ_t‖₂ of the drawn directions: deterministic, no δ charged.
* noise (:mod:`dpflows.privacy.calibration`): σ_t = s·Δ_t. One release: s from the analytic
  Gaussian mechanism (Balle & Wang 2018), not the classical √(2 ln(1.25/δ))/ε the official code
  uses (not private at ε = 10). Several (subsampled) releases: s by bisection so that
  dp-accounting's PLD accountant meets (ε, δ − δ_s); its RDP accountant is reported next to it.
* ``epsilon=math.inf`` releases without noise (no guarantee, ``covers="none"``).

Not covered: floating-point attacks on unsnapped Gaussian noise and a non-secret ``key`` (draw it
with :func:`dpflows.privacy.release_key`, the default for ``key=None``).
"""

from ._drift import sliced_drift
from ._flow import DPSlicedWassersteinFlow
from ._generator import GeneratorResult, SlicedLoss, train_sliced_generator
from ._mechanism import NoisyProjections, SlicedRelease, private_release, sliced_gaussian_mechanism
from ._sensitivity import SENSITIVITY_METHODS, sensitivity_bound

__all__ = [
    "SENSITIVITY_METHODS",
    "DPSlicedWassersteinFlow",
    "GeneratorResult",
    "NoisyProjections",
    "SlicedLoss",
    "SlicedRelease",
    "private_release",
    "sensitivity_bound",
    "sliced_drift",
    "sliced_gaussian_mechanism",
    "train_sliced_generator",
]
