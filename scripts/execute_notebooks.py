"""Execute percent-format notebook sources and write the executed .ipynb next to each (``make notebooks``).

python scripts/execute_notebooks.py notebooks/*.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import jupytext
import nbclient


def main(paths: list[str]) -> None:
    """Execute each source in a fresh kernel and write its .ipynb."""
    os.environ.pop("MPLBACKEND", None)  # the Makefile's Agg would hide the figures; the kernel uses inline
    for path in map(Path, paths):
        nb = jupytext.read(path)
        nbclient.NotebookClient(
            nb, timeout=1200, kernel_name="python3", resources={"metadata": {"path": "."}}
        ).execute()
        jupytext.write(nb, path.with_suffix(".ipynb"))
        print(f"executed {path} -> {path.with_suffix('.ipynb')}")


if __name__ == "__main__":
    main(sys.argv[1:])
