"""Creating and finding topics."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, TypeVar

from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError

from mailer.database import utcnow
from mailer.errors import Conflict, NotFound, ValidationFailed
from mailer.extensions import db
from mailer.topics.models import Topic
from mailer.topics.welcome import check_welcome_template


class Slugged(Protocol):
    """A topic, or a row of the topics table."""

    @property
    def slug(self) -> str: ...


T = TypeVar("T", bound=Slugged)


def list_topics(*, public_only: bool = False) -> list[Topic]:
    """All topics (or the public ones that are not retired: those a form may offer), by slug."""
    query = select(Topic).order_by(Topic.slug)
    if public_only:
        query = query.where(Topic.public.is_(True), Topic.retired_at.is_(None))
    return list(db.session.scalars(query))


def get_topic(slug: str) -> Topic:
    """The topic of a slug, or NotFound(topic_not_found)."""
    topic = db.session.scalar(select(Topic).where(Topic.slug == slug))
    if topic is None:
        raise NotFound("No topic with that slug.", code="topic_not_found")
    return topic


def update_topic(topic: Topic, *, name: str, description: str, double_opt_in: bool,
                 public: bool, welcome_text: str, welcome_template: str | None = None) -> Topic:
    """Change what a topic says and how it is joined; its slug and history stay.
    `welcome_template`: a promotional template mailed on each confirmed subscription, or None
    (topics.welcome; anything else is 422).

    A change of double opt-in applies to requests from now on: nobody already pending or
    subscribed is moved."""
    topic.name = name
    topic.description = description
    topic.double_opt_in = double_opt_in
    topic.public = public
    topic.welcome_text = welcome_text
    topic.welcome_template = check_welcome_template(welcome_template)
    db.session.flush()
    return topic


def retire_topic(topic: Topic) -> Topic:
    """Retire a topic: from now on no path subscribes anyone to it (see refuse_retired());
    its subscriptions, their consent history and its campaigns are kept. Retiring twice
    keeps the first time."""
    if topic.retired_at is None:
        topic.retired_at = utcnow()
        topic.public = False  # no form offers it any more
    db.session.flush()
    return topic


class Retirable(Protocol):
    """A topic, or a row of the topics table (every column)."""

    @property
    def slug(self) -> str: ...

    @property
    def retired_at(self) -> object: ...


def refuse_retired(topics: Iterable[Retirable], field: str = "topics") -> None:
    """Raise ValidationFailed(topic_retired) naming `field` and each retired topic among
    `topics`: every way of asking for a subscription calls this before it writes."""
    retired = [topic.slug for topic in topics if topic.retired_at is not None]
    if retired:
        raise ValidationFailed(
            "Retired topic: " + ", ".join(retired) + " (it takes no new subscriptions).",
            code="topic_retired",
            fields={field: [f"Retired topic: {slug}" for slug in retired]},
        )


def create_topic(
    slug: str, name: str, description: str = "", double_opt_in: bool = True, public: bool = False,
    welcome_text: str = "", welcome_template: str | None = None,
) -> Topic:
    """Add a topic; a taken slug raises Conflict(topic_exists), a welcome template that is not
    promotional ValidationFailed."""
    topic = Topic(
        slug=slug, name=name, description=description, double_opt_in=double_opt_in, public=public,
        welcome_text=welcome_text, welcome_template=check_welcome_template(welcome_template),
    )
    taken = Conflict(f"A topic with slug '{slug}' already exists.", code="topic_exists",
                     fields={"slug": ["This slug is taken."]})
    if db.session.scalar(select(Topic.id).where(Topic.slug == slug)) is not None:
        raise taken
    try:
        with db.session.begin_nested():
            db.session.add(topic)
    except IntegrityError as exc:  # a concurrent request took the slug first
        raise taken from exc
    return topic


# Built once: topics are read on every contact request, and building and keying the
# statement each time cost about as much as running it.
_BY_SLUGS = select(Topic).where(Topic.slug.in_(bindparam("slugs", expanding=True)))


def topics_by_slug(slugs: Iterable[str], field: str = "topics") -> dict[str, Topic]:
    """Map each slug to its topic; any unknown slug raises ValidationFailed naming `field`."""
    wanted = list(dict.fromkeys(slugs))
    if not wanted:
        return {}
    return in_order(wanted, db.session.scalars(_BY_SLUGS, {"slugs": wanted}), field)


def in_order(wanted: Iterable[str], found: Iterable[T], field: str = "topics"
             ) -> dict[str, T]:
    """Map each wanted slug, in order, to its topic among `found` (the topics read for them);
    a slug with none raises ValidationFailed naming `field` and every unknown slug."""
    by_slug = {topic.slug: topic for topic in found}
    wanted = list(dict.fromkeys(wanted))
    unknown = [slug for slug in wanted if slug not in by_slug]
    if unknown:
        raise ValidationFailed(
            "Unknown topic: " + ", ".join(unknown),
            fields={field: [f"Unknown topic: {slug}" for slug in unknown]},
        )
    return {slug: by_slug[slug] for slug in wanted}
