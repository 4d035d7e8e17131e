"""Media as files and streams: audio intake and encoding, images checked by content, sentences for
speech, end-of-speech detection."""
