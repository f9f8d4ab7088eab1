"""The template catalogue: for a name, what kind of mail it is, its variables, where it lives.

Two sources under one set of names. A folder of MAILER_TEMPLATE_DIR or the shipped
templates/email/ declares itself in `template.toml`:

    category = "transactional" | "promotional" | "notice"   # none declared: promotional
    description = "..."                                      # optional
    service = "confirmation" | "referral"                    # the service's own mails only
    [variables.NAME]                                         # optional, in this order
    label = "..."
    example = ...

A template written in the console is a row per version (models.ConsoleTemplate) and
declares the same when made. A name in both: the console's wins, except a name of one of
the service's own mails, which the console cannot take. `lookup()` answers a name (or a
console reference "NAME@VERSION") with a TemplateInfo whose `reference` is what a mail or
campaign stores, so that it keeps the version it was made with.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask, current_app
from jinja2 import TemplateError, meta, nodes
from sqlalchemy import bindparam, func, select, tuple_

from mailer.extensions import db
from mailer.messages.models import Category, ConsoleTemplate, TemplateCategory
from mailer.messages.render import (
    EXTENSION_KEY,
    TEMPLATE_NAME,
    ConsoleSource,
    Renderer,
    TemplateProblem,
    renderer,
    split_reference,
)

DECLARATION = "template.toml"
PARTS = ("subject.txt", "body.txt", "body.html")
# What the service puts into a mail's context itself: never a variable of a template.
SERVICE_VARIABLES = frozenset({"brand_name", "unsubscribe_url", "preferences_url",
                               "postal_address", "topic_name"})
# The service's own mails, by the kind of mail they go out as (template.toml `service`).
SERVICE_KINDS = {"confirmation": Category.CONFIRMATION, "referral": Category.REFERRAL}
# The kind of mail a template of each category is for the consent gate. A notice has none
# yet: it is sent by the notices fan-out, never by POST /messages or a campaign.
SENDS_AS = {TemplateCategory.TRANSACTIONAL: Category.TRANSACTIONAL,
            TemplateCategory.PROMOTIONAL: Category.PROMOTIONAL}
_CACHE_KEY = "mailer.template_catalogue"


class CategoryMismatch(TemplateProblem):
    """The mail's kind differs from its template's declared category (422)."""

    code = "category_mismatch"


class UnknownTemplate(TemplateProblem):
    """No template has that name (422 at a send, 404 where the template is the resource)."""


@dataclass(frozen=True, slots=True)
class Variable:
    name: str
    label: str
    example: Any = None


@dataclass(frozen=True, slots=True)
class TemplateInfo:
    """What the catalogue knows of one template (of one version, for the console's)."""

    name: str
    category: TemplateCategory
    description: str
    variables: tuple[Variable, ...]
    # True when the variables are declared (toml or console form), False when read from
    # the Jinja source.
    declared: bool
    source: str  # "file" or "console"
    # A console template's version number; a file template's is a digest of its files.
    version: str
    # What a mail or campaign stores: the folder's name, or "NAME@VERSION".
    reference: str
    location: str
    # The service's own mail (confirmation, referral): the kind it goes out as.
    service: Category | None = None

    @property
    def sends_as(self) -> Category | None:
        """The kind of mail the consent gate judges it as; None: not sendable as a mail."""
        return self.service or SENDS_AS.get(self.category)

    def examples(self) -> dict[str, Any]:
        """Each variable's example (a placeholder where none is declared)."""
        return {v.name: v.example if v.example is not None else f"Sample {v.label.lower()}"
                for v in self.variables}


# -- file templates ----------------------------------------------------------------------------

def _cache() -> dict[str, TemplateInfo | None]:
    # Per app: like the renderer's compiled templates, a folder read stays read.
    return current_app.extensions.setdefault(_CACHE_KEY, {})


def _folder(templates: Renderer, name: str) -> Path | None:
    for folder in templates.search_path:
        if (folder / name / "subject.txt").is_file() and (folder / name / "body.txt").is_file():
            return folder / name
    return None


def undeclared_variables(sources: list[str], env: Any = None) -> list[str]:
    """The names the Jinja sources read and do not set themselves, minus the service's own.

    A name a `{% for %}` walks over is kept too (as every other); unreadable sources add
    nothing (rendering reports them).
    """
    env = env or renderer().env
    names: set[str] = set()
    for source in sources:
        try:
            names |= meta.find_undeclared_variables(env.parse(source))
        except TemplateError:
            continue
    return sorted(names - SERVICE_VARIABLES - set(env.globals))


def iterated_variables(sources: list[str], env: Any = None) -> set[str]:
    """The variables a `{% for %}` walks over (a sample gives them a list)."""
    env = env or renderer().env
    found: set[str] = set()
    for source in sources:
        try:
            tree = env.parse(source)
        except TemplateError:
            continue
        for loop in tree.find_all(nodes.For):
            if isinstance(loop.iter, nodes.Name):
                found.add(loop.iter.name)
            found |= {node.name for node in loop.iter.find_all(nodes.Name)}
    return found


def _declared_variables(raw: Any, where: str) -> tuple[Variable, ...]:
    if not isinstance(raw, dict):
        raise TemplateProblem(f"{where}: [variables] is a table of tables.",
                              fields={"template": ["bad [variables]"]})
    out = []
    for name, spec in raw.items():
        spec = spec if isinstance(spec, dict) else {}
        out.append(Variable(name, str(spec.get("label") or name.replace("_", " ")),
                            spec.get("example")))
    return tuple(out)


def _read_file_template(name: str) -> TemplateInfo | None:
    templates = renderer()
    folder = _folder(templates, name)
    if folder is None:
        return None
    declaration: dict[str, Any] = {}
    # Like each part of a template, the declaration is the first on the search path: a
    # MAILER_TEMPLATE_DIR folder that restyles a shipped mail keeps the shipped declaration.
    toml = next((path for folder_ in templates.search_path
                 if (path := folder_ / name / DECLARATION).is_file()), folder / DECLARATION)
    where = f"{name}/{DECLARATION}"
    if toml.is_file():
        try:
            declaration = tomllib.loads(toml.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise TemplateProblem(f"{where} is not valid TOML: {exc}",
                                  fields={"template": [f"{where}: {exc}"]}) from exc
    try:
        category = TemplateCategory(declaration.get("category", TemplateCategory.PROMOTIONAL))
    except ValueError as exc:
        raise TemplateProblem(
            f"{where}: category is transactional, promotional or notice.",
            fields={"template": [f"{where}: unknown category"]}) from exc
    service = declaration.get("service")
    if service is not None and service not in SERVICE_KINDS:
        raise TemplateProblem(f"{where}: service is one of {', '.join(SERVICE_KINDS)}.",
                              fields={"template": [f"{where}: unknown service"]})
    sources = [(folder / part).read_text(encoding="utf-8")
               for part in PARTS if (folder / part).is_file()]
    digest = hashlib.sha256("\0".join(sources).encode("utf-8"))
    if "variables" in declaration:
        variables, declared = _declared_variables(declaration["variables"], where), True
    else:
        iterated = iterated_variables(sources, templates.env)
        variables = tuple(Variable(v, v.replace("_", " "), [] if v in iterated else None)
                          for v in undeclared_variables(sources, templates.env))
        declared = False
    return TemplateInfo(
        name=name, category=category, description=str(declaration.get("description", "")),
        variables=variables, declared=declared, source="file", version=digest.hexdigest()[:12],
        reference=name, location=str(folder),
        service=SERVICE_KINDS[service] if service else None,
    )


def file_template(name: str) -> TemplateInfo | None:
    """The template folder `name` as the catalogue sees it; None when there is none."""
    cache = _cache()
    if name not in cache:
        if not TEMPLATE_NAME.match(name):
            return None
        cache[name] = _read_file_template(name)
    return cache[name]


def file_template_names() -> list[str]:
    """The sendable folders on the search path (those starting with "_" are parts of other
    mails, the footers, and are left out)."""
    names: set[str] = set()
    for folder in renderer().search_path:
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if (not entry.name.startswith("_") and TEMPLATE_NAME.match(entry.name)
                    and (entry / "subject.txt").is_file() and (entry / "body.txt").is_file()):
                names.add(entry.name)
    return sorted(names)


# -- console templates -------------------------------------------------------------------------

_LATEST = (select(ConsoleTemplate).where(ConsoleTemplate.name == bindparam("name"))
           .order_by(ConsoleTemplate.version.desc()).limit(1))
_VERSION = select(ConsoleTemplate).where(ConsoleTemplate.name == bindparam("name"),
                                         ConsoleTemplate.version == bindparam("version"))


def console_version(name: str, version: int | None = None) -> ConsoleTemplate | None:
    """A version of a console template (the newest when `version` is None), or None."""
    if version is None:
        return db.session.scalar(_LATEST, {"name": name})
    return db.session.scalar(_VERSION, {"name": name, "version": version})


# What a send needs of the newest version: not its sources.
_LATEST_KIND = (select(ConsoleTemplate.version, ConsoleTemplate.category,
                       ConsoleTemplate.description)
                .where(ConsoleTemplate.name == bindparam("name"))
                .order_by(ConsoleTemplate.version.desc()).limit(1))


def reference_of(row: ConsoleTemplate) -> str:
    return f"{row.name}@{row.version}"


def source_of(row: ConsoleTemplate) -> ConsoleSource:
    return ConsoleSource(subject=row.subject, html=row.body_html, text=row.body_text)


def console_info(row: ConsoleTemplate) -> TemplateInfo:
    """A console version as the catalogue answers it (variables declared by its form, or
    read from its Jinja)."""
    if row.variables:
        variables = tuple(Variable(v["name"], v.get("label") or v["name"], v.get("example"))
                          for v in row.variables)
        declared = True
    else:
        sources = [row.subject, row.body_html, row.body_text]
        iterated = iterated_variables(sources)
        variables = tuple(Variable(v, v.replace("_", " "), [] if v in iterated else None)
                          for v in undeclared_variables(sources))
        declared = False
    return TemplateInfo(
        name=row.name, category=TemplateCategory(row.category), description=row.description,
        variables=variables, declared=declared, source="console", version=str(row.version),
        reference=reference_of(row), location="console",
    )


def load_console_source(name: str, version: int) -> ConsoleSource | None:
    """The source of one version of a console template, or None."""
    row = console_version(name, version)
    return source_of(row) if row is not None else None


def init_app(app: Flask) -> None:
    """Let the app's renderer (made by render.init_app) load the console's templates."""
    app.extensions[EXTENSION_KEY].console_loader = load_console_source


def preload(references: set[str]) -> None:
    """Compile the console versions among `references` not compiled yet, in one query, so
    rendering them later needs no database (the worker renders on its event loop)."""
    templates = renderer()
    wanted = [split for ref in references
              if "@" in ref and not templates.knows(ref)
              and (split := split_reference(ref)) is not None]
    if not wanted:
        return
    rows = db.session.scalars(select(ConsoleTemplate).where(
        tuple_(ConsoleTemplate.name, ConsoleTemplate.version).in_(wanted)))
    for row in rows:
        templates.remember(reference_of(row), source_of(row))


# -- the catalogue -----------------------------------------------------------------------------

def unknown(name: str) -> UnknownTemplate:
    return UnknownTemplate(f"Unknown template '{name}'.",
                           fields={"template": [f"Unknown template: {name}"]})


def lookup(name: str, *, variables: bool = True) -> TemplateInfo:
    """The template a send or campaign names: a console reference's version, else the
    newest console version of the name, else its folder (the service's own mails always
    their folder). Raises TemplateProblem for an unknown name or a bad template.toml.

    `variables=False` (a send: it needs the kind and the reference only) reads a console
    template's newest version without its sources and answers no variables for it.
    """
    split = split_reference(name)
    if split is not None:
        row = console_version(*split)
        if row is None:
            raise unknown(name)
        return console_info(row)
    found = file_template(name)
    if found is not None and found.service is not None:
        return found
    if TEMPLATE_NAME.match(name) and len(name) <= 80:
        if not variables:
            newest = db.session.execute(_LATEST_KIND, {"name": name}).first()
            if newest is not None:
                return TemplateInfo(
                    name=name, category=TemplateCategory(newest.category),
                    description=newest.description, variables=(), declared=False,
                    source="console", version=str(newest.version),
                    reference=f"{name}@{newest.version}", location="console")
        else:
            row = console_version(name)
            if row is not None:
                return console_info(row)
    if found is None:
        raise unknown(name)
    return found


def catalogue() -> list[TemplateInfo]:
    """Every sendable template by name: the newest console version where there is one,
    else the folder. A folder with a bad template.toml is left out (lookup names why)."""
    found: dict[str, TemplateInfo] = {}
    for name in file_template_names():
        try:
            info = file_template(name)
        except TemplateProblem:
            continue
        if info is not None:
            found[name] = info
    newest = (select(ConsoleTemplate.name, func.max(ConsoleTemplate.version).label("version"))
              .group_by(ConsoleTemplate.name).subquery())
    rows = db.session.scalars(select(ConsoleTemplate).join(
        newest, (ConsoleTemplate.name == newest.c.name)
        & (ConsoleTemplate.version == newest.c.version)))
    for row in rows:
        if found.get(row.name) is None or found[row.name].service is None:
            found[row.name] = console_info(row)
    return [found[name] for name in sorted(found)]


def kind_of_mail(info: TemplateInfo, asked: Category | None,
                 allowed: frozenset[Category] | None = None) -> Category:
    """The kind of mail a send of `info` is: the template's, never the caller's.

    `asked` (the caller's category, if given) must be that kind; `allowed` (if given) is
    what this caller may send at all (the API: transactional and promotional). Otherwise
    CategoryMismatch, so a marketing template can never pass the consent gate as another
    kind of mail.
    """
    kind = info.sends_as
    if kind is None or (allowed is not None and kind not in allowed):
        what = (f"one of the service's own mails ({kind.value})" if info.service is not None
                else f"a {info.category.value} template")
        raise CategoryMismatch(
            f"Template '{info.name}' is {what}; it cannot be sent this way.",
            fields={"template": [f"{info.name} is {what}"]},
            extra={"template_category": info.category.value},
        )
    if asked is not None and asked != kind:
        raise CategoryMismatch(
            f"Template '{info.name}' is {info.category.value} mail, not {asked.value}: the "
            f"template decides the kind of mail. Leave out category, or send it as "
            f"{kind.value}.",
            fields={"category": [f"the template is {info.category.value}"]},
            extra={"template_category": info.category.value},
        )
    return kind
