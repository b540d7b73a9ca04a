"""Artifacts made safe to show: markdown rendered with raw HTML off, links only to http, https,
mailto or this site, no images (an outside image would load from another site; the page's CSP
refuses it anyway); a link artifact's address checked again.  Everything else an artifact holds
(table cells, texts, keys) is text the templates escape."""

from __future__ import annotations

import re
from typing import Any

from markupsafe import Markup

SAFE_SCHEMES = ("http", "https", "mailto")
_SCHEME = re.compile(r"^\s*([A-Za-z][A-Za-z0-9+.\-]*):")
_markdown: Any = None


def safe_url(url: str, schemes: tuple[str, ...] = SAFE_SCHEMES) -> bool:
    """An address a page may link to: one of ``schemes``, or one with no scheme (this site)."""
    if any(ord(c) < 32 for c in url):
        return False
    found = _SCHEME.match(url)
    return found is None or found.group(1).lower() in schemes


def _renderer() -> Any:
    global _markdown
    if _markdown is None:
        from markdown_it import MarkdownIt

        md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
        md.enable(["table", "strikethrough"])
        md.disable(["image", "html_block", "html_inline"])
        md.validateLink = safe_url  # type: ignore[method-assign]

        def link_open(renderer: Any, tokens: list, idx: int, options: Any, env: Any) -> str:
            tokens[idx].attrSet("rel", "nofollow noopener noreferrer")
            return renderer.renderToken(tokens, idx, options, env)

        md.add_render_rule("link_open", link_open)
        _markdown = md
    return _markdown


def render_markdown(text: str) -> Markup:
    """``text`` as HTML: markdown without raw HTML, scripts or unsafe links; its headings two
    levels down (``#`` is an h3), under the page's own h1 and h2."""
    md = _renderer()
    tokens = md.parse(text)
    for token in tokens:
        if token.type in ("heading_open", "heading_close"):
            token.tag = f"h{min(6, int(token.tag[1]) + 2)}"
    return Markup(md.renderer.render(tokens, md.options, {}))


def shown(artifact: dict[str, Any]) -> dict[str, Any]:
    """An artifact row as its template shows it: markdown rendered (``html``), a link's address
    kept only if safe (``href``), a progress as a percent (``percent``)."""
    data = artifact.get("data") or {}
    out = dict(artifact)
    if artifact["kind"] == "markdown":
        out["html"] = render_markdown(data.get("text", ""))
    elif artifact["kind"] == "link":
        url = data.get("url", "")
        out["href"] = url if safe_url(url, ("http", "https")) and _SCHEME.match(url) else None
    elif artifact["kind"] == "progress":
        out["percent"] = round(100 * float(data.get("fraction", 0)), 1)
    return out
