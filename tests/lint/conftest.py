"""The corpus under ``corpus/`` is data for the checker: never imported, never collected."""

collect_ignore_glob = ["corpus/*"]
