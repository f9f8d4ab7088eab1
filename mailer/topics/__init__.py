"""Topics: the lists an address can opt in to, one consent per topic."""
