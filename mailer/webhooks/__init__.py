"""Webhooks: endpoints the calling service registers, and the outbox of events for them."""
