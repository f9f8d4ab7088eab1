"""Creating and finding topics."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, TypeVar

from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError

from mailer.errors import Conflict, ValidationFailed
from mailer.extensions import db
from mailer.topics.models import Topic


class Slugged(Protocol):
    """A topic, or a row of the topics table."""

    @property
    def slug(self) -> str: ...


T = TypeVar("T", bound=Slugged)


def list_topics(*, public_only: bool = False) -> list[Topic]:
    """All topics (or the public ones), by slug."""
    query = select(Topic).order_by(Topic.slug)
    if public_only:
        query = query.where(Topic.public.is_(True))
    return list(db.session.scalars(query))


def create_topic(
    slug: str, name: str, description: str = "", double_opt_in: bool = True, public: bool = False
) -> Topic:
    """Add a topic; a taken slug raises Conflict(topic_exists)."""
    topic = Topic(
        slug=slug, name=name, description=description, double_opt_in=double_opt_in, public=public
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
