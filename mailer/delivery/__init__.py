"""Delivery: the worker that hands queued mail to SMTP, its transports, and bounce handling."""
