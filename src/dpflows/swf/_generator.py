"""DPSWgen (METHODS.md §4c): a generator fitted to a sliced release by the DP sliced-Wasserstein loss."""

from __future__ import annotations

from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax

from .. import _validate
from .._typing import Array, Bool, PRNGKeyArray
from ..flow import Trace, fit
from ._drift import _targets
from ._flow import DPSlicedWassersteinFlow
from ._mechanism import SlicedRelease

__all__ = ["GeneratorResult", "SlicedLoss", "train_sliced_generator"]


class GeneratorResult(NamedTuple):
    """What :func:`train_sliced_generator` returns.

    Attributes:
        generator: the trained generator.
        opt_state: the optimiser state (its ``hyperparams["learning_rate"]`` is the learning rate).
        loss: the loss per step, (num_steps,).
        trace: the :class:`dpflows.Trace` of :func:`dpflows.fit` (``info["loss"]``, ``info["release"]``, ``ok``).
    """

    generator: Any
    opt_state: Any
    loss: Array
    trace: Trace


class SlicedLoss(eqx.Module):
    """mean_l W₂²(θ_l#G + N(0, σ_r²), release_r) for a generator G at a release r (the DPSWgen loss).

    Step t uses release r = t mod T (every paid-for release is used in turn, as the flow does); from
    the step's key: ``batch_size`` latents z ~ N(0, I) and the smoothing noise. G(z) is projected on
    release r's directions with the release's σ_r (if ``smooth_particles``) and paired with the
    release's quantiles at its mid-rank levels (exact or P-percentile map, as the flow). The targets
    are held fixed (``stop_gradient``), so the gradient flows through G only: the flow's drift pulled
    back to G's parameters. A release with an empty batch gives zero loss and gradient. Returns
    ``(loss, {"release": r})`` (``has_aux``).
    """

    release: SlicedRelease
    smooth_particles: Bool[Array, ""] = eqx.field(converter=jnp.asarray)
    batch_size: int = eqx.field(static=True)
    latent_dim: int = eqx.field(static=True)

    def __call__(self, generator: Any, key: PRNGKeyArray, step: Any = 0) -> tuple[Array, dict[str, Array]]:
        """The loss at step ``step`` and the release index used, with every random draw from ``key``."""
        rel = self.release
        _, kz, kn = jr.split(key, 3)
        r = jnp.asarray(step, jnp.int32) % rel.directions.shape[0]
        theta, table, count = rel.directions[r], rel.tables[r], rel.counts[r]
        dtype = table.dtype
        std = jnp.where(self.smooth_particles, rel.noise_std[r].astype(dtype), jnp.zeros((), dtype))
        z = jr.normal(kz, (self.batch_size, self.latent_dim), dtype=dtype)
        noise = std * jr.normal(kn, (theta.shape[0], self.batch_size), dtype=dtype)
        w = jnp.full((self.batch_size,), 1.0 / self.batch_size, dtype)
        x = jax.vmap(generator)(z).astype(dtype)
        u = theta @ x.T + noise
        q = jax.lax.stop_gradient(_targets(u, w, table, count, rel.num_quantiles is not None))
        loss = jnp.mean((u - q) ** 2)  # = mean_l W₂²(θ_l#G, release_l) at the sorted pairing
        return jnp.where(count > 0, loss, 0.0), {"release": r}


def train_sliced_generator(
    generator: Any,
    release: SlicedRelease | DPSlicedWassersteinFlow,
    *,
    key: PRNGKeyArray,
    num_steps: int,
    batch_size: int = 250,
    learning_rate: Any = 1e-3,
    latent_dim: int | None = None,
    smooth_particles: Any = None,
    opt_state: Any = None,
    progress: bool = False,
    checkpoint: Any = None,
    checkpoint_every: int | None = None,
    chunk_size: int | None = None,
    throw: bool = True,
) -> GeneratorResult:
    """DPSWgen (METHODS.md §4c): fit G(z), z ~ N(0, I), to a release by the DP sliced loss, on :func:`dpflows.fit`.

    Each step is an Adam step on :class:`SlicedLoss` (gradient through the sorted pairing) with the
    step's key ``fold_in(key, t)``. It reads only the release, so the generator carries
    ``release.certificate`` unchanged: draw the release with ``num_releases`` ≈ ``num_steps`` and a
    ``batch_size`` for the paper's per-step batches. The learning rate is a leaf of the optimiser
    state (``optax.inject_hyperparams``), so a grid of learning rates, keys or (stacked) releases is
    a ``jax.vmap`` of this function (with ``progress``/``checkpoint`` off) and compiles once.

    Args:
        generator: an ``eqx.Module`` G mapping one latent (latent_dim,) to one sample (d,); its
            inexact arrays are trained.
        release: a :class:`SlicedRelease`, or a :class:`DPSlicedWassersteinFlow` (its release and
            ``smooth_particles`` are used).
        key: latents, release indices and smoothing noise.
        num_steps: Adam steps.
        batch_size: latents per step.
        learning_rate: Adam's learning rate (> 0; a leaf).
        latent_dim: the latent size (default: ``generator.latent_dim``).
        smooth_particles: add the release's σ to the generator's projections (default True, or the
            flow's setting).
        opt_state: continue from this optimiser state.
        progress: a progress bar between compiled chunks.
        checkpoint: a folder for checkpoints and bitwise resume (as in :func:`dpflows.fit`).
        checkpoint_every: steps between checkpoints.
        chunk_size: steps per compiled chunk.
        throw: raise if the final loss or parameters are not finite (else read ``trace.ok``).

    Returns:
        :class:`GeneratorResult` ``(generator, opt_state, loss, trace)``.
    """
    if isinstance(release, DPSlicedWassersteinFlow):
        smooth_particles = release.smooth_particles if smooth_particles is None else smooth_particles
        release = release.release
    if not isinstance(release, SlicedRelease):
        raise TypeError(f"release must be a SlicedRelease or DPSlicedWassersteinFlow, got {type(release).__name__}")
    num_steps = _validate.positive_int("num_steps", num_steps)
    batch_size = _validate.positive_int("batch_size", batch_size)
    _validate.positive("learning_rate", learning_rate)
    latent_dim = latent_dim or getattr(generator, "latent_dim", None)
    if latent_dim is None:
        raise ValueError("latent_dim must be given for a generator without a latent_dim attribute")
    smooth = True if smooth_particles is None else smooth_particles
    loss = SlicedLoss(release, smooth, batch_size=batch_size, latent_dim=int(latent_dim))
    optimizer = optax.inject_hyperparams(optax.adam)(learning_rate=learning_rate)
    res = fit(
        loss,
        generator,
        optimizer,
        key,
        num_steps,
        has_aux=True,
        with_step=True,
        opt_state=opt_state,
        progress=progress,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        chunk_size=chunk_size,
        throw=throw,
    )
    return GeneratorResult(res.model, res.opt_state, res.trace.info["loss"], res.trace)
