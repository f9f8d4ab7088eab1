"""Email templates: Jinja2 in a sandbox, HTML autoescaped, undefined variables an error.

A template NAME is a folder NAME/ holding subject.txt, body.txt and (optionally)
body.html. Folders are searched in MAILER_TEMPLATE_DIR first, then the
project's templates/email/.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask, current_app
from jinja2 import (
    ChoiceLoader,
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateError,
    TemplateNotFound,
    UndefinedError,
    select_autoescape,
)
from jinja2.sandbox import SandboxedEnvironment

from mailer.errors import ValidationFailed

DEFAULT_TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "templates" / "email"
TEMPLATE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")
EXTENSION_KEY = "mailer.renderer"


class TemplateProblem(ValidationFailed):
    """The template is unknown, or cannot be rendered with the data given (422)."""

    code = "template_error"


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    text: str
    html: str | None


# Every attribute a plain dict instance has (it has no instance attributes of its own).
_DICT_ATTRIBUTES = frozenset(dir(dict))


class _Sandbox(SandboxedEnvironment):
    """The sandbox, with a shortcut for the commonest lookup of a mail template.

    `item.name` on a plain dict (the JSON data of a send): Jinja tries the attribute first
    and, as a dict has no attribute of that name, answers the item, or Undefined. Here the
    same answer comes without raising and catching an AttributeError on every lookup.
    Anything else, dict methods (`d.items`) included, goes through the sandbox as before.
    """

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict and type(attribute) is str and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)


class Renderer:
    """Renders template folders; compiled templates are cached by Jinja."""

    def __init__(self, search_path: list[Path]) -> None:
        self.search_path = search_path
        self.env = _Sandbox(
            loader=ChoiceLoader([FileSystemLoader(str(p)) for p in search_path]),
            undefined=StrictUndefined,
            autoescape=select_autoescape(enabled_extensions=("html",), default=False),
            keep_trailing_newline=True,
            auto_reload=False,
            cache_size=400,
        )
        # Template folders found, and each template's globals as one plain dict. Both only
        # grow: like Jinja's own cache (auto_reload off), a found template stays found.
        self._found: set[str] = set()
        self._globals: dict[str, tuple[Template, dict[str, Any]]] = {}

    def exists(self, name: str) -> bool:
        """True when a folder `name` with subject.txt and body.txt is on the search path."""
        if name in self._found:
            return True
        if not TEMPLATE_NAME.match(name):
            return False
        found = any((p / name / "subject.txt").is_file() and (p / name / "body.txt").is_file()
                    for p in self.search_path)
        if found:
            self._found.add(name)
        return found

    def part(self, name: str, filename: str, context: dict[str, Any]) -> str | None:
        """Render one file of a template folder; None when the (optional) file is absent."""
        try:
            template = self.env.get_template(f"{name}/{filename}")
        except TemplateNotFound:
            return None
        # What Template.render(context) does, minus the cost of merging the template's globals
        # (a ChainMap, iterated twice per render) into every context: they are flattened once.
        cached = self._globals.get(template.name or "")
        if cached is None or cached[0] is not template:
            cached = (template, dict(template.globals))
            self._globals[template.name or ""] = cached
        flat = cached[1]
        ctx = self.env.context_class(self.env, {**flat, **context}, template.name,
                                     template.blocks, globals=flat)
        try:
            return self.env.concat(template.root_render_func(ctx))  # type: ignore[attr-defined]
        except Exception:
            self.env.handle_exception()
        raise AssertionError("unreachable: handle_exception always raises")

    def render(self, name: str, context: dict[str, Any]) -> Rendered:
        """Render subject, text and HTML; any problem raises TemplateProblem naming it."""
        if not self.exists(name):
            raise TemplateProblem(f"Unknown template '{name}'.",
                                  fields={"template": [f"Unknown template: {name}"]})
        try:
            subject = self.part(name, "subject.txt", context) or ""
            text = self.part(name, "body.txt", context) or ""
            html = self.part(name, "body.html", context)
        except UndefinedError as exc:
            raise TemplateProblem(f"Template '{name}' needs data it was not given: {exc.message}",
                                  fields={"data": [exc.message or "missing variable"]}) from exc
        except TemplateError as exc:
            raise TemplateProblem(f"Template '{name}' cannot be rendered: {exc}",
                                  fields={"template": [str(exc)]}) from exc
        subject = subject.strip()
        if "\r" in subject or "\n" in subject or "\0" in subject:
            raise TemplateProblem(
                "The subject would hold a line break; header values are single lines.",
                code="header_injection", fields={"data": ["line break in the subject"]},
            )
        return Rendered(subject=subject, text=text, html=html)


def init_app(app: Flask) -> None:
    """Create the app's renderer from MAILER_TEMPLATE_DIR and the shipped templates."""
    path = [DEFAULT_TEMPLATE_DIR]
    extra = app.config.get("MAILER_TEMPLATE_DIR")
    if extra:
        path.insert(0, Path(extra))
    app.extensions[EXTENSION_KEY] = Renderer(path)


def renderer() -> Renderer:
    """The current app's renderer."""
    return current_app.extensions[EXTENSION_KEY]
