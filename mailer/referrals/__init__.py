"""Tell-a-Friend: one recommendation mail to a friend, limits kept by keyed hashes only."""
