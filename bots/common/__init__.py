"""What Slack, Discord and the console share: commands, rendering, priority and access."""
