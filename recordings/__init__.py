"""Recorder, finalizer, transcription, search and audit of recordings (issue 3)."""
