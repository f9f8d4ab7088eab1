"""Tests of campaigns: API, fan-out, delivery, worker processes."""

from __future__ import annotations

NEWS = {"headline": "Winter sale", "intro": "Pianos half price."}


def start_campaign(client, auth, **extra) -> str:
    """Create the campaign "Winter" of the topic news through the API and schedule it now."""
    body = {"name": "Winter", "topic": "news", "template": "newsletter", "data": NEWS, **extra}
    campaign_id = client.post("/api/v1/campaigns", json=body, headers=auth).get_json()["id"]
    scheduled = client.post(f"/api/v1/campaigns/{campaign_id}/schedule", json={},
                            headers=auth)
    assert scheduled.status_code == 200, scheduled.get_data(as_text=True)
    return campaign_id
