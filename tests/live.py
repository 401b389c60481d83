"""A real sincere gateway on 127.0.0.1, served by uvicorn from a thread, for server tests."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import uvicorn

from sincere.config import Settings, load_settings
from sincere.runtime import Runtime
from sincere.server.app import create_app
from sincere.server.serving import uvicorn_options

T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run one coroutine to its end from synchronous test code, e.g. ``run(gw.keys.create(...))``.

    On a loop of its own, in a thread of its own: this thread's loop (pytest's) is left
    alone. The in-process bus and the SQL key store and history work from any loop.
    """
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


@dataclass
class LiveGateway:
    gateway: Runtime
    url: str  # http://127.0.0.1:PORT
    keys: dict[str, str] = field(default_factory=dict)  # name -> plaintext key

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    @property
    def ws(self) -> str:
        return self.url.replace("http://", "ws://") + "/v1/events"


class LiveServer:
    """Starts uvicorn on a free port and stops it; usable as a context manager."""

    def __init__(self, gateway: Runtime) -> None:
        config = uvicorn.Config(
            create_app(gateway),
            host="127.0.0.1",
            port=0,
            log_level="warning",
            **uvicorn_options(gateway.settings.server),  # what `sincere serve` runs
        )
        self.server = uvicorn.Server(config)
        self.gateway = gateway
        self._thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveGateway:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test gateway did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return LiveGateway(self.gateway, f"http://127.0.0.1:{port}")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=30)


def settings_for(tmp_path: Path, upstream: str, extra: str = "") -> Settings:
    """Model 'gpt' on the given upstream (falling back to nothing), plus the embedded one."""
    path = tmp_path / "sincere.toml"
    path.write_text(
        f"""
[defaults]
max_retries = 0
first_token_timeout_s = 2
stream_idle_timeout_s = 2

[[models]]
name = "gpt"
deployments = ["up"]

[[deployments]]
name = "up"
provider = "openai"
base_url = "{upstream}"
model = "up-model"
input_price_per_mtok = 1.0
output_price_per_mtok = 2.0
{extra}
"""
    )
    return load_settings(path, env={"SINCERE_DATA_DIR": str(tmp_path / "data")})


def fallback_config(tmp_path: Path, up: str, spare: str | None, extra: str = "") -> Path:
    """A configuration file: model 'gpt' on deployment 'up' and, when ``spare`` is given,
    its fallback model 'backup' on deployment 'spare'; no retries; ``extra`` appended."""
    fallback = f"""
fallbacks = ["backup"]

[[models]]
name = "backup"
deployments = ["spare"]

[[deployments]]
name = "spare"
provider = "openai"
base_url = "{spare}"
model = "spare-model"
"""
    path = tmp_path / "sincere.toml"
    path.write_text(
        f"""
[defaults]
max_retries = 0
first_token_timeout_s = 5
stream_idle_timeout_s = 5
{extra}
[[deployments]]
name = "up"
provider = "openai"
base_url = "{up}"
model = "up-model"

[[models]]
name = "gpt"
deployments = ["up"]
{fallback if spare else ""}"""
    )
    return path
