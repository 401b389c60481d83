"""The in-process implementations of the ports: state shared within one process only."""
