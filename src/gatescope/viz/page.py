"""The one HTML page shell of gatescope's pages (the explorer, the demo page, the units page).

    html_page("title", "<main>...</main>\\n", style=css, csp=policy, generator="gatescope explore")

Every page is one self-contained file: its style inline, images as data: URLs, and an empty
data: icon so that a browser does not ask the network for /favicon.ico. ``csp``, when given,
goes into a Content-Security-Policy meta tag (the explorer's allows its one script and its
one style by hash, and nothing else).
"""

from __future__ import annotations

import html

__all__ = ["html_page"]


def html_page(
    title: str,
    body: str,
    *,
    style: str = "",
    csp: str | None = None,
    generator: str | None = None,
    lang: str = "en",
) -> str:
    """A complete HTML document: ``title`` (escaped here), ``body`` (HTML, inserted as is),
    ``style`` (CSS, inlined in one <style> element; none when empty)."""
    head = ['<meta charset="utf-8">']
    if csp is not None:
        head.append(f'<meta http-equiv="Content-Security-Policy" content="{html.escape(csp)}">')
    head.append('<meta name="viewport" content="width=device-width, initial-scale=1">')
    if generator is not None:
        head.append(f'<meta name="generator" content="{html.escape(generator)}">')
    head.append(f"<title>{html.escape(str(title))}</title>")
    head.append('<link rel="icon" href="data:,">')
    if style:
        head.append(f"<style>{style}</style>")
    return (
        f'<!doctype html>\n<html lang="{html.escape(lang)}">\n<head>\n'
        + "\n".join(head)
        + f"\n</head>\n<body>\n{body}</body>\n</html>\n"
    )
