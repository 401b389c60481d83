"""The implementations of the ports (sincere.ports), one package per backend."""
