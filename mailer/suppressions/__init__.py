"""Suppressions: address-wide marks kept as keyed hashes, so they survive erasure."""
