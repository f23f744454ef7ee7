"""Design the odd-quintic schedule of ``dpflows.muon``'s matmul-only (``method="newton"``) path.

Greedy minimax composition (the Polar Express construction, Amsel et al. 2025): singular values of
the normalised augmented matrix lie in [ℓ, 1]; step k picks p(x) = a x + b x³ + c x⁵ minimising
max |1 − p(x)| over the current interval, and the next interval is p's image. Each interval is widened
by 1 % on both sides before the fit so that float round-off cannot push a value outside the range a
polynomial was fitted on. Run ``python scripts/muon_coefficients.py`` to print the table pasted into
``src/dpflows/muon.py`` (``_NEWTON_COEFFS``); ``tests/muon`` re-checks its error bound.
"""

import numpy as np
from scipy.optimize import minimize

LOWER = float(
    __import__("os").environ.get("LOWER", "1e-3")
)  # design bound on the smallest normalised singular value ε / s
STEPS = 8
STARTS = [(3.4445, -4.775, 2.0315), (15 / 8, -10 / 8, 3 / 8), (2.0, -1.5, 0.5), (4.0, -6.0, 3.0), (8.0, -22.0, 16.0)]


def fit(lo: float, hi: float) -> np.ndarray:
    """The odd quintic minimising max |1 − p| on [lo, hi] (Nelder–Mead from several starts)."""
    xs = np.geomspace(lo, hi, 4000)

    def err(c):
        return np.max(np.abs(1.0 - (c[0] * xs + c[1] * xs**3 + c[2] * xs**5)))

    best = min(
        (
            minimize(err, s, method="Nelder-Mead", options={"xatol": 1e-12, "fatol": 1e-14, "maxiter": 40000})
            for s in STARTS
        ),
        key=lambda r: r.fun,
    )
    return best.x


def main() -> None:
    """Print the greedy schedule."""
    lo, hi = LOWER, 1.0
    rows = []
    for _ in range(STEPS):
        c = fit(0.99 * lo, 1.01 * hi)
        xs = np.geomspace(0.99 * lo, 1.01 * hi, 4000)
        p = c[0] * xs + c[1] * xs**3 + c[2] * xs**5
        lo, hi = float(p.min()), float(p.max())
        rows.append(c)
        print(f"    ({c[0]:.10f}, {c[1]:.10f}, {c[2]:.10f}),  # image [{lo:.3e}, {hi:.6f}]")


if __name__ == "__main__":
    main()
