"""Generative models from locally private data: the noise-matched entropic OT loss (METHODS.md §5).

Each user releases Y = X + Z with Z from a local randomiser (:func:`dpflows.privacy.gaussian_ldp`,
:func:`dpflows.privacy.laplace_ldp`). If the cost and the regularisation match the noise density,
e^{−c(0, z)/ε} ∝ p_Z(z), then the *biased* entropic cost

    OT_ε(P, Q) = min_π ⟨c, π⟩ + ε KL(π ‖ P⊗Q)

is minimised over P at the *clean* law P_X when Q = P_X * P_Z: the entropic blur deconvolves the
privacy noise (a Shannon-lower-bound argument, METHODS.md §5b). With dpflows' cost c = ½‖x − y‖²:

* Gaussian noise N(0, σ²I): c = ½‖x − y‖², ε = σ²;
* i.i.d. Laplace(b) coordinates: c = ‖x − y‖₁, ε = b.

The debiased Sinkhorn divergence and unregularised W₂ are minimised at the *noisy* law instead;
they are offered here (``loss="divergence"``, ``loss="w2"``, or a mismatched ``epsilon=``) so that
experiments can show why matching matters.

Two models fit the release: free particles (:class:`ParticleDenoiser`, a flow for ``dpflows.run`` and
``dpflows.sweep``) and a generator trained by :func:`train_generator` (``dpflows.fit`` on a
:class:`GeneratorLoss`; the default network is :class:`dpflows.nn.MLPGenerator`). In both, the
numbers one sweeps — the noise scale, an ε override (``None`` is the :data:`MATCHED` sentinel 0),
the step size — are array leaves, so a grid over them compiles once. (The Sinkhorn tolerance is
still static: :func:`dpflows.ot.entropic_ot` takes it as a Python float.)

Privacy: the model is post-processing of the privatised records, so its guarantee is the
randomiser's per-record certificate (local model, replace-one), whatever the training does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

from . import _validate, ot, privacy
from ._typing import Array, Float, Info, PRNGKeyArray, Real
from .flow import AbstractFlow, fit
from .nn import MLPGenerator
from .particles import Particles
from .privacy import PrivacyCertificate, Release

__all__ = [
    "LOSSES",
    "MATCHED",
    "GaussianNoise",
    "GeneratorLoss",
    "LDPTrainResult",
    "LaplaceNoise",
    "MLPGenerator",
    "ParticleDenoiser",
    "TrainResult",
    "noise_matched_loss",
    "noise_of",
    "train_generator",
    "train_ldp_generator",
]

LOSSES = ("entropic", "divergence", "w2")
#: ε of ``loss="w2"``, relative to the mean cost: the debiased divergence then approximates ½W₂² (bias O(ε²)).
W2_RELATIVE_EPSILON = 0.01


#: The ``epsilon`` leaf of :class:`ParticleDenoiser` and :class:`GeneratorLoss` that means "matched".
MATCHED = 0.0
#: Largest |value| accepted in data, relative to √(largest float): the cost ½‖x − y‖², its gradient and the
#: Sinkhorn potentials stay far from overflow (float32: about 1.8e15; float64: about 1.3e150).
_SCALE_MARGIN = 1e-4


def _scale_limit(dtype: Any) -> float:
    return math.sqrt(float(jnp.finfo(dtype).max)) * _SCALE_MARGIN


def _check_square_fits(name: str, value: Any) -> None:
    """Refuse a concrete scale whose square (the matched ε) overflows its dtype (tracers are skipped)."""
    if not _validate.is_concrete(value):
        return
    arr = np.asarray(value)
    if not np.issubdtype(arr.dtype, np.floating):
        return
    limit = math.sqrt(float(np.finfo(arr.dtype).max))
    if np.any(np.abs(arr) >= limit):
        raise ValueError(
            f"{name} must be below {limit:.3g} in {arr.dtype} (the matched epsilon {name}² would overflow), "
            f"got {float(np.max(np.abs(arr))):.3g}: rescale the data and the noise together"
        )


def _check_data_scale(name: str, value: Array) -> Array:
    """Refuse concrete data so large that the cost or the Sinkhorn potentials overflow (names ``name``)."""
    if not _validate.is_concrete(value) or value.size == 0:
        return value
    peak = float(np.max(np.abs(np.asarray(value))))
    limit = _scale_limit(value.dtype)
    if peak > limit:
        raise ValueError(
            f"{name} must have entries below {limit:.2g} in magnitude in {value.dtype} (the cost "
            f"½‖x − y‖² and the Sinkhorn potentials would overflow), got {peak:.3g}: rescale the data "
            "(and the noise scale with it) or use float64"
        )
    return value


# ------------------------------------------------------------------------------------- noises
class GaussianNoise(eqx.Module):
    """Additive N(0, σ²I) noise; matched loss: c = ½‖x − y‖², ε = σ² (e^{−c(0,z)/ε} ∝ its density)."""

    sigma: Float[Array, ""] = eqx.field(converter=jnp.asarray)
    cost: ClassVar[str] = "sqeuclidean"

    def __check_init__(self):
        _validate.positive("sigma", self.sigma)
        _check_square_fits("sigma", self.sigma)

    @property
    def matched_epsilon(self) -> Array:
        """ε = σ² (for the cost ½‖x − y‖²)."""
        return self.sigma**2

    def sample(self, key: PRNGKeyArray, shape: tuple[int, ...], dtype: Any = None) -> Array:
        """Draw noise of the given shape."""
        dtype = dtype or jnp.result_type(float)
        return self.sigma.astype(dtype) * jr.normal(key, shape, dtype=dtype)


class LaplaceNoise(eqx.Module):
    """Additive i.i.d. Laplace(b) noise per coordinate; matched loss: c = ‖x − y‖₁, ε = b."""

    scale: Float[Array, ""] = eqx.field(converter=jnp.asarray)
    cost: ClassVar[str] = "l1"

    def __check_init__(self):
        _validate.positive("scale", self.scale)

    @property
    def matched_epsilon(self) -> Array:
        """ε = b (for the cost ‖x − y‖₁)."""
        return self.scale

    def sample(self, key: PRNGKeyArray, shape: tuple[int, ...], dtype: Any = None) -> Array:
        """Draw noise of the given shape."""
        dtype = dtype or jnp.result_type(float)
        return self.scale.astype(dtype) * jr.laplace(key, shape, dtype=dtype)


Noise = GaussianNoise | LaplaceNoise


def noise_of(release: Any) -> Noise:
    """The noise a local randomiser added, read from its release (or certificate).

    Example:
        >>> import jax.numpy as jnp, jax.random as jr
        >>> from dpflows import privacy
        >>> rel = privacy.gaussian_ldp(jr.key(0), jnp.zeros((3, 2)), epsilon=1.0, delta=1e-5, radius=1.0)
        >>> round(float(noise_of(rel).sigma), 3)  # the analytic-Gaussian σ for Δ₂ = 2, (1, 1e-5)
        7.461
    """
    cert = release.certificate if isinstance(release, Release) else release
    if not isinstance(cert, PrivacyCertificate):
        raise TypeError(f"release must be a Release or PrivacyCertificate, got {type(release).__name__}")
    kind, scale = cert.parameters.get("kind"), cert.parameters.get("scale")
    if kind == "gaussian" and scale is not None:
        return GaussianNoise(scale)
    if kind == "laplace" and scale is not None:
        return LaplaceNoise(scale)
    raise ValueError(f"release of {cert.mechanism!r} does not describe additive Gaussian or Laplace noise")


def _check_noise(noise):
    if not isinstance(noise, GaussianNoise | LaplaceNoise):
        raise TypeError(f"noise must be a GaussianNoise or LaplaceNoise, got {type(noise).__name__}")


# -------------------------------------------------------------------------------------- loss
class _Solve(NamedTuple):
    value: Array
    potentials: tuple[Array, ...]
    converged: Array
    num_iters: Array


def _epsilon_leaf(epsilon: Any) -> Array:
    """The ``epsilon`` leaf: the :data:`MATCHED` sentinel for ``None``, else the validated override."""
    if epsilon is None:
        return jnp.asarray(MATCHED, jnp.result_type(float))
    _validate.positive("epsilon", epsilon)
    return jnp.asarray(epsilon)


def _resolve_epsilon(epsilon: Array, noise: Noise, loss: str, dtype: Any) -> Array:
    """ε of the solve: the leaf where it is > 0, else the matched ε (or the w2 default, relative)."""
    default = jnp.asarray(W2_RELATIVE_EPSILON if loss == "w2" else noise.matched_epsilon).astype(dtype)
    eps = jnp.asarray(epsilon).astype(dtype)
    return jnp.where(eps > 0, eps, default)


def _loss_solve(x, y, a, b, noise, loss, eps, init, max_iterations, threshold, warn) -> _Solve:
    """One solve of the loss at the resolved ``eps`` (an array, a leaf of the caller)."""
    kw = dict(max_iterations=max_iterations, threshold=threshold, warn=warn, init=init)
    if loss == "w2":
        res = ot.sinkhorn_divergence(x, y, a, b, epsilon=eps, relative_epsilon=True, **kw)
    elif loss == "divergence":
        res = ot.sinkhorn_divergence(x, y, a, b, epsilon=eps, cost=noise.cost, **kw)
    else:
        res = ot.entropic_ot(x, y, a, b, epsilon=eps, cost=noise.cost, **kw)
        return _Solve(res.cost, (res.f, res.g), res.converged, res.num_iters)
    return _Solve(res.value, (res.f_xy, res.g_xy, res.f_xx, res.g_yy), res.converged, res.xy.num_iters)


def _check_loss(loss, noise, epsilon):
    _validate.one_of("loss", loss, LOSSES)
    _check_noise(noise)
    if epsilon is not None:
        _validate.positive("epsilon", epsilon)


def _check_records(name: str, value: Any) -> Array:
    """(m, d) floating, finite records of a representable scale, m ≥ 1 (errors name ``name``)."""
    y = _validate.floating_array(name, value)
    if y.ndim != 2 or y.shape[0] == 0:
        raise ValueError(f"{name} must have shape (m, d) with m >= 1, got {y.shape}")
    return _check_data_scale(name, _validate.finite(name, y))


def noise_matched_loss(
    x_model: Any,
    y_private: Any,
    *,
    noise: Noise,
    a: Any = None,
    b: Any = None,
    loss: str = "entropic",
    epsilon: Any = None,
    max_iterations: int = 1000,
    threshold: Any = 1e-3,
    warn: bool = True,
) -> Float[Array, ""]:
    """The entropic OT cost with cost and ε matched to the privacy noise, differentiable in ``x_model``.

    ``loss="entropic"`` (default): OT_ε(μ_model, ν_private) with (c, ε) = (½‖·‖², σ²) for
    :class:`GaussianNoise` and (‖·‖₁, b) for :class:`LaplaceNoise`; minimised at the clean law.
    Comparators: ``epsilon=`` overrides ε (a mismatched blur); ``loss="divergence"`` is the
    debiased Sinkhorn divergence at the same (c, ε) (minimised at the noisy law);
    ``loss="w2"`` approximates ½W₂² by the debiased divergence at ε = ``epsilon`` (default 0.01)
    relative to the mean cost. Gradients follow the envelope theorem (potentials held fixed).

    Args:
        x_model: (n, d) model samples.
        y_private: (m, d) privatised records.
        noise: the randomiser's noise (:func:`noise_of` reads it from a release).
        a: weights of the model samples (uniform if None).
        b: weights of the private records (uniform if None).
        loss: ``"entropic"``, ``"divergence"`` or ``"w2"``.
        epsilon: ε override (``None`` = matched).
        max_iterations: Sinkhorn iteration budget.
        threshold: Sinkhorn marginal-error tolerance.
        warn: warn if a concrete solve did not converge.

    Example:
        >>> import jax.numpy as jnp, jax.random as jr
        >>> k1, k2, k3 = jr.split(jr.key(0), 3)
        >>> y = 0.5 * jr.normal(k1, (2000, 1)) + 0.5 * jr.normal(k2, (2000, 1))  # clean sd .5, noise sd .5
        >>> x = jr.normal(k3, (1000, 1))
        >>> loss = lambda s: noise_matched_loss(s * x, y, noise=GaussianNoise(0.5))
        >>> bool(loss(0.5) < loss(jnp.sqrt(0.5)))  # the clean sd beats the noisy one
        True
    """
    _check_loss(loss, noise, epsilon)
    x = _validate.floating_array("x_model", x_model)
    if x.ndim == 2 and x.shape[0] > 0:
        _check_data_scale("x_model", x)
    y = _validate.floating_array("y_private", y_private).astype(x.dtype)
    if y.ndim == 2 and y.shape[0] > 0:
        _check_data_scale("y_private", y)
    eps = _resolve_epsilon(_epsilon_leaf(epsilon), noise, loss, x.dtype)
    return _loss_solve(x, y, a, b, noise, loss, eps, None, max_iterations, threshold, warn).value


# --------------------------------------------------------------------------------- generators
class TrainResult(NamedTuple):
    """What :func:`train_generator` returns.

    Attributes:
        generator: the trained generator.
        opt_state: the optimizer state (to continue training).
        loss: the loss at every step, (num_steps,).
        converged: whether each step's Sinkhorn solve converged, (num_steps,).
    """

    generator: Any
    opt_state: Any
    loss: Array
    converged: Array


def _data_batch(key, y, size):
    if size is None:
        return y
    idx = jr.choice(key, y.shape[0], (size,), replace=False)
    return y[idx]


class GeneratorLoss(eqx.Module):
    """The trainer's objective as a stable module: ``loss(generator, key) -> (value, {"converged": ...})``.

    One call draws ``batch_size`` latents z ~ N(0, I_k) and a data batch (all records, or
    ``data_batch_size`` of them uniformly without replacement) from ``key`` and returns
    OT_ε(G#z, y) by :func:`noise_matched_loss` (differentiable in the generator's weights; envelope
    theorem). It holds the privatised records and the privacy knobs as array leaves (``noise``
    scale, ``epsilon`` with the :data:`MATCHED` sentinel), so losses at different noise levels or ε
    stack, and ``jax.vmap`` of a function calling :func:`dpflows.fit` over them compiles once.
    The Sinkhorn ``threshold`` is a leaf too; ``batch_size``, ``latent_dim``, ``loss``,
    ``data_batch_size`` and ``max_iterations`` are static.

    Args:
        y_private: (m, d) privatised records.
        noise: the randomiser's noise (sets the matched cost and ε).
        batch_size: model samples per step.
        latent_dim: latent size k.
        loss: ``"entropic"`` (matched), ``"divergence"`` or ``"w2"``.
        epsilon: ε override (``None``: matched).
        data_batch_size: private records per step (None: all of them).
        max_iterations: Sinkhorn iterations per step.
        threshold: Sinkhorn tolerance.

    Example:
        >>> import jax.numpy as jnp, jax.random as jr, optax, dpflows
        >>> y = jr.normal(jr.key(0), (200, 2))
        >>> loss = GeneratorLoss(y, noise=GaussianNoise(0.5), batch_size=64, latent_dim=2)
        >>> gen = MLPGenerator(jr.key(1), latent_dim=2, data_dim=2, width=16, depth=1)
        >>> res = dpflows.fit(loss, gen, optax.adam(1e-2), jr.key(2), 5, has_aux=True)
        >>> res.trace.info["loss"].shape, res.trace.info["converged"].dtype
        ((5,), dtype('bool'))
    """

    y_private: Float[Array, "m d"]
    noise: Noise
    epsilon: Float[Array, ...]
    batch_size: int = eqx.field(static=True)
    latent_dim: int = eqx.field(static=True)
    loss: str = eqx.field(static=True, default="entropic")
    data_batch_size: int | None = eqx.field(static=True, default=None)
    max_iterations: int = eqx.field(static=True, default=500)
    threshold: Float[Array, ""] = eqx.field(converter=jnp.asarray, default=1e-3)

    def __init__(
        self,
        y_private: Any,
        *,
        noise: Noise,
        batch_size: int,
        latent_dim: int,
        loss: str = "entropic",
        epsilon: Any = None,
        data_batch_size: int | None = None,
        max_iterations: int = 500,
        threshold: Any = 1e-3,
    ):
        """See the class docstring."""
        _check_loss(loss, noise, epsilon)
        y = _check_records("y_private", y_private)
        self.batch_size = _validate.positive_int("batch_size", batch_size)
        self.latent_dim = _validate.positive_int("latent_dim", latent_dim)
        if data_batch_size is not None:
            data_batch_size = _validate.positive_int("data_batch_size", data_batch_size)
            if data_batch_size > y.shape[0]:
                raise ValueError(
                    f"data_batch_size must be <= the number of records {y.shape[0]}, got {data_batch_size}"
                )
        self.max_iterations = _validate.positive_int("max_iterations", max_iterations)
        _validate.positive("threshold", threshold)
        self.y_private, self.noise, self.loss = y, noise, loss
        self.epsilon = _epsilon_leaf(epsilon)
        self.threshold = jnp.asarray(threshold)
        self.data_batch_size = data_batch_size

    def __call__(self, generator: Callable[[Array], Array], key: PRNGKeyArray) -> tuple[Array, Info]:
        """The loss of ``generator`` on one step's latents and data batch drawn from ``key``."""
        y = self.y_private
        kz, ky = jr.split(key)
        z = jr.normal(kz, (self.batch_size, self.latent_dim), dtype=y.dtype)
        yb = _data_batch(ky, y, self.data_batch_size)
        x = jax.vmap(generator)(z).astype(y.dtype)
        eps = _resolve_epsilon(self.epsilon, self.noise, self.loss, y.dtype)
        res = _loss_solve(
            x, yb, None, None, self.noise, self.loss, eps, None, self.max_iterations, self.threshold, False
        )
        return res.value, {"converged": res.converged}


def _optimizer(optimizer: Any, learning_rate: Any) -> optax.GradientTransformation:
    """``optimizer`` as given, or Adam with ``learning_rate`` as a state leaf (no recompile per value)."""
    if (optimizer is None) == (learning_rate is None):
        raise ValueError("pass exactly one of optimizer= (an optax transformation) and learning_rate=")
    if optimizer is not None:
        if not isinstance(optimizer, optax.GradientTransformation):
            raise TypeError(f"optimizer must be an optax.GradientTransformation, got {type(optimizer).__name__}")
        return optimizer
    _validate.positive("learning_rate", learning_rate)
    return optax.inject_hyperparams(optax.adam)(learning_rate=jnp.asarray(learning_rate))


def _check_generator(generator: Any, latent_dim: int | None, y: Array) -> int:
    latent_dim = getattr(generator, "latent_dim", None) if latent_dim is None else latent_dim
    if latent_dim is None:
        raise ValueError("latent_dim must be given (the generator has no latent_dim attribute)")
    latent_dim = _validate.positive_int("latent_dim", latent_dim)
    try:
        probe = jax.eval_shape(generator, jax.ShapeDtypeStruct((latent_dim,), y.dtype))
    except (TypeError, ValueError) as err:
        raise ValueError(f"generator must map a latent ({latent_dim},) to a sample {y.shape[1:]}: {err}") from err
    if getattr(probe, "shape", None) != y.shape[1:]:
        raise ValueError(
            f"generator must map a latent ({latent_dim},) to a sample {y.shape[1:]}, "
            f"got {getattr(probe, 'shape', probe)}"
        )
    return latent_dim


def train_generator(
    generator: Callable[[Array], Array],
    y_private: Any,
    *,
    noise: Noise,
    num_steps: int,
    batch_size: int,
    key: PRNGKeyArray,
    optimizer: optax.GradientTransformation | None = None,
    learning_rate: Any = None,
    data_batch_size: int | None = None,
    latent_dim: int | None = None,
    loss: str = "entropic",
    epsilon: Any = None,
    opt_state: Any = None,
    max_iterations: int = 500,
    threshold: Any = 1e-3,
    progress: bool = False,
    chunk_size: int | None = None,
    checkpoint: Any = None,
    checkpoint_every: int | None = None,
    throw: bool = True,
) -> TrainResult:
    """Fit an equinox generator to privatised records by minimising :func:`noise_matched_loss`.

    Each step draws ``batch_size`` latents z ~ N(0, I), a data batch (all records if
    ``data_batch_size`` is None, else a uniform subset without replacement) and takes an optax step on
    ∇_θ OT_ε(G_θ#z, y). Minibatch entropic OT has a different minimiser than the population loss
    (METHODS.md §5c): keep data batches in the thousands. The loop is :func:`dpflows.fit` on a
    :class:`GeneratorLoss`: step i draws from ``fold_in(key, i)`` (the same bits however it is
    chunked), with a progress bar between compiled chunks and atomic checkpoints / bitwise resume
    (``checkpoint=`` a folder).

    Args:
        generator: an equinox module mapping one latent vector to one sample (its inexact arrays
            are trained; e.g. :class:`MLPGenerator`).
        y_private: (m, d) privatised records.
        noise: the randomiser's noise (sets the matched cost and ε).
        num_steps: optimisation steps (0 returns the generator unchanged).
        batch_size: model samples per step.
        key: PRNG key for latents and data batches.
        optimizer: an optax transformation, e.g. ``optax.adam(1e-3)``.
        learning_rate: instead of ``optimizer``: Adam with this learning rate held in the optimizer
            state (``optax.inject_hyperparams``), so runs at different rates share compiled code.
        data_batch_size: private records per step (None: all of them).
        latent_dim: latent size (default: ``generator.latent_dim``).
        loss: ``"entropic"`` (matched), ``"divergence"`` or ``"w2"`` (see :func:`noise_matched_loss`).
        epsilon: ε override (a mismatched blur).
        opt_state: optimizer state to continue from (default: ``optimizer.init``).
        max_iterations: Sinkhorn iterations per step.
        threshold: Sinkhorn tolerance.
        progress: show a progress bar.
        chunk_size: steps per compiled chunk (default: the runtime's).
        checkpoint: folder for checkpoints; an interrupted call with the same arguments resumes.
        checkpoint_every: steps between checkpoints.
        throw: raise if the loss or the weights end non-finite (else warn; read ``trace.ok``).

    Returns:
        :class:`TrainResult` (``converged[i]``: step i's Sinkhorn solve met ``threshold``).
    """
    _check_loss(loss, noise, epsilon)
    y = _check_records("y_private", y_private)
    num_steps = _validate.positive_int("num_steps", num_steps, allow_zero=True)
    batch_size = _validate.positive_int("batch_size", batch_size)
    if chunk_size is not None:
        chunk_size = _validate.positive_int("chunk_size", chunk_size)
    latent_dim = _check_generator(generator, latent_dim, y)
    optimizer = _optimizer(optimizer, learning_rate)
    objective = GeneratorLoss(
        y,
        noise=noise,
        batch_size=batch_size,
        latent_dim=latent_dim,
        loss=loss,
        epsilon=epsilon,
        data_batch_size=data_batch_size,
        max_iterations=max_iterations,
        threshold=threshold,
    )
    res = fit(
        objective,
        generator,
        optimizer,
        key,
        num_steps,
        has_aux=True,
        opt_state=opt_state,
        progress=progress,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        chunk_size=chunk_size,
        throw=throw,
    )
    info = res.trace.info
    values = info["loss"] if num_steps else jnp.zeros((0,), y.dtype)
    converged = info["converged"] if num_steps else jnp.zeros((0,), bool)
    return TrainResult(res.model, res.opt_state, values, converged)


class LDPTrainResult(NamedTuple):
    """What :func:`train_ldp_generator` returns.

    Attributes:
        generator: the trained generator (post-processing of the release).
        loss: per-step loss. certificate: the per-record LDP certificate (covers the generator too).
        noise: the noise description used for the matched loss.
        privatized: the privatised records (only with ``return_privatized=True``, else None).
    """

    generator: Any
    loss: Array
    certificate: PrivacyCertificate
    noise: Noise
    privatized: Array | None


def train_ldp_generator(
    key: PRNGKeyArray,
    generator: Callable[[Array], Array],
    x: Any,
    *,
    mechanism: str,
    epsilon: Real,
    delta: Real | None = None,
    radius: Real | None = None,
    bound: Real | None = None,
    noise_key: Any = None,
    return_privatized: bool = False,
    **train_kwargs: Any,
) -> LDPTrainResult:
    """Privatise every record locally, then train a generator on the release with the matched loss.

    ``mechanism="gaussian"`` calls :func:`dpflows.privacy.gaussian_ldp` (ball of ``radius``,
    (ε, δ) analytic Gaussian); ``"laplace"`` calls :func:`dpflows.privacy.laplace_ldp` (box
    [−bound, bound]ᵈ, ε). The generator is post-processing, so the returned certificate — the
    randomiser's, per record — covers it.

    Args:
        key: PRNG key for training (latents, batches). Not used for the privacy noise.
        generator: as in :func:`train_generator`.
        x: (n, d) raw records (never returned).
        mechanism: ``"gaussian"`` or ``"laplace"``.
        epsilon: per-record ε.
        delta: per-record δ (Gaussian).
        radius: L2 radius of the Gaussian domain.
        bound: box half-width of the Laplace domain.
        noise_key: key of the privacy noise; ``None`` draws a secret one from OS entropy
            (:func:`dpflows.privacy.release_key`). A reproducible key voids the guarantee for anyone
            who knows it.
        return_privatized: also return the privatised records (for audits and plots).
        **train_kwargs: passed to :func:`train_generator` (``optimizer``, ``num_steps``, ...).
    """
    _validate.one_of("mechanism", mechanism, ("gaussian", "laplace"))
    if mechanism == "gaussian":
        if delta is None or radius is None:
            raise ValueError("mechanism='gaussian' needs delta and radius")
        release = privacy.gaussian_ldp(noise_key, x, epsilon=epsilon, delta=delta, radius=radius)
    else:
        if bound is None:
            raise ValueError("mechanism='laplace' needs bound")
        release = privacy.laplace_ldp(noise_key, x, epsilon=epsilon, bound=bound)
    noise = noise_of(release)
    result = train_generator(generator, release.value, noise=noise, key=key, **train_kwargs)
    return LDPTrainResult(
        result.generator, result.loss, release.certificate, noise, release.value if return_privatized else None
    )


# --------------------------------------------------------------------------------- particles
class ParticleDenoiser(AbstractFlow):
    """Free particles moving down the noise-matched loss: the non-parametric variant.

    One step (weights aᵢ, fixed):

        xᵢ ← xᵢ − h · ∇_{xᵢ} L(μ, ν) / aᵢ,

    with L = :func:`noise_matched_loss`. For the matched Gaussian loss ∇_{xᵢ}L/aᵢ = xᵢ − T(xᵢ), T the
    entropic barycentric map onto the private records, so h = 1 is the fixed-point iteration
    x ← T(x). Sinkhorn warm-starts from the previous step's potentials (``aux``). ``info``: ``loss``
    (before the move), ``converged`` (the inner Sinkhorn solve met ``threshold``; the runtime reads
    it to tell an unconverged solve from a too-large step), ``num_iters``.

    The privacy and accuracy knobs are array leaves, so denoisers at different noise scales, ε
    overrides or step sizes stack and ``dpflows.sweep`` over them compiles once: ``noise`` (σ or
    b), ``step_size`` and ``epsilon`` (the :data:`MATCHED` sentinel 0 when ``None``: the ε actually
    used is then the noise's matched ε, so a matched and a mismatched member share one sweep).
    and the Sinkhorn ``threshold``. ``loss``, ``data_batch_size`` and ``max_iterations`` change the
    program and are static.

    Args:
        y_private: (m, d) privatised records (finite, below ~1e15 in float32).
        noise: the randomiser's noise.
        step_size: h > 0.
        loss: ``"entropic"`` (matched), ``"divergence"`` or ``"w2"``.
        epsilon: ε override (mismatched blur); ``None``: matched.
        data_batch_size: records per step (None: all, deterministic flow).
        max_iterations: Sinkhorn iterations per step.
        threshold: Sinkhorn tolerance (L1 marginal error).

    Example:
        >>> import jax.numpy as jnp, jax.random as jr
        >>> import dpflows
        >>> k1, k2, k3 = jr.split(jr.key(0), 3)
        >>> y = 2.0 * jr.normal(k1, (1000, 1)) + jr.normal(k2, (1000, 1))  # clean sd 2, noise sd 1
        >>> flow = ParticleDenoiser(y, noise=GaussianNoise(1.0), step_size=1.0)
        >>> state, _ = dpflows.run(flow, flow.init(jr.normal(k3, (300, 1))), jr.key(1), 100)
        >>> bool(abs(jnp.std(state.x) - 2.0) < 0.25)  # the clean sd, not the noisy √5 ≈ 2.24
        True
    """

    y_private: Float[Array, "m d"]
    noise: Noise
    step_size: Float[Array, ...]
    epsilon: Float[Array, ...]
    loss: str = eqx.field(static=True, default="entropic")
    data_batch_size: int | None = eqx.field(static=True, default=None)
    max_iterations: int = eqx.field(static=True, default=200)
    threshold: Float[Array, ""] = eqx.field(converter=jnp.asarray, default=1e-3)

    def __check_init__(self):
        _check_loss(self.loss, self.noise, None)
        _validate.positive("epsilon", self.epsilon, allow_zero=True)  # 0 is the MATCHED sentinel
        y = self.y_private
        if not isinstance(y, jax.Array) or y.ndim != 2 or y.shape[0] == 0:
            raise ValueError(f"y_private must be an array (m, d) with m >= 1, got {getattr(y, 'shape', y)}")
        _check_data_scale("y_private", _validate.finite("y_private", y))
        _validate.positive("step_size", self.step_size)
        _validate.positive("threshold", self.threshold)
        if self.data_batch_size is not None:
            _validate.positive_int("data_batch_size", self.data_batch_size)
            if self.data_batch_size > y.shape[0]:
                raise ValueError(f"data_batch_size must be <= {y.shape[0]}, got {self.data_batch_size}")
        _validate.positive_int("max_iterations", self.max_iterations)

    def __init__(
        self,
        y_private: Any,
        *,
        noise: Noise,
        step_size: Any,
        loss: str = "entropic",
        epsilon: Any = None,
        data_batch_size: int | None = None,
        max_iterations: int = 200,
        threshold: Any = 1e-3,
    ):
        """See the class docstring."""
        _check_loss(loss, noise, epsilon)
        self.y_private = _validate.floating_array("y_private", y_private)
        self.noise = noise
        self.step_size = jnp.asarray(step_size)
        self.loss = loss
        self.epsilon = _epsilon_leaf(epsilon)
        self.data_batch_size = data_batch_size
        self.max_iterations = max_iterations
        self.threshold = jnp.asarray(threshold)

    @property
    def effective_epsilon(self) -> Array:
        """The ε the solve uses: the override, or the matched ε where ``epsilon`` is :data:`MATCHED`.

        (For ``loss="w2"`` it is relative to the mean cost.)
        """
        return _resolve_epsilon(self.epsilon, self.noise, self.loss, self.y_private.dtype)

    def _num_records(self) -> int:
        return self.y_private.shape[0] if self.data_batch_size is None else self.data_batch_size

    def init(self, x: Any, logw: Any = None) -> Particles:
        """Particles at ``x`` (n, d) with zero warm-start potentials in ``aux``."""
        state = Particles.create(x, logw)
        if state.x.ndim != 2 or state.x.shape[1] != self.y_private.shape[1]:
            raise ValueError(f"x must have shape (n, {self.y_private.shape[1]}), got {state.x.shape}")
        _check_data_scale("x", state.x)
        n, m, dtype = state.x.shape[0], self._num_records(), state.x.dtype
        zeros = (jnp.zeros((n,), dtype), jnp.zeros((m,), dtype))
        if self.loss != "entropic":
            zeros = (*zeros, jnp.zeros((n,), dtype), jnp.zeros((m,), dtype))
        return Particles(x=state.x, logw=state.logw, v=state.v, t=state.t, aux=zeros)

    def step(self, state: Particles, key: PRNGKeyArray) -> tuple[Particles, Info]:
        """One gradient step of the particles on the loss (see the class docstring)."""
        dtype = state.x.dtype
        y = _data_batch(key, self.y_private.astype(dtype), self.data_batch_size)
        a = state.weights
        eps = _resolve_epsilon(self.epsilon, self.noise, self.loss, dtype)
        init = tuple(jax.lax.stop_gradient(p) for p in state.aux)

        def objective(x):
            res = _loss_solve(
                x, y, a, None, self.noise, self.loss, eps, init, self.max_iterations, self.threshold, False
            )
            return res.value, res

        (value, res), grad = jax.value_and_grad(objective, has_aux=True)(state.x)
        safe_a = jnp.where(a > 0, a, 1.0)[:, None]
        x = state.x - self.step_size.astype(dtype) * grad / safe_a
        t = state.t + self.step_size.astype(state.t.dtype)
        new = Particles(x=x, logw=state.logw, v=state.v, t=t, aux=res.potentials)
        return new, {"loss": value, "converged": res.converged, "num_iters": res.num_iters}
