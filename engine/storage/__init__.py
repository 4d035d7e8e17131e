"""What lasts: jobs, conversations, the audit log and kept events, in SQLite or PostgreSQL."""
