"""The README's tour runs as written, and its links point at files that exist."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_tour_runs(capsys):
    (tour,) = re.findall(r"```python\n(.*?)```", README, re.S)
    namespace: dict = {}
    exec(compile(tour, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    printed = capsys.readouterr().out
    # The tour's own claims: SHK puts ≈ 0.1 of the mass on the light mode, and the release says what it covers.
    heavy_light = float(namespace["state"].weights[namespace["state"].x[:, 0] > 0].sum())
    assert abs(heavy_light - 0.1) < 0.03, heavy_light
    assert bool(namespace["trace"].ok)
    assert bool(namespace["traces"].ok.all())
    assert "[covers: mechanism]" in printed
    assert namespace["samples"].x.shape == (2000, 2)


def test_readme_links_resolve():
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README)
    assert links, "the README should link into the docs"
    missing = [link for link in links if not link.startswith("http") and not (ROOT / link).exists()]
    assert not missing, missing
