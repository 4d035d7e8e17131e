"""Guards: secrets kept out of the logs, an open port without keys flagged, untrusted JSON bounded."""
