"""Cost from recorded usage and configured prices; absent when either is unknown."""

from __future__ import annotations

from sincere.answer import Usage
from sincere.config import DeploymentConfig


def cost_usd(usage: Usage | None, deployment: DeploymentConfig) -> float | None:
    """Prompt and completion tokens times the deployment's price per million tokens."""
    if usage is None:
        return None
    inp, out = deployment.input_price_per_mtok, deployment.output_price_per_mtok
    if inp is None or out is None:
        return None
    return (usage.prompt_tokens * inp + usage.completion_tokens * out) / 1_000_000
