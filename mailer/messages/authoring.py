"""Bodies written in the console: Markdown made HTML, HTML sanitized, the text part made.

A body holds Jinja (`{{ name }}`, `{% if %}`) as file templates do. Markdown and the
sanitizer would mangle it (a link target with spaces is no link; `<` in a condition would
be escaped), so each Jinja piece is swapped for a plain placeholder first and put back
after. The result is sanitized once more after rendering (render.py), so no value and no
Jinja filter (`|safe`) can bring a script or an event handler into a mail.
"""

from __future__ import annotations

import html
import re
import secrets
from collections.abc import Callable
from html.parser import HTMLParser

import nh3
from markdown_it import MarkdownIt

from mailer.messages.models import BodyFormat

_JINJA = re.compile(r"{{.*?}}|{%.*?%}|{#.*?#}", re.DOTALL)

# Inline styles are how mail HTML is laid out; these properties cannot move content out of
# the mail's box or load anything.
STYLE_PROPERTIES = frozenset({
    "background-color", "border", "border-bottom", "border-collapse", "border-color",
    "border-left", "border-radius", "border-right", "border-spacing", "border-style",
    "border-top", "border-width", "color", "font-family", "font-size", "font-style",
    "font-weight", "height", "letter-spacing", "line-height", "margin", "margin-bottom",
    "margin-left", "margin-right", "margin-top", "max-width", "padding", "padding-bottom",
    "padding-left", "padding-right", "padding-top", "text-align", "text-decoration",
    "text-transform", "vertical-align", "width", "white-space",
})
_ATTRIBUTES = {tag: set(names) for tag, names in nh3.ALLOWED_ATTRIBUTES.items()}
_ATTRIBUTES["*"] = {"style", "title", "lang", "dir"}
_URL_SCHEMES = {"http", "https", "mailto", "tel"}

_markdown = MarkdownIt("commonmark", {"html": True, "typographer": False}).enable("table")


def sanitize(fragment: str) -> str:
    """The HTML fragment with only harmless tags, attributes, styles and link schemes left.

    Scripts, styles sheets, forms, frames, event handlers and `javascript:` links go, with
    the content of script and style elements.
    """
    return nh3.clean(
        fragment,
        attributes=_ATTRIBUTES,
        clean_content_tags={"script", "style"},
        url_schemes=_URL_SCHEMES,
        filter_style_properties=set(STYLE_PROPERTIES),
        link_rel="noopener noreferrer",
    )


def _protected(source: str, transform: Callable[[str], str]) -> str:
    """`transform(source)` with every Jinja piece kept as written."""
    nonce = secrets.token_hex(4)
    pieces: list[str] = []

    def hide(match: re.Match[str]) -> str:
        pieces.append(match.group(0))
        return f"jinja{nonce}n{len(pieces) - 1}x"

    result = transform(_JINJA.sub(hide, source))
    return re.sub(f"jinja{nonce}n(\\d+)x", lambda m: pieces[int(m.group(1))], result)


def body_html(source: str, body_format: BodyFormat) -> str:
    """The body as sanitized HTML (Markdown rendered first), Jinja kept as written."""
    if body_format is BodyFormat.MARKDOWN:
        return _protected(source, lambda text: sanitize(_markdown.render(text)))
    return _protected(source, sanitize)


class _TextMaker(HTMLParser):
    """HTML to readable text: paragraphs and headings as blocks, list items with "- ",
    links as "text (url)", images as their alt text."""

    BLOCKS = frozenset({"p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "table",
                        "tr", "blockquote", "pre", "hr", "header", "footer", "section",
                        "article"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.links: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.BLOCKS:
            self.out.append("\n\n")
        elif tag == "br":
            self.out.append("\n")
        elif tag == "li":
            self.out.append("\n- ")
        elif tag in ("td", "th"):
            self.out.append(" ")
        elif tag == "a":
            self.links.append(dict(attrs).get("href"))
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt:
                self.out.append(alt)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.BLOCKS:
            self.out.append("\n\n")
        elif tag == "a" and self.links:
            href = self.links.pop()
            if href and not href.startswith("#"):
                self.out.append(f" ({href})")

    def handle_data(self, data: str) -> None:
        self.out.append(re.sub(r"\s+", " ", data))

    def text(self) -> str:
        joined = "".join(self.out)
        joined = re.sub(r"[ \t]*\n[ \t]*", "\n", joined)
        return re.sub(r"\n{3,}", "\n\n", joined).strip() + "\n"


def html_to_text(fragment: str) -> str:
    """A text rendering of an HTML fragment (character references decoded)."""
    maker = _TextMaker()
    maker.feed(fragment)
    maker.close()
    return maker.text()


def body_text(source: str, body_format: BodyFormat) -> str:
    """The text part made from the body: Markdown reads well as it is; HTML is made text.

    Jinja is kept as written (the text part is rendered without HTML escaping).
    """
    if body_format is BodyFormat.MARKDOWN:
        return source.strip() + "\n"
    return _protected(source, lambda text: html_to_text(text))


def layout(body: str, subject: str) -> str:
    """A rendered, sanitized body inside the mail's page: one column, at most 600 px wide,
    images and long links kept inside a phone's width."""
    return (
        '<!doctype html>\n<html lang="en">\n<head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(subject)}</title>"
        "<style>img{max-width:100%;height:auto}</style></head>\n"
        '<body style="margin:0;padding:16px;font-family:Helvetica,Arial,sans-serif;'
        'color:#222;background:#f6f6f6">\n'
        '<div style="max-width:600px;margin:0 auto;background:#fff;padding:24px;'
        'border-radius:6px;line-height:1.5;overflow-wrap:anywhere">\n'
        f"{body}\n</div>\n</body>\n</html>\n"
    )
