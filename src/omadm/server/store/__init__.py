"""The server's persistent state (SQLAlchemy 2; SQLite or PostgreSQL)."""
