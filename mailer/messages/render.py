"""Email templates: Jinja2 in a sandbox, HTML autoescaped, undefined variables an error.

A template NAME is a folder NAME/ holding subject.txt, body.txt and (optionally)
body.html. Folders are searched in MAILER_TEMPLATE_DIR first, then the
project's templates/email/.

A template written in the console is rendered by its reference "NAME@VERSION" (see
messages.templates, which turns a name into the reference it sends): the same sandbox,
its HTML sanitized after rendering and set in the standard layout. Versions never change,
so each is compiled once per process.
"""

from __future__ import annotations

import re
from collections.abc import Callable
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
from mailer.messages.authoring import layout, sanitize

DEFAULT_TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "templates" / "email"
TEMPLATE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")
# A version of a template written in the console: "NAME@VERSION".
CONSOLE_REFERENCE = re.compile(r"^([a-z0-9][a-z0-9_-]{0,79})@([1-9][0-9]{0,8})$")
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


@dataclass(frozen=True, slots=True)
class ConsoleSource:
    """The Jinja sources of one version of a console template."""

    subject: str
    html: str
    text: str


def split_reference(reference: str) -> tuple[str, int] | None:
    """(name, version) of a console reference "NAME@VERSION"; None for a plain name."""
    match = CONSOLE_REFERENCE.match(reference)
    return (match.group(1), int(match.group(2))) if match else None


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
        # The same sandbox, escaping everything: a console body has no file name to say so.
        self.html_env = self.env.overlay(autoescape=True)
        # Console versions compiled: reference -> (subject, text, html).
        self._console: dict[str, tuple[Template, Template, Template]] = {}
        # Reads the sources of a console version from the database (messages.templates sets
        # it); None when there is no such version.
        self.console_loader: Callable[[str, int], ConsoleSource | None] | None = None

    def remember(self, reference: str, source: ConsoleSource) -> None:
        """Compile a console version once; its sources must be the version's, which never
        change. A template error is a TemplateProblem."""
        if reference in self._console:
            return
        try:
            self._console[reference] = (self.env.from_string(source.subject),
                                        self.env.from_string(source.text),
                                        self.html_env.from_string(source.html))
        except TemplateError as exc:
            raise TemplateProblem(f"Template '{reference}' cannot be read: {exc}",
                                  fields={"template": [str(exc)]}) from exc

    def forget(self, reference: str) -> None:
        """Drop a compiled draft (a preview of an unsaved version)."""
        self._console.pop(reference, None)

    def forget_console_versions(self) -> None:
        """Drop every compiled console version (for a database emptied under a running
        process, as between tests; in a kept database a version never changes)."""
        self._console.clear()

    def knows(self, reference: str) -> bool:
        """True when this console version is compiled already."""
        return reference in self._console

    def _console_parts(self, reference: str) -> tuple[Template, Template, Template] | None:
        if reference not in self._console:
            split = split_reference(reference)
            source = (self.console_loader(*split)
                      if split is not None and self.console_loader is not None else None)
            if source is None:
                return None
            self.remember(reference, source)
        return self._console[reference]

    def _render_console(self, reference: str, context: dict[str, Any]) -> Rendered:
        parts = self._console_parts(reference)
        if parts is None:
            raise TemplateProblem(f"Unknown template '{reference}'.",
                                  fields={"template": [f"Unknown template: {reference}"]})
        subject_template, text_template, html_template = parts
        subject = subject_template.render(context).strip()
        text = text_template.render(context)
        body = sanitize(html_template.render(context))
        return Rendered(subject=subject, text=text, html=layout(body, subject))

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
        """Render subject, text and HTML of a template folder or a console reference
        ("NAME@VERSION"); any problem raises TemplateProblem naming it."""
        console = "@" in name or name in self._console
        if not console and not self.exists(name):
            raise TemplateProblem(f"Unknown template '{name}'.",
                                  fields={"template": [f"Unknown template: {name}"]})
        try:
            if console:
                rendered = self._render_console(name, context)
                subject, text, html = rendered.subject, rendered.text, rendered.html
            else:
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
    # mailer.messages.templates.init_app() gives it the console's templates.
    app.extensions[EXTENSION_KEY] = Renderer(path)


def renderer() -> Renderer:
    """The current app's renderer."""
    return current_app.extensions[EXTENSION_KEY]
