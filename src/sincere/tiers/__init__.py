"""Tier policies: admission limits now; priority queue and escalation later."""
