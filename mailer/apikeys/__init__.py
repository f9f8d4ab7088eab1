"""API keys: random bearer keys, stored only as SHA-256, each with scopes."""
