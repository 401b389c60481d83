"""The response guard: the last check on every answer (the code checker is `sincere_lint`)."""
