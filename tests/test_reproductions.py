"""The reproduction pages (docs/reproductions): one per method, each with a verdict, the config it names,
and a committed run that is exactly that config (so its tables and figures are what the config produces)."""

import re
from pathlib import Path

import pytest
import yaml

from dpflows.experiments import load_config

ROOT = Path(__file__).resolve().parents[1]
PAGES_DIR = ROOT / "docs" / "reproductions"
RUNS = PAGES_DIR / "runs"
PAPER = ROOT / "configs" / "paper"
PAGES = sorted(p for p in PAGES_DIR.glob("*.md") if p.name != "index.md")
METHOD_PAGES = {"shk", "hopfield", "swf", "muon", "ldp", "aeot"}
VERDICT = re.compile(r"\*\*Verdict: (reproduced|partly reproduced|not reproduced)\.?\*\*")
MAX_PNG_BYTES = 200_000


def _run_configs(folder: Path) -> list[Path]:
    """Every run's resolved config.yaml in a committed run folder (one run, or a sweep's runs)."""
    return sorted(p for p in folder.rglob("config.yaml") if "checkpoints" not in p.parts)


def test_every_method_has_a_page_linked_from_the_index():
    assert {p.stem for p in PAGES} >= METHOD_PAGES
    index = (PAGES_DIR / "index.md").read_text()
    for page in PAGES:
        assert f"({page.name})" in index, f"docs/reproductions/index.md does not link {page.name}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.stem)
def test_page_has_a_verdict_its_configs_and_its_figures(page):
    text = page.read_text()
    assert text.startswith("# "), page
    assert VERDICT.search(text), f"{page.name}: no '**Verdict: reproduced|partly reproduced|not reproduced**'"
    assert "**Claim**" in text, page.name
    configs = sorted(set(re.findall(r"configs/paper/[\w.-]+?\.yaml", text)))
    assert configs, f"{page.name} names no configs/paper/*.yaml"
    for cfg in configs:
        assert (ROOT / cfg).is_file(), f"{page.name} names {cfg}, which does not exist"
        load_config(ROOT / cfg)  # a valid config
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert images, f"{page.name} shows no figure"
    for img in images:
        path = (page.parent / img).resolve()
        assert path.is_file(), f"{page.name}: missing figure {img}"
        assert path.stat().st_size <= MAX_PNG_BYTES, f"{img} is {path.stat().st_size} bytes"
        assert RUNS in path.parents, f"{page.name}: figure {img} is not from a committed run"


def test_committed_runs_are_exactly_their_paper_configs():
    """runs/<name>/ was made by `dpflows run|sweep configs/paper/<name>.yaml` (seed aside) and holds no state."""
    folders = sorted(p for p in RUNS.iterdir() if p.is_dir()) if RUNS.is_dir() else []
    assert folders, "no committed runs under docs/reproductions/runs"
    for folder in folders:
        source = PAPER / f"{folder.name}.yaml"
        assert source.is_file(), f"runs/{folder.name} has no configs/paper/{folder.name}.yaml"
        runs = _run_configs(folder)
        assert runs, f"runs/{folder.name} holds no run"
        for resolved in runs:
            seed = yaml.safe_load(resolved.read_text())["seed"]
            exp, _, cfg = load_config(resolved)
            exp_paper, _, cfg_paper = load_config(source, {"seed": seed})
            assert exp.name == exp_paper.name
            assert cfg == cfg_paper, f"{resolved.relative_to(ROOT)} is not configs/paper/{folder.name}.yaml"
            assert (resolved.parent / "metrics.json").is_file()
            assert (resolved.parent / "report.md").is_file()
        leftovers = [p for p in folder.rglob("*") if p.name == "checkpoints" or p.suffix == ".lock"]
        assert not leftovers, leftovers
