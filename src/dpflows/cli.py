"""Command line: ``dpflows run``, ``dpflows sweep``, ``dpflows list``, ``dpflows demo``.

::

    dpflows run CONFIG [--set KEY=VALUE ...] [--out DIR] [--resume | --overwrite] [--progress]
    dpflows sweep CONFIG --grid KEY=V1,V2,... [--grid ...] [--set KEY=VALUE ...] [--out DIR]
                  [--resume | --overwrite] [--progress]
    dpflows list
    dpflows demo [--out DIR]

``--set`` replaces one config key (``seed`` included) for this run; the value is YAML
(``--set steps=200``, ``--set 'epsilons=[1,5]'``, ``--set use_x=true``, ``--set delta=1e-5``: a float;
quote values with brackets, which shells read as file patterns).
The resolved config, overrides included, is what ``config.yaml`` records and what ``--resume``
checks, so resuming with a different override is refused.

``sweep`` runs a grid. A grid key that the experiment runs as one vmapped program (its registered
``sweep_keys``, e.g. ``epsilon`` → the list ``epsilons``) is set as a list in one run; every other
key becomes separate runs, one per combination, in ``OUT/<key=value,...>/``, indexed by
``OUT/report.md`` and ``OUT/sweep.json``. The command prints which path it took.

``list`` shows every config under ``configs/`` (recursively; ``DPFLOWS_CONFIGS`` names another
folder) with its experiment kind, wall time and claim (the config's ``about:``), then the kinds.

The CLI parses arguments and handles files; the behaviour lives in ``dpflows.experiments``.

Every expected failure (a bad config, override or grid, a checkpoint that cannot be used or resumed, a
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
from typing import Any

from ._checkpoint import CheckpointError, FolderLockedError, atomic_write_bytes, folder_lock

__all__ = ["main"]


_EPILOG = """examples:
  dpflows list
  dpflows run configs/langevin_gaussian.yaml --out runs/lg --set num_steps=200 --set seed=3
  dpflows sweep configs/swf_2d.yaml --grid epsilon=1,5,10 --out runs/swf_eps
  dpflows demo --out runs/demo
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dpflows",
        description="Particle flows on probability measures (JAX): run, sweep and list experiment configs.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    debug_help = "on an error, show the full traceback (also DPFLOWS_DEBUG=1)"
    p.add_argument("--debug", action="store_true", help=debug_help)
    # Also accepted after the sub-command; SUPPRESS keeps a top-level --debug from being reset.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    set_help = "replace config key KEY by VALUE, read as YAML (200, true, [1,5], 1e-5); repeatable; seed too"
    progress_help = "show progress bars (default: when stderr is a terminal)"

    sub = p.add_subparsers(dest="command", required=True, metavar="{run,sweep,list,demo}")
    r = sub.add_parser(
        "run",
        parents=[common],
        help="run one experiment from a YAML config",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run one experiment; writes metrics.json, config.yaml (resolved), PNG figures and report.md.",
        epilog=(
            "example: dpflows run configs/ldp_2d.yaml --out runs/ldp --set 'epsilons=[1,5]' --set num_seeds=1\n"
            "(quote values with brackets: zsh and bash read [..] as a file pattern)"
        ),
    )
    r.add_argument("config", help="path to a YAML config")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides", help=set_help)
    r.add_argument("--out", help="output folder (default: runs/<config name>)")
    r.add_argument("--resume", action="store_true", help="continue from the checkpoints in --out (same config)")
    r.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    r.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help=progress_help)

    w = sub.add_parser(
        "sweep",
        parents=[common],
        help="run a grid over one config: one vmapped run where the experiment sweeps, separate runs otherwise",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Run a grid over one config. Keys the experiment sweeps itself (its sweep keys, e.g. epsilon -> "
            "epsilons) go into ONE run as a list; every other key gives one run per combination in "
            "OUT/<key=value,...>/, indexed by OUT/report.md and OUT/sweep.json. Prints the path taken."
        ),
        epilog="example: dpflows sweep configs/ldp_tiny.yaml --grid epsilon=5,10 --grid num_particles=50,100",
    )
    w.add_argument("config", help="path to a YAML config")
    w.add_argument(
        "--grid",
        action="append",
        default=[],
        required=True,
        metavar="KEY=V1,V2,...",
        help="grid values of one config key (YAML values, comma-separated; brackets group a list); repeatable",
    )
    w.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides", help=set_help)
    w.add_argument("--out", help="output folder (default: runs/<config name>-sweep)")
    w.add_argument("--resume", action="store_true", help="continue an interrupted sweep in --out (same grid)")
    w.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    w.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help=progress_help)

    sub.add_parser(
        "list",
        parents=[common],
        help="list the configs (experiment, wall time, claim) and the experiment kinds",
        description="List every config under configs/ (or $DPFLOWS_CONFIGS) and every experiment kind.",
    )
    d = sub.add_parser("demo", parents=[common], help="run every experiment at demo size and write a report")
    d.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    d.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help=progress_help)
    return p


def _configs_dir() -> Path:
    return Path(os.environ.get("DPFLOWS_CONFIGS", "configs"))


def _split_key(text: str, option: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"{option} expects KEY=VALUE, got {text!r}")
    return key.strip(), value


def _parse_overrides(texts: list[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` arguments → config overrides (values read as YAML)."""
    from .experiments import parse_value

    out: dict[str, Any] = {}
    for text in texts:
        key, value = _split_key(text, "--set")
        if key in out:
            raise ValueError(f"--set {key} is given twice")
        try:
            out[key] = parse_value(value)
        except ValueError as err:
            raise ValueError(f"--set {key}: {err}") from None
    return out


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside brackets: ``1,[2,3],4`` → ``["1", "[2,3]", "4"]``."""
    parts, depth, current = [], 0, []
    for ch in text:
        depth += (ch in "[{") - (ch in "]}")
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _parse_grid(texts: list[str]) -> dict[str, list[Any]]:
    """``--grid KEY=V1,V2,...`` arguments → grid key → values."""
    from .experiments import parse_value

    grid: dict[str, list[Any]] = {}
    for text in texts:
        key, values = _split_key(text, "--grid")
        if key in grid:
            raise ValueError(f"--grid {key} is given twice; put all its values in one --grid {key}=V1,V2,...")
        parsed = []
        for part in _split_top_level(values):
            if not part.strip():
                raise ValueError(f"--grid {text!r} has an empty value (expected KEY=V1,V2,...)")
            try:
                parsed.append(parse_value(part))
            except ValueError as err:
                raise ValueError(f"--grid {key}: {err}") from None
        grid[key] = parsed
    return grid


def _progress(flag: bool | None) -> bool:
    return sys.stderr.isatty() if flag is None else flag


def _cmd_run(args) -> int:
    from .experiments import run_experiment

    overrides = _parse_overrides(args.overrides)
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    metrics = run_experiment(
        args.config,
        out,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=_progress(args.progress),
        overrides=overrides,
    )
    print(f"wrote {out}/report.md ({metrics['wall_time_s']:.1f} s)")
    return 0


def _cmd_sweep(args) -> int:
    from .experiments import run_sweep

    overrides = _parse_overrides(args.overrides)
    grid = _parse_grid(args.grid)
    out = Path(args.out) if args.out else Path("runs") / f"{Path(args.config).stem}-sweep"
    run_sweep(
        args.config,
        out,
        grid,
        overrides=overrides,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=_progress(args.progress),
        echo=lambda line: print(line, flush=True),
    )
    print(f"wrote {out}/report.md and {out}/sweep.json")
    return 0


def _cmd_list(args) -> int:
    from .experiments import get, names, read_about

    folder = _configs_dir()
    rows = []
    for path in sorted(folder.rglob("*.yaml")) if folder.is_dir() else []:
        name = path.relative_to(folder).with_suffix("").as_posix()
        try:
            kind, about = read_about(path)
        except (ValueError, TypeError, OSError) as err:
            kind, about = None, {"claim": f"(unreadable: {_one_line(err)})"}
        rows.append((name, kind or "?", about.get("wall_time", "?"), about.get("claim", "?")))
    print(f"Configs in {folder}/ (run one with: dpflows run {folder}/<name>.yaml)\n")
    table = [("name", "experiment", "wall time", "claim"), *rows]
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)) + "  " + row[3])
    used = {row[1] for row in rows}
    print("\nExperiment kinds:\n")
    width = max(len(name) for name in names())
    for name in names():
        exp = get(name)
        note = "" if name in used else " (no config; dpflows demo runs it)"
        aliases: dict[str, list[str]] = {}
        for key, target in exp.sweep_keys.items():
            aliases.setdefault(target, []).extend([key] if key != target else [])
        swept = ", ".join("/".join([*keys, target]) for target, keys in sorted(aliases.items()))
        print(f"{name:{width}s}  {exp.description}{note}")
        if exp.sweep_keys:
            print(f"{'':{width}s}  swept inside one run (dpflows sweep --grid): {swept}")
    return 0


def _cmd_demo(args) -> int:
    out = Path(args.out)
    with folder_lock(out):
        return _demo_locked(out, _progress(args.progress))


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
        ValueError,  # bad config value, override or grid; ResumeMismatchError
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
        commands = {"run": _cmd_run, "sweep": _cmd_sweep, "list": _cmd_list, "demo": _cmd_demo}
        return commands[args.command](args)
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
