"""Command line: ``dpflows run CONFIG``, ``dpflows list``, ``dpflows demo``.

The CLI parses arguments and handles files; the behaviour lives in ``dpflows.experiments``.

Every expected failure (a bad config or override, a checkpoint that cannot be used or resumed, a
run that ends in an unusable state, an output folder held by another run, a missing file) prints
one line ``dpflows: error: ...`` to stderr and exits with status 2, without a traceback. ``--debug``
(or ``DPFLOWS_DEBUG=1``) lets the exception propagate with its traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from ._checkpoint import CheckpointError, FolderLockedError, atomic_write_bytes, folder_lock

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dpflows", description="Particle flows on probability measures (JAX).")
    debug_help = "on an error, show the full traceback (also DPFLOWS_DEBUG=1)"
    p.add_argument("--debug", action="store_true", help=debug_help)
    # Also accepted after the sub-command; SUPPRESS keeps a top-level --debug from being reset.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", parents=[common], help="run one experiment from a YAML config")
    r.add_argument("config", help="path to a YAML config")
    r.add_argument("--out", help="output folder (default: runs/<config name>)")
    r.add_argument("--resume", action="store_true", help="continue from the checkpoints in --out")
    r.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    r.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show progress bars (default: when stderr is a terminal)",
    )
    sub.add_parser("list", parents=[common], help="list the experiment kinds and the configs that use them")
    d = sub.add_parser("demo", parents=[common], help="run every experiment at demo size and write a report")
    d.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    d.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    return p


def _configs_dir() -> Path:
    return Path(os.environ.get("DPFLOWS_CONFIGS", "configs"))


def _cmd_run(args) -> int:
    from .experiments import run_experiment

    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    metrics = run_experiment(args.config, out, resume=args.resume, overwrite=args.overwrite, progress=progress)
    print(f"wrote {out}/report.md ({metrics['wall_time_s']:.1f} s)")
    return 0


def _cmd_list(args) -> int:
    import yaml

    from .experiments import get, names

    configs: dict[str, list[str]] = {}
    folder = _configs_dir()
    for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
        try:
            kind = (yaml.safe_load(path.read_text()) or {}).get("experiment")
        except yaml.YAMLError:
            kind = None
        configs.setdefault(str(kind), []).append(str(path))
    for name in names():
        print(f"{name:24s} {get(name).description}")
        for path in configs.get(name, []):
            print(f"{'':24s}   config: {path}")
    return 0


def _cmd_demo(args) -> int:
    out = Path(args.out)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    with folder_lock(out):
        return _demo_locked(out, progress)


def _demo_locked(out: Path, progress: bool) -> int:
    from .experiments import get, names, run_experiment

    sections = []
    start = time.perf_counter()
    for name in names():
        exp = get(name)
        sub = out / name
        print(f"[demo] {name} ...", flush=True)
        metrics = run_experiment({"experiment": name, **exp.demo}, sub, overwrite=True, progress=progress)
        body = (sub / "report.md").read_text().split("\n", 1)[1]
        body = body.replace("](", f"]({name}/")
        sections.append(f"## {name}\n\n{body.strip()}\n\n_{metrics['wall_time_s']:.1f} s_\n")
    total = time.perf_counter() - start
    report = "# dpflows demo\n\nEvery registered experiment at demo size (`dpflows demo`).\n\n" + "\n".join(sections)
    report += f"\nTotal: {total:.1f} s.\n"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "report.md", report.encode())
    print(f"wrote {out}/report.md ({total:.1f} s)")
    return 0


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Failures that are the user's input or environment, reported in one line."""
    from .flow import FlowError

    return (
        ValueError,  # bad config value or override; ResumeMismatchError
        TypeError,  # wrong config type
        OSError,  # missing config file, existing output folder, permissions, disk full
        CheckpointError,
        FolderLockedError,
        FlowError,
    )


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dpflows`` console script.

    Returns:
        0 on success; 2 on an expected error (one line on stderr); 130 when interrupted.
    """
    args = _parser().parse_args(argv)
    debug = args.debug or os.environ.get("DPFLOWS_DEBUG", "") not in ("", "0")
    try:
        return {"run": _cmd_run, "list": _cmd_list, "demo": _cmd_demo}[args.command](args)
    except _expected_errors() as err:
        if debug:
            raise
        print(f"dpflows: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debug:
            raise
        print("dpflows: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
