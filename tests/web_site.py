"""The gateway the web page's browser tests and screenshots run against."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sincere.config import load_settings
from sincere.runtime import build_runtime
from tests.faults import FaultServer
from tests.live import LiveGateway, LiveServer, run

UP_TEXT = "Paris is the capital of France."
SPARE_TEXT = "The spare deployment answers: Paris."


@contextmanager
def web_site(
    tmp_path: Path, up: FaultServer, spare: FaultServer, *, event_history: int = 1000
) -> Iterator[LiveGateway]:
    """Model 'gpt' on deployment 'up' (one request at a time), falling back to 'backup' on
    'spare'; heartbeats every 0.5 s so that a page notices a dead link quickly; user alice
    (enterprise) with a key."""
    path = tmp_path / "sincere.toml"
    path.write_text(
        f"""
[defaults]
max_retries = 0
first_token_timeout_s = 10
stream_idle_timeout_s = 10

[server]
heartbeat_s = 0.5
event_history = {event_history}

[[models]]
name = "gpt"
deployments = ["up"]
fallbacks = ["backup"]

[[models]]
name = "backup"
deployments = ["spare"]

[[deployments]]
name = "up"
provider = "openai"
base_url = "{up.base_url}"
model = "up-model"
max_concurrency = 1
input_price_per_mtok = 1.0
output_price_per_mtok = 2.0

[[deployments]]
name = "spare"
provider = "openai"
base_url = "{spare.base_url}"
model = "spare-model"
"""
    )
    settings = load_settings(path, env={"SINCERE_DATA_DIR": str(tmp_path / "data")})
    gateway = build_runtime(settings, env={})
    with LiveServer(gateway) as live:
        live.keys["alice"], _ = run(gateway.keys.create("alice", "enterprise", "user"))
        yield live
