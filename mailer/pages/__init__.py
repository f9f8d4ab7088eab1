"""The public pages people use: unsubscribe, preferences, signup, Tell-a-Friend."""
