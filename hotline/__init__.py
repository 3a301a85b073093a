"""The composition root: configuration, CLI, wiring and lifecycle."""
