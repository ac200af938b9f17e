"""Small HTTP servers that misbehave on purpose, run as subprocesses by the bench tests."""
