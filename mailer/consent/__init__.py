"""Consent: per-topic subscription state, its append-only log, and the gate every mail passes."""
