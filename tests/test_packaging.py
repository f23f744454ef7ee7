"""Supply chain and hygiene checks (RELIABILITY.md §6)."""

import ast
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "dpflows"


def test_import_is_inert(tmp_path):
    # SEC-1: no network, no files written under HOME, nothing printed, no JAX backend started.
    script = textwrap.dedent(
        """
        import socket, urllib.request
        def refuse(*a, **k):
            raise RuntimeError("network access at import")
        socket.socket = refuse
        socket.create_connection = refuse
        urllib.request.urlopen = refuse
        import dpflows, dpflows.langevin, dpflows.experiments, dpflows.cli
        from jax._src import xla_bridge
        assert not xla_bridge._backends, "a JAX backend was initialised at import"
        """
    )
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"), "MPLCONFIGDIR": str(home / "mpl")}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout == ""
    assert not any(home.rglob("*")), list(home.rglob("*"))


BANNED_CALLS = {"eval", "exec"}
BANNED_MODULES = {"pickle", "cloudpickle", "dill", "marshal", "shelve"}


def test_no_pickle_eval_or_unsafe_yaml_in_src():
    # SEC-2: AST scan of the package.
    problems = []
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                problems += [f"{path}: imports {m}" for m in mods if m.split(".")[0] in BANNED_MODULES]
            if isinstance(node, ast.Call):
                fn = node.func
                name = fn.id if isinstance(fn, ast.Name) else fn.attr if isinstance(fn, ast.Attribute) else ""
                if name in BANNED_CALLS and not _is_annotation_eval(path, node):
                    problems.append(f"{path}:{node.lineno}: calls {name}")
                if name == "load" and isinstance(fn, ast.Attribute) and getattr(fn.value, "id", "") == "yaml":
                    problems.append(f"{path}:{node.lineno}: yaml.load (use yaml.safe_load)")
                for kw in node.keywords:
                    if kw.arg == "allow_pickle" and not (
                        isinstance(kw.value, ast.Constant) and kw.value.value is False
                    ):
                        problems.append(f"{path}:{node.lineno}: allow_pickle not False")
    assert not problems, problems


def _is_annotation_eval(path, node):
    # The config parser evaluates our own dataclass annotation strings (never user input).
    return path.name == "_registry.py" and isinstance(node.args[0], ast.Name) and node.args[0].id == "annotation"


def test_dependency_ranges():
    # SEC-3: lower bounds everywhere, upper bounds on the JAX family, no direct URLs.
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = meta["dependencies"] + [d for group in meta["optional-dependencies"].values() for d in group]
    jax_family = {"jax", "jaxlib", "ott-jax", "equinox", "optax", "chex", "orbax-checkpoint", "dp-accounting"}
    for dep in deps:
        assert not any(bad in dep for bad in ("git+", "://", " @ ")), dep
        name = re.split(r"[<>=!~\[ ;]", dep, maxsplit=1)[0].strip().lower()
        assert ">=" in dep, f"{dep} has no lower bound"
        if name in jax_family:
            assert "<" in dep.replace("<=", ""), f"{dep} needs an upper bound at the next untested minor"
    lock = (ROOT / "requirements.lock").read_text()
    assert "--hash=sha256:" in lock
    assert re.search(r"^jax==0\.10\.", lock, re.M)


def test_no_literal_prng_keys_in_src():
    # RUN-5: keys come from the caller; no PRNGKey(0)/key(0) literals in the library.
    pattern = re.compile(r"(PRNGKey|random\.key|jr\.key)\(\s*\d+\s*\)")
    hits = []
    for path in SRC.rglob("*.py"):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            stripped = line.strip()
            if pattern.search(line) and not stripped.startswith((">>>", "...", "#")):
                hits.append(f"{path}:{i}: {stripped}")
    assert not hits, hits


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in ci
    assert "make test" in readme
    assert "make demo" in readme


def _lock_blocks() -> dict[str, tuple[str, list[str]]]:
    """requirements.lock as {name: (version, [sha256 hashes])}."""
    blocks: dict[str, tuple[str, list[str]]] = {}
    name = None
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line)
        if m:
            name = m.group(1).lower()
            blocks[name] = (m.group(2), [])
        elif name and "--hash=sha256:" in line:
            blocks[name][1].append(line.split("--hash=sha256:")[1].split()[0])
    return blocks


def test_build_backend_and_its_dependencies_are_pinned_and_hashed():
    # SEC-3: `pip install -e .` used to fetch hatchling unpinned and unhashed (build isolation).
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]
    backends = [re.split(r"[<>=!~\[ ;]", req, maxsplit=1)[0].lower() for req in build["requires"]]
    assert backends == ["hatchling"]
    blocks = _lock_blocks()
    # hatchling's own requirements (python >= 3.11: no tomli), editables (hatchling's editable
    # builds of a src layout ask for it), and pytest-xdist's.
    for name in [
        "hatchling",
        "packaging",
        "pathspec",
        "pluggy",
        "trove-classifiers",
        "editables",
        "pytest-xdist",
        "execnet",
    ]:
        assert name in blocks, f"{name} is not in requirements.lock"
        version, hashes = blocks[name]
        assert re.fullmatch(r"[0-9][0-9A-Za-z.+-]*", version), (name, version)
        assert hashes, name
        assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), name
    assert all(hashes for _, hashes in blocks.values()), "every locked package needs a hash"
    makefile = (ROOT / "Makefile").read_text()
    assert "--require-hashes -r requirements.lock" in makefile
    install = [line for line in makefile.splitlines() if "pip install" in line and " -e ." in line]
    assert install
    assert all("--no-build-isolation" in line and "--no-deps" in line for line in install), install
    assert not re.search(r"pip install[^\n]*--upgrade pip", makefile), "an unhashed pip upgrade"


def test_pytest_xdist_is_in_the_test_extra():
    test_extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    assert any(dep.startswith("pytest-xdist>=") for dep in test_extra)
