"""Markdown -> safe HTML. markdown-it escapes raw HTML; nh3 then keeps only an allow-list of
tags and attributes, so a paper can never inject script, event handlers or javascript: links.
Math ($...$, $$...$$) is kept as TeX in <span class="math"> for readable monospace display."""

from __future__ import annotations

import re

import nh3
from markdown_it import MarkdownIt
from markupsafe import Markup, escape
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
    "tbody", "td", "th", "thead", "tr", "ul", "wbr",
}
_ATTRS = {
    "a": {"href", "title", "id"}, "img": {"src", "alt", "title"}, "span": {"class"}, "div": {"class"},
    "code": {"class"}, "section": {"class"}, "li": {"id"}, "sup": {"class"},
}
_BREAK_AFTER = re.compile(r"[_=]")


def breakable(text: str) -> Markup:
    """`text` escaped, with a line-break opportunity (<wbr>) after each underscore and equals sign:
    long snake_case names (techniques, benchmarks) and key=value subsets wrap inside a narrow table
    cell instead of widening the table."""
    return Markup(_BREAK_AFTER.sub(r"\g<0><wbr>", str(escape(text))))


# the text of a rendered paper gets the same break opportunities (its tables hold technique names)
_md.add_render_rule("text", lambda self, tokens, idx, options, env: str(breakable(tokens[idx].content)))


def render_markdown(text: str) -> str:
    return nh3.clean(
        _md.render(text), tags=_TAGS, attributes=_ATTRS, url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
    )


def render_paper_body(body: str, title: str, abstract: str) -> str:
    """The body as HTML, without what the paper page's header shows already: a leading `# heading`
    equal to the title and an "Abstract" section equal to the abstract (a lab's report starts with
    both). A heading or abstract that differs from the header's stays."""
    return render_markdown(_without_header_parts(body, title, abstract))


def _without_header_parts(body: str, title: str, abstract: str) -> str:
    lines = body.splitlines(keepends=True)
    tokens = _md.parse(body)
    blocks = [t for t in tokens if t.map and t.level == 0]
    # (first line, line after, tag, text) of each top-level heading
    headings = [(*t.map, t.tag, tokens[i + 1].content) for i, t in enumerate(tokens)
                if t.type == "heading_open" and t.level == 0]
    drop: set[int] = set()
    if headings and blocks[0].map[0] == headings[0][0] and headings[0][2] == "h1" and _same(headings[0][3], title):
        drop.update(range(headings[0][0], headings[0][1]))
    for n, (start, text_start, _, text) in enumerate(headings):
        if text.strip().lower() == "abstract":
            end = headings[n + 1][0] if n + 1 < len(headings) else len(lines)
            if abstract.strip() and _same("".join(lines[text_start:end]), abstract):
                drop.update(range(start, end))
            break
    return "".join(line for i, line in enumerate(lines) if i not in drop)


def _same(a: str, b: str) -> bool:
    """Equal up to whitespace."""
    return a.split() == b.split()
