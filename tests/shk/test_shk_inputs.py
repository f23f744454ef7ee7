"""Bad input to the SHK module fails early with the argument's name."""

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from dpflows import shk
from dpflows.potentials import GaussianPotential

V = GaussianPotential(jnp.zeros(2), jnp.eye(2))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"step_size": 0.0}, "step_size"),
        ({"step_size": -1.0}, "step_size"),
        ({"step_size": float("nan")}, "step_size"),
        ({"step_size": 0.1, "transport": -1.0}, "transport"),
        ({"step_size": 0.1, "reaction": float("inf")}, "reaction"),
        ({"step_size": 0.1, "bandwidth": 0.0}, "bandwidth"),
        ({"step_size": 0.1, "ess_threshold": 1.5}, "ess_threshold"),
        ({"step_size": 0.1, "scheme": "birth"}, "scheme"),
        ({"step_size": 0.1, "chunk_size": 0}, "chunk_size"),
    ],
)
def test_sampler_refuses_bad_hyperparameters(kwargs, name):
    with pytest.raises((ValueError, TypeError), match=name):
        shk.SHKSampler(V, **kwargs)


def test_init_refuses_bad_states():
    flow = shk.SHKSampler(V, step_size=0.1, transport=0.0)
    with pytest.raises(ValueError, match="x"):
        flow.init(jnp.full((4, 2), jnp.nan))
    with pytest.raises(ValueError, match="x"):
        flow.init(jnp.zeros((0, 2)))
    with pytest.raises(ValueError, match="log_density0"):
        flow.init(jnp.zeros((4, 2)), log_density0=jnp.zeros(3))
    with pytest.raises(ValueError, match="log_density0"):
        flow.init(jnp.zeros((4, 2)), log_density0=jnp.array([0.0, -jnp.inf, 0.0, 0.0]))
    with pytest.raises(ValueError, match="transport=0"):
        shk.SHKSampler(V, step_size=0.1).init(jnp.zeros((4, 2)), log_density0=jnp.zeros(4))
    jump = shk.SHKSampler(V, step_size=0.1, transport=0.0, scheme="jump")
    with pytest.raises(ValueError, match="scheme='weighted'"):
        jump.init(jnp.zeros((4, 2)), log_density0=jnp.zeros(4))
    with pytest.raises(ValueError, match="logw must be uniform"):
        jump.init(jnp.zeros((2, 2)), jnp.log(jnp.array([0.3, 0.7])))
    with pytest.raises(TypeError, match="potential"):
        shk.SHKSampler(3.0, step_size=0.1)


def test_privacy_functions_refuse_bad_arguments():
    loss = lambda theta, data: jnp.sum(theta)  # noqa: E731
    with pytest.raises(ValueError, match="epsilon"):
        shk.exponential_mechanism(loss, None, sensitivity=1.0, epsilon=0.0)
    with pytest.raises(ValueError, match="sensitivity"):
        shk.exponential_mechanism(loss, None, sensitivity=-1.0, epsilon=1.0)
    with pytest.raises(TypeError, match="loss"):
        shk.exponential_mechanism(None, None, sensitivity=1.0, epsilon=1.0)
    good = {"sensitivity": 1.0, "inverse_temperature": 1.0, "time": 1.0}
    for name, bad in [
        ("sensitivity", 0.0),
        ("inverse_temperature", -1.0),
        ("time", -1.0),
        ("reaction", np.nan),
        ("delta", 1.0),
        ("delta", 0.0),
    ]:
        with pytest.raises(ValueError, match=name):
            shk.dp_certificate(**{**good, name: bad})
    with pytest.raises(ValueError, match="precision"):
        shk.gaussian_law([0.0], [[1.0]], [0.0], [[-1.0]], 1.0)
    with pytest.raises(ValueError, match="mean0"):
        shk.gaussian_law([0.0, 1.0], [[1.0]], [0.0], [[1.0]], 1.0)
    with pytest.raises(ValueError, match="cov0"):
        shk.gaussian_shift_divergence([[1.0]], [1.0], [[1.0, 0.0]], 1.0)
    with pytest.raises(ValueError, match="kl"):
        shk.delta_from_kl(-0.1, 0.0)
    with pytest.raises(ValueError, match="time is required"):
        shk.utility_bound(inverse_temperature=1.0, dimension=1, loss_oscillation=1.0, initial_log_ratio_oscillation=1.0)
    with pytest.raises(ValueError, match="num_particles"):
        shk.private_sample(
            jr.key(0), V, initial=lambda k, n: jnp.zeros((n, 2)), log_density0=lambda x: 0.0, num_particles=0, time=1.0
        )
    with pytest.raises(TypeError, match="certificate"):
        shk.release(jr.key(0), shk.SHKSampler(V, step_size=0.1).init(jnp.zeros((2, 2))), certificate=1.0)
