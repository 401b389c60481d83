"""Several real ``sincere serve`` processes as one gateway, for tests.

Each member is its own process (``python -m sincere.cli serve``) on its own free port,
started from one configuration file: the same PostgreSQL database in a schema of this
fleet's own (``CREATE SCHEMA``, then ``search_path`` in the URL) and, with ``redis=True``,
the same Redis under a key prefix of its own. Members start one after the other, each
once the one before is ready, and everything (processes, schema, Redis keys) goes when the
fleet stops. ``kill`` is ``kill -9``: no drain, no goodbye.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx
import redis
from sqlalchemy import create_engine, text

from tests.faults import refused_port

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REDIS = "redis://127.0.0.1:6379/0"
WAIT_S = 60  # bound on every wait for something that should happen


@dataclass
class Member:
    """One gateway process of the fleet."""

    index: int
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/events"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """``kill -9`` of the process and its workers: they end at once, their connections
        with them."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(WAIT_S)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(WAIT_S)
            except subprocess.TimeoutExpired:
                self.kill()
        with contextlib.suppress(ProcessLookupError):  # whatever it left in its group
            os.killpg(self.process.pid, signal.SIGKILL)


class Fleet:
    """``size`` gateway processes (each with ``workers`` workers) on one configuration,
    one PostgreSQL schema and, with ``redis``, one Redis key prefix; a context manager.
    ``defaults`` goes into the ``[defaults]`` table, ``extra`` at the end of the file."""

    def __init__(
        self,
        workdir: Path,
        upstream: str,
        *,
        size: int = 2,
        redis: bool = False,
        workers: int = 1,
        defaults: str = "",
        extra: str = "",
    ) -> None:
        self.workdir = workdir
        self.name = f"fleet_{uuid.uuid4().hex[:12]}"  # the schema and the key prefix
        self.database_url = f"{POSTGRES}?options=-csearch_path%3D{self.name}"
        self.redis_url = REDIS if redis else None
        self.key_prefix = f"{self.name}:"
        self.members: list[Member] = []
        self.size = size
        self.workers = workers  # each member's `sincere serve --workers`
        self.config = workdir / "fleet.toml"
        self.config.write_text(self._config(upstream, defaults, extra))

    def _config(self, upstream: str, defaults: str, extra: str) -> str:
        cluster = ""
        if self.redis_url is not None:
            cluster = f'[cluster]\nredis_url = "{self.redis_url}"\nkey_prefix = "{self.key_prefix}"'
        return f"""
[defaults]
max_retries = 0
first_token_timeout_s = 5
stream_idle_timeout_s = 5
{defaults}

{cluster}

[[models]]
name = "gpt"
deployments = ["up"]

[[deployments]]
name = "up"
provider = "openai"
base_url = "{upstream}"
model = "up-model"
{extra}
"""

    def env(self, index: int = 0) -> dict[str, str]:
        """A bare environment for member ``index`` (or a command run beside the fleet)."""
        return {
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.workdir),
            "SINCERE_DATA_DIR": str(self.workdir / f"data-{index}"),
            "SINCERE_DATABASE_URL": self.database_url,  # the store comes from the environment
            "PYTHONPATH": os.pathsep.join(sys.path),  # this checkout's sincere
            "PYTHONUNBUFFERED": "1",
        }

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Self:
        with create_engine(POSTGRES).begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{self.name}"'))
        try:
            for index in range(self.size):
                self.start_member(index)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start_member(self, index: int) -> Member:
        """Start member ``index`` (again, after a kill) and wait until it is ready."""
        port = refused_port()  # free now; the member takes it
        log = self.workdir / f"member-{index}.log"
        with log.open("ab") as out:
            command = ["serve", "--port", str(port), "--config", str(self.config)]
            command += ["--workers", str(self.workers)]
            process = subprocess.Popen(
                [sys.executable, "-m", "sincere.cli", *command],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env(index),
                start_new_session=True,  # its own process group: its workers die with it
            )
        member = Member(index, port, process, log)
        if index < len(self.members):
            self.members[index] = member
        else:
            self.members.append(member)
        self._wait_ready(member)
        return member

    def _wait_ready(self, member: Member) -> None:
        deadline = time.monotonic() + WAIT_S
        with httpx.Client(timeout=5) as client:
            while time.monotonic() < deadline:
                if member.process.poll() is not None:
                    raise AssertionError(f"member {member.index} exited:\n{member.output()}")
                try:
                    if client.get(member.url + "/readyz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        raise AssertionError(f"member {member.index} not ready:\n{member.output()}")

    def stop(self) -> None:
        for member in self.members:
            member.stop()
        with create_engine(POSTGRES).begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{self.name}" CASCADE'))
        if self.redis_url is not None:
            client = redis.Redis.from_url(self.redis_url)
            try:
                for key in client.scan_iter(match=f"{self.key_prefix}*", count=1000):
                    client.delete(key)
            finally:
                client.close()

    # -- keys, through the command an operator runs ------------------------------------------

    def sincere(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "sincere.cli", *args, "--config", str(self.config)],
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=WAIT_S,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result

    def create_key(self, user: str, tier: str = "enterprise", role: str = "user") -> str:
        """A new key for ``user``, written to the fleet's store (every member knows it)."""
        result = self.sincere("keys", "create", "--user", user, "--tier", tier, "--role", role)
        return result.stdout.strip().splitlines()[-1]

    def key_id(self, user: str) -> str:
        """The id of ``user``'s key, as ``sincere keys list`` shows it."""
        # Columns: id, prefix, user, ... (split on any blank: the console expands the tabs).
        rows = [line.split() for line in self.sincere("keys", "list").stdout.splitlines()]
        return next(row[0] for row in rows[1:] if row[2] == user)

    def revoke(self, user: str) -> None:
        self.sincere("keys", "revoke", self.key_id(user))
