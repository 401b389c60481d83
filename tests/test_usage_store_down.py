"""The SQL store stops answering under a running gateway: /v1/usage answers from the
process's own recent attempts, degraded and saying so, never a number from nowhere.

The gateway's PostgreSQL is reached through a TCP proxy that the test cuts (tests/redis_cut
proxies any TCP service), so the store really goes away, for every statement.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

from sincere.runtime import build_runtime
from tests.faults import Fault, FaultServer
from tests.live import LiveServer, run, settings_for
from tests.redis_cut import RedisCut

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
HANG_GUARD_S = 60


async def test_with_the_store_cut_usage_comes_from_this_process_marked_degraded(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    fault_server.default = Fault.ok("One two three.")
    schema = f"usage_down_{uuid.uuid4().hex[:10]}"
    with create_engine(POSTGRES).begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    proxy = await RedisCut("127.0.0.1", 5432).start()
    url = f"postgresql+psycopg://postgres@127.0.0.1:{proxy.port}/test"
    url += f"?options=-csearch_path%3D{schema}"
    extra = f'[telemetry]\nflush_s = 0.05\n\n[store]\nurl = "{url}"\n'
    # Every blocking call runs off this loop: the proxy the store is reached through runs on it.
    settings = settings_for(tmp_path, fault_server.base_url, extra)
    try:
        gateway = await asyncio.to_thread(build_runtime, settings, env={})
        server = LiveServer(gateway)
        live = await asyncio.to_thread(server.__enter__)
        try:
            key, _ = await asyncio.to_thread(run, gateway.keys.create("alice", "standard", "user"))
            headers = {"authorization": f"Bearer {key}"}
            async with httpx.AsyncClient(timeout=HANG_GUARD_S) as client:
                for _ in range(3):
                    chat = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}
                    answered = await client.post(
                        f"{live.v1}/chat/completions", json=chat, headers=headers
                    )
                    assert answered.status_code == 200
                deadline = time.monotonic() + HANG_GUARD_S
                while True:  # written to the store
                    body = (await client.get(f"{live.v1}/usage", headers=headers)).json()
                    if sum(g["requests"] for g in body.get("groups", [])) == 3:
                        break
                    assert time.monotonic() < deadline, "the telemetry was never written"
                    await asyncio.sleep(0.05)
                assert body["source"] == "sql:postgresql"
                proxy.cut()  # the store is gone (the key stays verified in its cache)
                degraded = await client.get(f"{live.v1}/usage", headers=headers)
            events = (await gateway.bus.replay("alice")).events
        finally:
            await asyncio.to_thread(server.__exit__, None, None, None)
    finally:
        await proxy.aclose()
        with create_engine(POSTGRES).begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    assert degraded.status_code == 200, degraded.text
    body = degraded.json()
    assert (body["source"], body["degraded"]) == ("memory:this-process", True)
    assert body["scope"] == "this process, last 15 minutes"
    (gpt,) = body["groups"]
    assert (gpt["requests"], gpt["answered"]) == (3, 3)  # real attempts, from memory
    assert any("cannot be read" in note for note in body["notes"])
    tail = [(e.service, str(e.type)) for e in events][-4:]
    assert tail == [
        ("usage:store", "service_initializing"),
        ("usage:store", "service_unavailable"),
        ("usage:memory", "service_initializing"),
        ("usage:memory", "service_ready"),
    ]
