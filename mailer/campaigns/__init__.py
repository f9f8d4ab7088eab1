"""Campaigns: a mailing to a topic's subscribers, scheduled, fanned out, paused, resumed."""
