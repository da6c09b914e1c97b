"""Markdown -> safe HTML. markdown-it escapes raw HTML; nh3 then keeps only an allow-list of
tags and attributes, so a paper can never inject script, event handlers or javascript: links.
Math ($...$, $$...$$) is kept as TeX in <span class="math"> for readable monospace display."""

from __future__ import annotations

import nh3
from markdown_it import MarkdownIt
from mdit_py_plugins.dollarmath import dollarmath_plugin
from mdit_py_plugins.footnote import footnote_plugin

_md = (
    MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    .enable("table")
    .enable("strikethrough")
    .use(dollarmath_plugin, allow_space=True, double_inline=True)
    .use(footnote_plugin)
)

_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "code", "del", "div", "em", "h1", "h2", "h3", "h4", "h5", "h6",
    "hr", "i", "img", "li", "ol", "p", "pre", "s", "section", "span", "strong", "sub", "sup", "table",
    "tbody", "td", "th", "thead", "tr", "ul",
}
_ATTRS = {
    "a": {"href", "title", "id"}, "img": {"src", "alt", "title"}, "span": {"class"}, "div": {"class"},
    "code": {"class"}, "section": {"class"}, "li": {"id"}, "sup": {"class"},
}


def render_markdown(text: str) -> str:
    return nh3.clean(
        _md.render(text), tags=_TAGS, attributes=_ATTRS, url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
    )
