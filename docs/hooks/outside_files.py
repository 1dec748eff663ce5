"""MkDocs hook: pages whose sources live outside docs/.

- examples/*.ipynb: the notebooks, rendered by mkdocs-jupyter (not executed). They are added
  to the site's files so that naming one in mkdocs.yml's nav (`examples/NAME.ipynb`) is all
  it takes to publish it; none is in the nav until then (MkDocs lists it as "not in nav").
- benchmarks/README.md: the performance page, kept next to the code that measures it and
  published as performance.md.

It runs before mkdocs-jupyter's own on_files (higher priority), which turns the notebooks
into pages.

It also tidies two reST habits of some docstrings for the API pages: the marker of a literal
block ("...order::" before an indented block, which renders as code) loses one colon, and a
simple table (rows between lines of "=== ===") is shown as preformatted text, as written,
instead of one run-on paragraph.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]  # docs/hooks/ -> the repository


@event_priority(100)
def on_files(files: Files, config) -> Files:
    for nb in sorted((ROOT / "examples").glob("*.ipynb")):
        uri = f"examples/{nb.name}"
        if files.get_file_from_path(uri) is None:
            # a plain File rooted at the repository (mkdocs-jupyter wraps it, and its wrapper
            # needs src_dir to find the notebook)
            files.append(File(uri, str(ROOT), config["site_dir"], config["use_directory_urls"]))
    bench = ROOT / "benchmarks" / "README.md"
    if bench.is_file() and files.get_file_from_path("performance.md") is None:
        files.append(File.generated(config, "performance.md", abs_src_path=str(bench)))
    return files


_LITERAL_MARKER = re.compile(r"::</p>")
_SIMPLE_TABLE = re.compile(r"<p>(=+(?: +=+)+\n.*?\n=+(?: +=+)+)</p>", re.DOTALL)


def on_page_content(html: str, page, config, files) -> str:
    html = _SIMPLE_TABLE.sub(r"<pre><code>\1</code></pre>", html)
    return _LITERAL_MARKER.sub(":</p>", html)
