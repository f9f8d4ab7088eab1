"""Creating and finding topics."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from mailer.errors import Conflict, ValidationFailed
from mailer.extensions import db
from mailer.topics.models import Topic


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


def topics_by_slug(slugs: Iterable[str], field: str = "topics") -> dict[str, Topic]:
    """Map each slug to its topic; any unknown slug raises ValidationFailed naming `field`."""
    wanted = list(dict.fromkeys(slugs))
    if not wanted:
        return {}
    found = {t.slug: t for t in db.session.scalars(select(Topic).where(Topic.slug.in_(wanted)))}
    unknown = [slug for slug in wanted if slug not in found]
    if unknown:
        raise ValidationFailed(
            "Unknown topic: " + ", ".join(unknown),
            fields={field: [f"Unknown topic: {slug}" for slug in unknown]},
        )
    return {slug: found[slug] for slug in wanted}
