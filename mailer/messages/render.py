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


class Renderer:
    """Renders template folders; compiled templates are cached by Jinja."""

    def __init__(self, search_path: list[Path]) -> None:
        self.search_path = search_path
        self.env = SandboxedEnvironment(
            loader=ChoiceLoader([FileSystemLoader(str(p)) for p in search_path]),
            undefined=StrictUndefined,
            autoescape=select_autoescape(enabled_extensions=("html",), default=False),
            keep_trailing_newline=True,
            auto_reload=False,
            cache_size=400,
        )

    def exists(self, name: str) -> bool:
        """True when a folder `name` with subject.txt and body.txt is on the search path."""
        if not TEMPLATE_NAME.match(name):
            return False
        return any((p / name / "subject.txt").is_file() and (p / name / "body.txt").is_file()
                   for p in self.search_path)

    def part(self, name: str, filename: str, context: dict[str, Any]) -> str | None:
        """Render one file of a template folder; None when the (optional) file is absent."""
        try:
            template = self.env.get_template(f"{name}/{filename}")
        except TemplateNotFound:
            return None
        return template.render(context)

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
