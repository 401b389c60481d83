"""Agents that never invent: the data agent (usage figures from recorded telemetry) and
the analyst (findings computed by code, a narrative checked number by number)."""
