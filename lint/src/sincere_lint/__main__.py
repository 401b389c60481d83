"""``python -m sincere_lint``: the command without the console script."""

from sincere_lint.cli import main

main()
