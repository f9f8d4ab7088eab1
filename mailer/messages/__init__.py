"""The outbox: accepting messages, rendering them, and building their bytes."""
