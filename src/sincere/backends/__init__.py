"""Implementations of the ports (``sincere.ports``): in-process, and SQL."""
