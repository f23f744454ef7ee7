"""Command line: ``dpflows run CONFIG``, ``dpflows list``, ``dpflows demo``.

The CLI parses arguments and handles files; the behaviour lives in ``dpflows.experiments``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dpflows", description="Particle flows on probability measures (JAX).")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run one experiment from a YAML config")
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
    sub.add_parser("list", help="list the experiment kinds and the configs that use them")
    d = sub.add_parser("demo", help="run every experiment at demo size and write a report")
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
    from .experiments import get, names, run_experiment

    out = Path(args.out)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
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
    from ._checkpoint import atomic_write_bytes

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "report.md", report.encode())
    print(f"wrote {out}/report.md ({total:.1f} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dpflows`` console script."""
    args = _parser().parse_args(argv)
    try:
        return {"run": _cmd_run, "list": _cmd_list, "demo": _cmd_demo}[args.command](args)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as err:
        print(f"dpflows: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
