"""An independent 1-D grid solver for the SHK PDE (METHODS.md §1b), used as the reference in tests.

∂ₜρ = α ∂ₓ(∂ₓρ + ρ V′) − β ρ (ψ − ∫ρψ),  ψ = log ρ + V,

finite volumes with zero-flux boundaries for the transport and the pointwise reaction, classical RK4
in time. NumPy float64; nothing here is shared with dpflows.shk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Grid:
    x: np.ndarray
    dx: float

    @classmethod
    def make(cls, half_width: float = 7.0, num: int = 281) -> Grid:
        x = np.linspace(-half_width, half_width, num)
        return cls(x, float(x[1] - x[0]))

    def normalise(self, rho: np.ndarray) -> np.ndarray:
        return rho / (rho.sum() * self.dx)

    def integral(self, f: np.ndarray) -> float:
        return float(f.sum() * self.dx)


def rhs(grid: Grid, rho, v, dv_half, alpha, beta):
    """Time derivative of ρ on the grid (dv_half: V′ at the cell interfaces)."""
    out = np.zeros_like(rho)
    if alpha:
        rho_half = 0.5 * (rho[1:] + rho[:-1])
        flux = (rho[1:] - rho[:-1]) / grid.dx + rho_half * dv_half
        div = np.zeros_like(rho)
        div[:-1] += flux
        div[1:] -= flux
        out += alpha * div / grid.dx
    if beta:
        psi = np.log(np.maximum(rho, 1e-300)) + v
        out -= beta * rho * (psi - grid.integral(rho * psi))
    return out


def solve(grid: Grid, rho0, potential, *, alpha, beta, times, dt=None):
    """ρ at each time in ``times`` (increasing, first ≥ 0), by RK4 with a stable step."""
    v = potential(grid.x)
    xh = 0.5 * (grid.x[1:] + grid.x[:-1])
    dv_half = (potential(xh + 1e-6) - potential(xh - 1e-6)) / 2e-6
    if dt is None:
        dt = 0.2 * grid.dx**2 / alpha if alpha else 1e-3
    rho, t, out = grid.normalise(rho0.copy()), 0.0, []
    for target in times:
        while t < target - 1e-14:
            h = min(dt, target - t)
            k1 = rhs(grid, rho, v, dv_half, alpha, beta)
            k2 = rhs(grid, rho + 0.5 * h * k1, v, dv_half, alpha, beta)
            k3 = rhs(grid, rho + 0.5 * h * k2, v, dv_half, alpha, beta)
            k4 = rhs(grid, rho + h * k3, v, dv_half, alpha, beta)
            rho = rho + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
            t += h
        out.append(rho.copy())
    return out


def kl(grid: Grid, rho, potential) -> float:
    """KL(ρ‖π) with π ∝ e^{−V} normalised on the grid."""
    pi = grid.normalise(np.exp(-potential(grid.x)))
    mask = rho > 0
    return grid.integral(np.where(mask, rho * np.log(np.where(mask, rho, 1.0) / pi), 0.0))


def gaussian_density(x, mean, var):
    return np.exp(-0.5 * (x - mean) ** 2 / var) / np.sqrt(2 * np.pi * var)
