r"""mkdocs hooks: the notebooks as pages, and the maths typeset at build time (no JavaScript, no CDN).

* ``on_files``: the committed, executed notebooks stay where ``make notebooks`` writes them
  (``notebooks/*.ipynb``, one copy in the repository); they join the build as files whose source
  directory is the repository root, before mkdocs-jupyter turns ``.ipynb`` files into pages (hence
  the high priority). Nothing is executed or fetched.
* ``on_page_content``: pymdownx.arithmatex (generic mode) marks ``\( … \)`` and ``\[ … \]``;
  latex2mathml turns each into MathML, which browsers render natively, so the site shows its maths
  offline. A formula that does not convert is logged as a warning, which fails the strict build.
"""

import html
import logging
import re
from pathlib import Path

from latex2mathml.converter import convert
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

_ROOT = Path(__file__).resolve().parent.parent
_LOG = logging.getLogger("mkdocs.hooks.dpflows")
_MATH = re.compile(
    r'<(?P<tag>span|div) class="arithmatex">\s*\\(?P<open>[(\[])(?P<tex>.*?)\\[)\]]\s*</(?P=tag)>', re.DOTALL
)


@event_priority(100)
def on_files(files: Files, config) -> Files:
    """Add every ``notebooks/*.ipynb`` of the repository to the site under the same path."""
    for path in sorted((_ROOT / "notebooks").glob("*.ipynb")):
        uri = f"notebooks/{path.name}"
        if files.get_file_from_path(uri) is None:
            files.append(File(uri, str(_ROOT), config["site_dir"], config["use_directory_urls"]))
    return files


def on_page_content(content: str, page, config, files) -> str:
    """Replace arithmatex's TeX spans and divs with MathML."""

    def mathml(match: re.Match) -> str:
        tex = html.unescape(match["tex"]).strip()
        display = "block" if match["open"] == "[" else "inline"
        try:
            return convert(tex, display=display)
        except Exception as err:  # noqa: BLE001 - any failure is reported with the page and formula
            _LOG.warning("%s: cannot typeset %r: %s", page.file.src_uri, tex, err)
            return match[0]

    return _MATH.sub(mathml, content)
