"""Every notebook: the committed .ipynb matches its percent-format source, and the source runs at
small size (in a subprocess: the kernel talks over local sockets, which this test process disables)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "notebooks").glob("*.py"))

RUNNER = """
import sys, jupytext, nbclient
nb = jupytext.read(sys.argv[1])
nbclient.NotebookClient(nb, timeout=600, kernel_name="python3").execute()
print("executed", len(nb.cells), "cells")
"""


@pytest.mark.parametrize("source", SOURCES, ids=[s.stem for s in SOURCES])
def test_notebook_is_in_sync_with_its_source(source):
    import jupytext

    ipynb = source.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.name} missing: run `make notebooks`"
    from_py = [c.source for c in jupytext.read(source).cells]
    committed = jupytext.read(ipynb)
    assert from_py == [c.source for c in committed.cells], f"{ipynb.name} is stale: run `make notebooks`"
    assert all(c.get("outputs") is not None for c in committed.cells if c.cell_type == "code")
    assert any(c.get("outputs") for c in committed.cells if c.cell_type == "code"), "commit the executed notebook"


@pytest.mark.parametrize("source", SOURCES, ids=[s.stem for s in SOURCES])
def test_notebook_runs_at_small_size(source):
    env = {"DPFLOWS_NOTEBOOK_SMALL": "1", "MPLBACKEND": "Agg", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", RUNNER, str(source)], capture_output=True, text=True, timeout=900, env=env, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr[-4000:]
