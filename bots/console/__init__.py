"""The terminal console: chat with Confab with no platform token at all."""
