"""A sweep under ``jax.distributed`` with two local processes equals the single-process sweep.

Two processes × two CPU devices each form one global mesh of four devices on loopback (gloo
collectives); the members are padded to a multiple of four and placed from each process's own copy
of the flows, as on a multi-host cluster. The test process itself has four CPU devices (conftest),
so its sweep pads and shards the same way.
"""

import subprocess
import sys
import textwrap

import jax.numpy as jnp
import jax.random as jr
import numpy as np

import dpflows
from dpflows.langevin import ULA
from dpflows.potentials import GaussianPotential

WORKER = textwrap.dedent(
    """
    import sys
    pid, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    import jax
    jax.config.update("jax_num_cpu_devices", 2)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=pid, initialization_timeout=90)
    import jax.numpy as jnp, jax.random as jr, numpy as np
    import dpflows
    from dpflows.langevin import ULA
    from dpflows.potentials import GaussianPotential
    assert jax.process_count() == 2 and jax.device_count() == 4 and jax.local_device_count() == 2
    target = GaussianPotential(jnp.ones(2), jnp.array([[2.0, 0.3], [0.3, 1.0]]))
    flows = [ULA(target, step_size=h) for h in (0.01, 0.03, 0.05, 0.07, 0.09)]
    state = dpflows.Particles.uniform(jr.normal(jr.key(0), (32, 2)))
    final, trace = dpflows.sweep(flows, state, jr.key(1), 60, independent_keys=True, record_every=20)
    np.savez(f"{out}/p{pid}.npz", x=np.asarray(final.x), e=np.asarray(trace["energy"]),
             ok=np.asarray(trace.ok), rec=np.asarray(trace.states.x))
    print("done", pid)
    """
)

FREE_PORT = "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"


def test_sweep_over_two_processes_equals_the_single_process_sweep(tmp_path):
    port = subprocess.run([sys.executable, "-c", FREE_PORT], capture_output=True, text=True, check=True).stdout.strip()
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "JAX_PLATFORMS": "cpu"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(i), port, str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
        assert "done" in out

    target = GaussianPotential(jnp.ones(2), jnp.array([[2.0, 0.3], [0.3, 1.0]]))
    flows = [ULA(target, step_size=h) for h in (0.01, 0.03, 0.05, 0.07, 0.09)]
    state = dpflows.Particles.uniform(jr.normal(jr.key(0), (32, 2)))
    final, trace = dpflows.sweep(flows, state, jr.key(1), 60, independent_keys=True, record_every=20)
    for i in range(2):
        got = np.load(tmp_path / f"p{i}.npz")
        assert got["x"].shape == (5, 32, 2)  # every process holds the gathered result
        np.testing.assert_allclose(got["x"], np.asarray(final.x), rtol=0, atol=1e-5)
        np.testing.assert_allclose(got["e"], np.asarray(trace["energy"]), rtol=1e-5)
        np.testing.assert_allclose(got["rec"], np.asarray(trace.states.x), rtol=0, atol=1e-5)
        np.testing.assert_array_equal(got["ok"], np.asarray(trace.ok))
