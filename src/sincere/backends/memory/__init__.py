"""The in-process backends: one process, state in memory."""
