"""Our own error messages, as users see them (no jaxtyping import hook in this subprocess)."""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import jax.numpy as jnp, jax.random as jr
    import dpflows
    from dpflows.langevin import ULA
    from dpflows.potentials import GaussianPotential
    from dpflows import shk

    V = GaussianPotential(jnp.zeros(2), jnp.eye(2))

    flow = ULA(GaussianPotential(jnp.zeros(2), jnp.eye(2)), step_size=0.1)
    state = flow.init(jnp.zeros((4, 2)))
    cases = [
        (lambda: dpflows.run(flow, state, 0, 5), "key must be a PRNG key"),
        (lambda: dpflows.run(flow, state, jr.key(0), 2.5), "num_steps must be an int"),
        (lambda: dpflows.run(flow, state.x, jr.key(0), 5), "state must be a dpflows.Particles"),
        (lambda: dpflows.run(None, state, jr.key(0), 5), "flow must be a dpflows.AbstractFlow"),
        (lambda: ULA(3.0, step_size=0.1), "potential must be callable"),
        (lambda: dpflows.Particles(x=jnp.zeros((3, 2)), logw=jnp.zeros(2), v=jnp.zeros((3, 2)), t=jnp.zeros(())),
         "logw must have shape"),
        (lambda: dpflows.sweep([flow], state, jr.key(0), 5, state_in_axes=1), "state_in_axes must be None or 0"),
        (lambda: shk.SHKSampler(V, step_size=0.0), "step_size must be finite and > 0"),
        (lambda: shk.SHKSampler(V, step_size=0.1, reaction=-1.0), "reaction must be finite and >= 0"),
        (lambda: shk.SHKSampler(V, step_size=0.1, scheme="birth"), "scheme must be one of"),
        (lambda: shk.SHKSampler(V, step_size=0.1).init(jnp.zeros((4, 2)), log_density0=jnp.zeros(4)),
         "needs transport=0"),
        (lambda: shk.exponential_mechanism(lambda t, d: 0.0, None, sensitivity=1.0, epsilon=-1.0),
         "epsilon must be finite and > 0"),
        (lambda: shk.dp_certificate(sensitivity=1.0, inverse_temperature=1.0, time=1.0, transport=1.0),
         "transport_bound is required"),
        (lambda: shk.inverse_temperature(1.0, 0.0), "sensitivity must be finite and > 0"),
        (lambda: shk.SHKSampler(GaussianPotential(jnp.zeros(3), jnp.eye(3)), step_size=0.1).step(
            shk.SHKSampler(V, step_size=0.1).init(jnp.zeros((4, 2))), jr.key(0)),
         "the particles x have shape (4, 2)"),
    ]
    for fn, expected in cases:
        try:
            fn()
        except (TypeError, ValueError) as err:
            assert expected in str(err), (expected, str(err))
        else:
            raise AssertionError(f"no error for {expected!r}")
    print("ok", len(cases))
    """
)


def test_error_messages_name_the_argument():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "ok 15"
