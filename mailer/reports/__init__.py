"""Audience reports: counts of subscribed contacts per group, never a group smaller than k."""
