"""Contacts: the addresses the service holds, with their attributes."""
