"""Confab\x27s front doors: Slack, Discord, the terminal console, and the command line."""
