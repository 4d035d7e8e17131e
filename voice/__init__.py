"""The push-to-talk voice loop: audio in and out, end-of-speech detection, sentence-streamed
answers and barge-in. Runs headless from files (`confab voice --input q.wav --output a.wav`)."""
from voice.loop import FilePlayer, TurnResult, VoiceLoop

__all__ = ["VoiceLoop", "TurnResult", "FilePlayer"]
