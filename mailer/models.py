"""Imports every model module, so the mappers and Alembic see the whole schema."""

from mailer.admin.models import AdminUser
from mailer.apikeys.models import ApiKey
from mailer.campaigns.models import Campaign
from mailer.consent.models import ConsentEvent, Subscription
from mailer.contacts.models import Contact
from mailer.delivery.throttle import SendRate
from mailer.installation import Installation
from mailer.messages.models import IdempotencyRecord, Message
from mailer.notices.models import Notice, NoticeDelivery
from mailer.referrals.models import Referral
from mailer.reports.models import AudienceReport
from mailer.suppressions.models import Suppression
from mailer.topics.models import Topic
from mailer.webhooks.models import WebhookDelivery, WebhookEndpoint

__all__ = [
    "AdminUser",
    "ApiKey",
    "AudienceReport",
    "Campaign",
    "ConsentEvent",
    "Contact",
    "IdempotencyRecord",
    "Installation",
    "Message",
    "Notice",
    "NoticeDelivery",
    "Referral",
    "SendRate",
    "Subscription",
    "Suppression",
    "Topic",
    "WebhookDelivery",
    "WebhookEndpoint",
]
