"""The demo behind ``scripts/demo``."""
