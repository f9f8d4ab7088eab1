"""Templates written in the console: saving a version, and previewing a mail as sent.

Saving never changes a row: it adds the next version (models.ConsoleTemplate), so a
campaign or a queued mail keeps the version it was made with. The sources are checked in
the renderer's sandbox before they are stored, and the body is sanitized (authoring).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from jinja2 import TemplateSyntaxError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from mailer import addresses
from mailer.errors import Conflict, ValidationFailed
from mailer.extensions import db
from mailer.messages import authoring, templates
from mailer.messages.compose import Envelope, TopicInfo, compose
from mailer.messages.mime import OutgoingMail
from mailer.messages.models import BodyFormat, Category, ConsoleTemplate, TemplateCategory
from mailer.messages.render import TEMPLATE_NAME, ConsoleSource, renderer

MAX_NAME_LENGTH = 80
# Names the console's own pages use (/admin/templates/new).
RESERVED_NAMES = frozenset({"new"})
MAX_SOURCE_LENGTH = 200_000
PREVIEW_ADDRESS = "subscriber@example.com"
PREVIEW_TOPIC = TopicInfo(0, "example", "Example topic")


class VersionConflict(Conflict):
    code = "template_changed"


@dataclass(frozen=True)
class Draft:
    """What the console's template form holds."""

    name: str
    category: TemplateCategory
    subject: str
    body_format: BodyFormat
    body: str
    description: str = ""
    # None: the text part is made from the body.
    text: str | None = None
    # [{"name", "label", "example"}]; empty: the Jinja names of the sources are the variables.
    variables: list[dict[str, Any]] = field(default_factory=list)


def parse_example(text: str) -> Any:
    """A variable's example as typed: a JSON list or object when it reads as one (a loop's
    items), else the text."""
    stripped = text.strip()
    if stripped[:1] in ("[", "{"):
        try:
            return json.loads(stripped)
        except json.JSONDecodeError:
            return text
    return text


def check_name(name: str) -> None:
    """A name the console may use: the folder names' pattern, at most 80 characters, and not
    a part of other mails ("_...") or one of the service's own mails."""
    if name in RESERVED_NAMES:
        raise ValidationFailed(f"'{name}' is a word the console uses; choose another name.",
                               fields={"name": ["reserved"]})
    if not TEMPLATE_NAME.match(name) or len(name) > MAX_NAME_LENGTH:
        raise ValidationFailed(
            "A template name is lower-case letters, digits, - and _, starting with a letter "
            f"or digit, at most {MAX_NAME_LENGTH} characters.",
            fields={"name": ["letters a-z, digits, - and _"]})
    own = templates.file_template(name)
    if own is not None and own.service is not None:
        raise ValidationFailed(f"'{name}' is one of the service's own mails; choose another "
                               "name.", fields={"name": ["taken by the service's own mail"]})


def _source(draft: Draft) -> ConsoleSource:
    html = authoring.body_html(draft.body, draft.body_format)
    text = (draft.text if draft.text is not None and draft.text.strip()
            else authoring.body_text(draft.body, draft.body_format))
    return ConsoleSource(subject=draft.subject.strip(), html=html, text=text)


def check_sources(draft: Draft) -> ConsoleSource:
    """The sources as they would be stored; a Jinja syntax error, an over-long part or a
    variable used but not declared is a ValidationFailed naming the form's field."""
    for name, value in (("subject", draft.subject), ("body", draft.body),
                        ("text", draft.text or "")):
        if len(value) > MAX_SOURCE_LENGTH:
            raise ValidationFailed(f"The {name} is over {MAX_SOURCE_LENGTH} characters.",
                                   fields={name: ["too long"]})
    if not draft.subject.strip():
        raise ValidationFailed("The subject is empty.", fields={"subject": ["empty"]})
    if "\n" in draft.subject.strip() or "\r" in draft.subject:
        raise ValidationFailed("The subject is one line.", fields={"subject": ["one line"]})
    source = _source(draft)
    env = renderer().env
    for name, value in (("subject", source.subject), ("body", source.html),
                        ("text", source.text)):
        try:
            env.parse(value)
        except TemplateSyntaxError as exc:
            raise ValidationFailed(f"The {name} has a template error on line {exc.lineno}: "
                                   f"{exc.message}", fields={name: [exc.message or "error"]}
                                   ) from exc
    if draft.variables:
        used = templates.undeclared_variables([source.subject, source.html, source.text])
        declared = {v["name"] for v in draft.variables}
        missing = [name for name in used if name not in declared]
        if missing:
            raise ValidationFailed(
                "The template uses variables the form does not declare: "
                f"{', '.join(missing)}. Add a row for each, or remove them.",
                fields={"variables": [f"not declared: {', '.join(missing)}"]})
    return source


def newest(name: str) -> ConsoleTemplate | None:
    return templates.console_version(name)


def versions(name: str) -> list[ConsoleTemplate]:
    """Every version of a console template, newest first."""
    return list(db.session.scalars(select(ConsoleTemplate).where(ConsoleTemplate.name == name)
                                   .order_by(ConsoleTemplate.version.desc())))


def save(draft: Draft, *, user_id: int | None, new: bool,
         base_version: int | None = None) -> ConsoleTemplate:
    """Store the draft as the template's next version (version 1 when `new`), and flush.

    A new template whose name the console has already is a Conflict, as is an edit when a
    version newer than `base_version` was saved meanwhile (the editor would overwrite it
    unseen).
    """
    check_name(draft.name)
    source = check_sources(draft)
    current = db.session.scalar(select(func.max(ConsoleTemplate.version))
                                .where(ConsoleTemplate.name == draft.name))
    if new and current is not None:
        raise Conflict(f"The console has a template '{draft.name}' already: edit it instead.",
                       code="template_exists", fields={"name": ["taken"]})
    if not new and current is None:
        raise ValidationFailed(f"Unknown template '{draft.name}'.",
                               fields={"name": ["unknown"]})
    if base_version is not None and current is not None and current != base_version:
        raise VersionConflict(
            f"Version {current} of '{draft.name}' was saved while you edited version "
            f"{base_version}. Open the template again to see it.")
    row = ConsoleTemplate(
        name=draft.name, version=(current or 0) + 1, category=draft.category.value,
        description=draft.description.strip(), subject=source.subject,
        body_format=draft.body_format.value, body_source=draft.body, body_html=source.html,
        text_source=draft.text if draft.text is not None and draft.text.strip() else None,
        body_text=source.text, variables=draft.variables, created_by=user_id,
    )
    try:
        with db.session.begin_nested():
            db.session.add(row)
    except IntegrityError as exc:  # the same version saved by someone else meanwhile
        raise VersionConflict(f"'{draft.name}' was saved by someone else just now. Open it "
                              "again to see their version.") from exc
    return row


def sample_data(info: templates.TemplateInfo) -> dict[str, Any]:
    """Data to preview a template with: each variable's example."""
    return info.examples()


def preview(reference: str, category: TemplateCategory, data: dict[str, Any]) -> OutgoingMail:
    """The mail as a recipient gets it, rendered through the same path as a real one:
    a promotional template with its unsubscribe and preferences links, the postal address
    and the standard footer where the template has none. Raises TemplateProblem or
    NotConfigured (a promotional preview needs MAILER_POSTAL_ADDRESS, as its mail does)."""
    kind = templates.SENDS_AS.get(category, Category.TRANSACTIONAL)
    return compose(Envelope(
        public_id=secrets.token_hex(16), to_address=PREVIEW_ADDRESS,
        address_hash=addresses.keyed_hash(PREVIEW_ADDRESS), category=kind,
        template=reference, data=data,
        topic=PREVIEW_TOPIC if kind is Category.PROMOTIONAL else None,
    ))


def _service_examples() -> dict[str, Any]:
    """Stand-ins for what the service adds to a promotional mail's context."""
    return {"brand_name": "brand", "unsubscribe_url": "https://example.com/unsubscribe/x",
            "preferences_url": "https://example.com/preferences/x",
            "postal_address": "1 Example Street", "topic_name": "Example topic"}


def missing_variables(info: templates.TemplateInfo,
                      data: dict[str, Any]) -> list[templates.Variable]:
    """The variables left out of `data` that the template cannot do without, all of them.

    Jinja stops at the first undefined name; a marketer wants every empty field named at
    once. A variable left out is needed when the template fails without it while every
    other left-out one has its example (a `|default(...)` or an `{% if %}` makes one
    optional).
    """
    omitted = [v for v in info.variables if v.name not in data]
    if not omitted:
        return []
    templates_ = renderer()
    base = {**_service_examples(), **data}

    def renders(context: dict[str, Any]) -> bool:
        try:
            templates_.render(info.reference, context)
        except templates.TemplateProblem as exc:
            if "data" in exc.fields:
                return False
            raise
        return True

    if renders(base):
        return []
    examples = info.examples()
    return [v for v in omitted
            if not renders({**base, **{o.name: examples[o.name] for o in omitted if o != v}})]


def draft_sample(draft: Draft) -> dict[str, Any]:
    """Data to preview a draft with: the declared examples, or a placeholder for each name its
    Jinja reads (a list for a name a loop walks over)."""
    if draft.variables:
        return {v["name"]: v["example"] for v in draft.variables}
    source = check_sources(draft)
    sources = [source.subject, source.html, source.text]
    iterated = templates.iterated_variables(sources)
    return {name: [] if name in iterated else f"Sample {name.replace('_', ' ')}"
            for name in templates.undeclared_variables(sources)}


def preview_draft(draft: Draft, data: dict[str, Any]) -> OutgoingMail:
    """A preview of an unsaved draft (checked as save() checks it; nothing is stored)."""
    source = check_sources(draft)
    reference = f"{draft.name or 'draft'}@draft-{secrets.token_hex(8)}"
    templates_ = renderer()
    templates_.remember(reference, source)
    try:
        return preview(reference, draft.category, data)
    finally:
        templates_.forget(reference)
