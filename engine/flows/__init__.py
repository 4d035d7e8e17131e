"""Work of several jobs: the voice note (transcribe -> chat -> speak) and the writing templates."""
