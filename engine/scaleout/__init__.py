"""One front host and GPU workers over a Redis queue."""
