"""The OpenAI-compatible HTTP API, a door like Slack and Discord: its routes, its words, its keys."""
