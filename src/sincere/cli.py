"""The ``sincere`` command line. It translates; the domain decides."""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import sys
import time
from collections.abc import Sequence
from contextlib import suppress
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.status import Status
from rich.table import Table

from sincere import __version__
from sincere.agents.data import WINDOWS, window_of
from sincere.agents.usage import GroupBy, Usage
from sincere.answer import Answer
from sincere.auth import Authenticator
from sincere.backends.memory.events import InProcessEventBus
from sincere.config import Settings, load_settings
from sincere.context import ContextFactory, Tier, new_request_id
from sincere.errors import ConfigError, ServiceError
from sincere.events import EventType
from sincere.identity import KeyRole
from sincere.llm.provider import Delta
from sincere.llm.request import ChatRequest, Message
from sincere.ports import EscalationStore, FlagState, FlagStore, KeyStore, Subscription
from sincere.runtime import (
    build_runtime,
    open_data_agent,
    open_escalation_store,
    open_flag_store,
    open_key_store,
)
from sincere.tiers.flags import FLAG_DESCRIPTIONS, Flag
from sincere_lint.cli import lint

# Exit codes (sysexits.h): a retry may succeed / it will not / the configuration is wrong.
EXIT_FAILED = 1
EXIT_RETRYABLE = 75  # EX_TEMPFAIL
EXIT_CONFIG = 78  # EX_CONFIG

app = typer.Typer(
    help="sincere: an LLM gateway that never fakes an answer.",
    no_args_is_help=True,
    add_completion=False,
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        envvar="SINCERE_CONFIG",
        help="TOML configuration file. Without one: the embedded smollm2 model only.",
        dir_okay=False,
    ),
]


def _version(value: bool) -> None:
    if value:
        out.print(f"sincere {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """sincere: an LLM gateway that never fakes an answer."""


@app.command()
def chat(
    question: Annotated[str, typer.Argument(help="What to ask the model.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Model name to ask.")] = "smollm2",
    system: Annotated[
        str | None, typer.Option("--system", "-s", help="A system message to send first.")
    ] = None,
    max_tokens: Annotated[
        int | None, typer.Option("--max-tokens", min=1, help="Stop after this many tokens.")
    ] = None,
    temperature: Annotated[
        float | None, typer.Option("--temperature", min=0.0, max=2.0, help="Sampling temperature.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object: the answer and its provenance.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Ask a model one question: the answer streams, then where it came from.

    On failure the structured error is printed and the exit code says whether a retry can
    help: 75 (temporary: retry later), 1 (the request must change), 78 (bad configuration).
    """
    settings = _settings(config)
    messages = [Message("system", system)] if system else []
    messages.append(Message("user", question))
    request = ChatRequest(
        model=model, messages=tuple(messages), max_tokens=max_tokens, temperature=temperature
    )
    code = asyncio.run(_chat(settings, request, as_json))
    raise typer.Exit(code)


def _settings(path: Path | None) -> Settings:
    try:
        return load_settings(path)
    except ConfigError as exc:
        err.print(f"[bold red]configuration error[/]\n{escape(str(exc))}")
        raise typer.Exit(EXIT_CONFIG) from None


async def _chat(settings: Settings, request: ChatRequest, as_json: bool) -> int:
    try:
        rt = build_runtime(settings)
    except ConfigError as exc:
        err.print(f"[bold red]configuration error[/]\n{escape(str(exc))}")
        return EXIT_CONFIG
    # The operator at the console: the same pipeline as an HTTP client (limits, guard,
    # metrics, events), as the person who holds the configuration.
    caller = Authenticator.operator(getpass.getuser())
    request_id = new_request_id()
    events = await rt.bus.subscribe(caller.user_id)
    progress = asyncio.create_task(_show_progress(events))
    printed = False
    try:
        if as_json:
            answer = await rt.pipeline.complete(
                caller, request, request_id=request_id, surface="cli"
            )
            out.print_json(data={"request_id": request_id, **answer.to_dict()})
        else:
            stream = rt.pipeline.stream(caller, request, request_id=request_id, surface="cli")
            async for item in stream:
                if isinstance(item, Delta):
                    printed = True
                    out.out(item.text, end="")
                elif isinstance(item, Answer):
                    out.out("")
                    _print_provenance(item)
                else:  # a place in a deployment's queue
                    line = item.comment().decode().removeprefix(": ").strip()
                    err.print(f"[dim]{escape(line)}[/]")
        return 0
    except ServiceError as exc:
        if printed:
            out.out("")
            err.print("[bold red]the answer above is incomplete: its stream broke[/]")
        _print_error(exc, as_json)
        return EXIT_RETRYABLE if exc.should_retry else EXIT_FAILED
    finally:
        events.close()
        progress.cancel()
        with suppress(asyncio.CancelledError):
            await progress
        await rt.aclose()


async def _show_progress(events: Subscription) -> None:
    """Service events of this request on stderr, with a spinner while a service initializes."""
    status: Status | None = None
    try:
        async for event in events:
            if event.type is EventType.SERVICE_INITIALIZING:
                status = err.status(f"initializing {event.service}…")
                status.start()
                continue
            if status is not None:
                status.stop()
                status = None
            if event.type in (EventType.SERVICE_READY, EventType.SERVICE_UNAVAILABLE):
                err.print(f"[dim]{event.type}: {escape(event.message)}[/]")
    finally:
        if status is not None:
            status.stop()


def _print_provenance(answer: Answer) -> None:
    p = answer.provenance
    lines = [
        f"model {p.model} on {p.deployment} ({p.provider}, {p.upstream_model})",
        f"latency {p.latency_s:.2f} s"
        + (f", first token {p.time_to_first_token_s:.2f} s" if p.time_to_first_token_s else ""),
    ]
    if p.usage is not None:
        lines.append(f"tokens {p.usage.prompt_tokens} in, {p.usage.completion_tokens} out")
    if p.cost_usd is not None:
        lines.append(f"cost ${p.cost_usd:.6f}")
    if p.truncated:
        lines.append("cut at the requested token limit (finish_reason: length)")
    lines.append(p.selection_reasoning)
    out.print("\n".join(f"[dim]── {escape(line)}[/]" for line in lines))


def _print_error(exc: ServiceError, as_json: bool) -> None:
    problem: dict[str, Any] = exc.to_problem()
    if as_json:
        out.out(json.dumps({"error": problem}, indent=2))
        return
    err.print(f"[bold red]{problem['title']}[/] ({problem['status']}): {escape(problem['detail'])}")
    for attempt in exc.attempts:
        err.print(f"  tried {attempt.summary()}", markup=False)
    if exc.retry_after is not None:
        err.print(f"  retry after {exc.retry_after_header()} s")
    for suggestion in exc.suggestions:
        err.print(f"  → {suggestion}", markup=False)
    if exc.context.request_id:
        err.print(f"  request id {exc.context.request_id}")


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    access_log: Annotated[
        bool, typer.Option(help="Log every request (x-request-id and /metrics cover most needs).")
    ] = False,
    shutdown_grace: Annotated[
        float | None,
        typer.Option(
            min=0.001,
            help="Seconds requests in flight get to finish on SIGTERM "
            "(default: [server] shutdown_grace_s, 8).",
        ),
    ] = None,
) -> None:
    """Run the OpenAI-compatible gateway (HTTP, SSE and the /v1/events WebSocket).

    On a fresh data directory it creates the first admin key and prints it once. On
    SIGTERM it stops taking requests, lets those in flight finish within the grace period,
    ends the rest as failed (a stream with its in-band error) and exits.
    """
    import uvicorn

    from sincere.server.app import GRACE_ENV, create_app, freeze_startup_heap
    from sincere.server.serving import uvicorn_options

    settings = _settings(config)
    if workers > 1 and settings.cluster.redis_url is None:
        err.print(f"[bold red]configuration error[/]\n{escape(_unshared_workers(workers))}")
        raise typer.Exit(EXIT_CONFIG)
    if shutdown_grace is not None:
        settings = settings.with_server(shutdown_grace_s=shutdown_grace)
    host = host or settings.server.host
    port = settings.server.port if port is None else port
    try:
        rt = build_runtime(settings)
    except ConfigError as exc:
        err.print(f"[bold red]configuration error[/]\n{escape(str(exc))}")
        raise typer.Exit(EXIT_CONFIG) from None
    if (key := asyncio.run(_first_admin_key(rt.keys))) is not None:
        _print_first_key(key, host, port)
    # The protocols' deadlines, keep-alive and the shutdown grace, from [server].
    options = uvicorn_options(settings.server)
    if workers == 1:
        app = create_app(rt)
        freeze_startup_heap()
        uvicorn.run(app, host=host, port=port, log_level="info", access_log=access_log, **options)
        return
    asyncio.run(rt.aclose())
    if settings.source is not None:
        os.environ["SINCERE_CONFIG"] = str(settings.source)
    os.environ["SINCERE_DATA_DIR"] = str(settings.data_dir)
    os.environ[GRACE_ENV] = str(settings.server.shutdown_grace_s)
    uvicorn.run(
        "sincere.server.app:create_app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        access_log=access_log,
        **options,
    )


def _unshared_workers(workers: int) -> str:
    """Why ``--workers N`` without Redis is refused, and what to set instead."""
    return (
        f"--workers {workers} needs [cluster] redis_url: without it each worker keeps its own "
        "events, limits and breakers, so a user's event socket sees only one worker's "
        f"requests, a 20-per-minute tier lets {20 * workers} through, and every worker "
        "relearns an outage with its users' requests.\n"
        "Set [cluster] redis_url in the configuration file, or SINCERE_REDIS_URL, e.g. "
        "redis://127.0.0.1:6379/0. Processes on several hosts also need a shared [store] url "
        "(or SINCERE_DATABASE_URL), e.g. postgresql+psycopg://postgres@127.0.0.1:5432/sincere; "
        "workers on one host may share the default SQLite file. Or run one worker."
    )


async def _first_admin_key(keys: KeyStore) -> str | None:
    """On a store without keys, the first admin key (its plaintext, shown once)."""
    if await keys.list():
        return None
    key, _ = await keys.create("admin", Tier.ENTERPRISE, KeyRole.ADMIN)
    return key


def _print_first_key(key: str, host: str, port: int) -> None:
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/v1"
    out.print(f"[bold]First admin key (shown once, store it now):[/]\n{key}\n")
    out.print(f"Gateway: {url}\n")
    out.print(
        "from openai import OpenAI\n"
        f'client = OpenAI(base_url="{url}", api_key="{key}")\n'
        'reply = client.chat.completions.create(model="smollm2", '
        'messages=[{"role": "user", "content": "Hello!"}])\n'
        "print(reply.choices[0].message.content)\n",
        markup=False,
    )


app.command(help="Find mock-response patterns in Python code (see --explain CODE).")(lint)

keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


def _key_store(config: Path | None) -> KeyStore:
    return open_key_store(_settings(config))


@keys_app.command("create")
def keys_create(
    user: Annotated[str, typer.Option("--user", help="The user id the key acts for.")],
    tier: Annotated[Tier, typer.Option("--tier", help="free, standard or enterprise.")],
    role: Annotated[KeyRole, typer.Option("--role", help="user or admin.")] = KeyRole.USER,
    contact: Annotated[
        str | None,
        typer.Option(
            "--contact",
            help="Whom to reach about this key's failed requests (an email address); "
            "enterprise error bodies show it.",
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Create a key. It is printed once, on the last line; only its hash is stored."""
    if contact is not None and not _looks_like_email(contact):
        err.print(f"--contact: {escape(contact)!r} is not an email address")
        raise typer.Exit(EXIT_FAILED)
    key, record = asyncio.run(_key_store(config).create(user, tier, role, contact))
    err.print(f"created {record.id} for {record.user_id} ({record.tier}, {record.role})")
    out.out(key)


@keys_app.command("list")
def keys_list(config: ConfigOption = None) -> None:
    """List keys (never their secret), with their state; tab-separated when piped."""
    columns = ("id", "prefix", "user", "tier", "role", "created", "state")
    rows = [
        (
            r.id,
            r.prefix + "…",
            r.user_id,
            str(r.tier),
            str(r.role),
            datetime.fromtimestamp(r.created_at, UTC).strftime("%Y-%m-%d %H:%M"),
            "active" if r.active else "revoked",
        )
        for r in asyncio.run(_key_store(config).list())
    ]
    _rows(columns, rows)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id, as `keys list` shows it.")],
    config: ConfigOption = None,
) -> None:
    """Revoke a key: requests with it get 401 from now on."""
    if not asyncio.run(_key_store(config).revoke(key_id)):
        err.print(f"no active key with id {key_id}")
        raise typer.Exit(EXIT_FAILED)
    err.print(f"revoked {key_id}")


def _looks_like_email(text: str) -> bool:
    name, at, domain = text.partition("@")
    return bool(name and at and "." in domain and not any(c.isspace() for c in text))


# ─── escalation: what operators read and do ──────────────────────────────────────────

tickets_app = typer.Typer(help="The tickets of failed enterprise requests.", no_args_is_help=True)
incidents_app = typer.Typer(
    help="Incidents (one per deployment outage) and their notifications.", no_args_is_help=True
)
deliveries_app = typer.Typer(help="Notifications of incidents.", no_args_is_help=True)
app.add_typer(tickets_app, name="tickets")
app.add_typer(incidents_app, name="incidents")
app.add_typer(deliveries_app, name="deliveries")

LimitOption = Annotated[int, typer.Option("--limit", min=1, help="Show at most this many.")]


def _escalations(config: Path | None) -> EscalationStore:
    return open_escalation_store(_settings(config))


def _when(at: float | None) -> str:
    return "" if at is None else datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _rows(columns: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    """A table on a terminal; tab-separated lines for scripts (rich would expand tabs)."""
    if not out.is_terminal:
        sys.stdout.write("".join("\t".join(row) + "\n" for row in (columns, *rows)))
        return
    table = Table(*columns)
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    out.print(table)


@tickets_app.command("list")
def tickets_list(limit: LimitOption = 50, config: ConfigOption = None) -> None:
    """The newest tickets first."""
    found = asyncio.run(_escalations(config).tickets(limit))
    columns = ("id", "incident", "request", "user", "tier", "error", "created")
    _rows(
        columns,
        [
            (
                t.id,
                t.incident_id,
                t.request_id,
                t.user_id,
                t.tier,
                t.error_type,
                _when(t.created_at),
            )
            for t in found
        ],
    )


@tickets_app.command("show")
def tickets_show(
    ticket_id: Annotated[str, typer.Argument(help="The ticket's id (tkt_…).")],
    config: ConfigOption = None,
) -> None:
    """One ticket, as JSON."""
    ticket = asyncio.run(_escalations(config).ticket(ticket_id))
    if ticket is None:
        err.print(f"no ticket with id {escape(ticket_id)}")
        raise typer.Exit(EXIT_FAILED)
    out.print_json(data=ticket.to_dict())


@incidents_app.command("list")
def incidents_list(limit: LimitOption = 50, config: ConfigOption = None) -> None:
    """The newest incidents first."""
    found = asyncio.run(_escalations(config).incidents(limit))
    columns = ("id", "deployment", "failure", "state", "tickets", "opened", "resolved")
    _rows(
        columns,
        [
            (
                i.id,
                i.deployment,
                i.failure_class,
                str(i.state),
                str(i.ticket_count),
                _when(i.opened_at),
                _when(i.resolved_at),
            )
            for i in found
        ],
    )


@incidents_app.command("show")
def incidents_show(
    incident_id: Annotated[str, typer.Argument(help="The incident's id (inc_…).")],
    config: ConfigOption = None,
) -> None:
    """One incident as JSON: its tickets, its deliveries and every delivery attempt."""
    detail = asyncio.run(_escalations(config).incident(incident_id))
    if detail is None:
        err.print(f"no incident with id {escape(incident_id)}")
        raise typer.Exit(EXIT_FAILED)
    out.print_json(data=detail.to_dict())


@deliveries_app.command("replay")
def deliveries_replay(
    delivery_id: Annotated[str, typer.Argument(help="The delivery's id (msg_…).")],
    config: ConfigOption = None,
) -> None:
    """Send a delivery again (a dead one, say) from the start of the retry schedule, with
    the same webhook-id: a running gateway's relay sends it."""
    if not asyncio.run(_escalations(config).replay(delivery_id, time.time())):
        err.print(f"no delivery with id {escape(delivery_id)}")
        raise typer.Exit(EXIT_FAILED)
    err.print(f"{delivery_id} will be sent again")


flags_app = typer.Typer(
    help="Read and switch the runtime flags: features an operator can turn off at once, in "
    "every gateway process (within 5 s), to roll back. Every change is recorded with who "
    "made it and when. No flag can make sincere answer with text no model produced.",
    no_args_is_help=True,
)
app.add_typer(flags_app, name="flags")


class Switch(StrEnum):
    ON = "on"
    OFF = "off"


def _flag_store(config: Path | None) -> FlagStore:
    return open_flag_store(_settings(config))


def _operator() -> str:
    """Who changes a flag from the console: ``cli:<os user>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no name for this uid (a bare container)
        return f"cli:uid {os.getuid()}"


def _flags_or_exit(store: FlagStore, change: tuple[Flag, bool] | None = None) -> list[FlagState]:
    """The flags after ``change`` (if any), or exit 75 when the store cannot be reached."""

    async def go() -> list[FlagState]:
        if change is not None:
            await store.set(*change, _operator())
        return await store.states()

    try:
        return asyncio.run(go())
    except ServiceError as exc:
        _print_error(exc, as_json=False)
        raise typer.Exit(EXIT_RETRYABLE) from None


@flags_app.command("list")
def flags_list(config: ConfigOption = None) -> None:
    """List every flag: on or off, what it switches, who changed it last and when.

    Tab-separated when piped.
    """
    columns = ("name", "state", "description", "changed by", "changed at")
    rows = [
        (
            str(s.flag),
            "on" if s.enabled else "off",
            FLAG_DESCRIPTIONS[s.flag],
            s.changed_by or "-",
            "-"
            if s.changed_at is None
            else datetime.fromtimestamp(s.changed_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        )
        for s in _flags_or_exit(_flag_store(config))
    ]
    _rows(columns, rows)


@flags_app.command("set")
def flags_set(
    name: Annotated[
        Flag, typer.Argument(help="The flag (see `sincere flags list`).", case_sensitive=False)
    ],
    state: Annotated[Switch, typer.Argument(help="on or off.", case_sensitive=False)],
    config: ConfigOption = None,
) -> None:
    """Turn a flag on or off; running gateways apply it within 5 s.

    The change is recorded as made by cli:<your OS user>, with the time.
    """
    _flags_or_exit(_flag_store(config), (name, state is Switch.ON))
    err.print(f"{name} is {state} (set by {_operator()}); gateways apply it within 5 s")


# ─── usage: the data agent's figures ─────────────────────────────────────────────────


@app.command()
def usage(
    window: Annotated[
        str | None,
        typer.Option("--window", "-w", help=f"One of {', '.join(WINDOWS)} (default 24h)."),
    ] = None,
    by: Annotated[
        GroupBy,
        typer.Option(
            "--by",
            "-b",
            help="Group by model, deployment, user, outcome, day or hour.",
            case_sensitive=False,
        ),
    ] = GroupBy.MODEL,
    user: Annotated[
        str | None, typer.Option("--user", "-u", help="One user's traffic (default: all).")
    ] = None,
    start: Annotated[
        str | None, typer.Option("--from", help="Start instead of --window: ISO 8601 or unix s.")
    ] = None,
    end: Annotated[str | None, typer.Option("--to", help="End with --from (default now).")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the JSON object GET /v1/usage returns.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Requests, outcomes, latency, tokens and cost per group, read from the store, with
    the freshness of the data and the reliability of each figure.

    A figure resting on fewer requests than [usage] min_samples is marked with *.
    Exit 75 when the store cannot be read (nothing is shown instead).
    """
    settings = _settings(config)
    agent = open_data_agent(settings)
    operator = Authenticator.operator(_operator())
    ctx = ContextFactory(InProcessEventBus(), settings.defaults.timeout_s).create(
        operator.user_id, operator.tier
    )

    async def ask() -> Usage:
        asked = window_of(window, start, end, agent.now())
        return await agent.usage(ctx, asked, by, user)

    try:
        figures = asyncio.run(ask())
    except ServiceError as exc:
        _print_error(exc, as_json)
        raise typer.Exit(EXIT_RETRYABLE if exc.should_retry else EXIT_FAILED) from None
    if as_json:
        out.out(json.dumps(figures.to_dict(), indent=2))
        return
    _print_usage(figures)


def _print_usage(u: Usage) -> None:
    f = u.freshness
    age = "nothing recorded" if f.age_s is None else f"newest record {f.age_s:.0f} s old"
    err.print(
        f"{u.window.label} ({_when(u.window.start)} to {_when(u.window.end)} UTC), "
        f"{'all users' if u.user_id is None else 'user ' + escape(u.user_id)}, "
        f"from {u.source} ({escape(u.scope)})" + (" [bold yellow]degraded[/]" if u.degraded else "")
    )
    err.print(
        f"freshness {f.verdict}: {age} (warn after {f.warn_after_s:g} s, "
        f"error after {f.error_after_s:g} s)"
    )
    columns = (
        str(u.group_by),
        "requests",
        "answered",
        "failed",
        "success",
        "latency p50/p95 s",
        "ttft p50/p95 s",
        "tokens in/out",
        "cost usd",
        "coverage tokens/cost",
    )
    rows = [
        (
            g.key,
            str(g.requests) + ("*" if g.below_min_samples else ""),
            str(g.answered),
            ", ".join(f"{k} {v}" for k, v in sorted(g.failed.items())) or "0",
            _num(g.success_rate, "{:.1%}"),
            _pair(g.latency_p50_s, g.latency_p95_s, g.latency_samples < u.min_samples),
            _pair(g.ttft_p50_s, g.ttft_p95_s, g.ttft_samples < u.min_samples),
            f"{_num(g.tokens_in, '{}')}/{_num(g.tokens_out, '{}')}",
            _num(g.cost_usd, "{:.6f}"),
            f"{_num(g.token_coverage, '{:.0%}')}/{_num(g.cost_coverage, '{:.0%}')}",
        )
        for g in u.groups
    ]
    _rows(columns, rows)
    if any(g.below_min_samples for g in u.groups):
        few = f"* fewer than {u.min_samples} requests ([usage] min_samples): not reliable"
        err.print(few, markup=False)
    for note in u.notes:
        err.print(f"[bold yellow]note[/]: {escape(note)}")


def _num(value: float | None, spec: str) -> str:
    """A figure, or "unknown" (never 0 for what is not known)."""
    return "unknown" if value is None else spec.format(value)


def _pair(p50: float | None, p95: float | None, few: bool) -> str:
    return f"{_num(p50, '{:.3f}')}/{_num(p95, '{:.3f}')}" + ("*" if few else "")


@app.command()
def analyze(
    question: Annotated[str, typer.Argument(help="A question about your own traffic.")],
    window: Annotated[
        str, typer.Option("--window", "-w", help="1h, 24h, 7d or 30d, up to now.")
    ] = "7d",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the run as one JSON object.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Ask the analyst about your recorded usage: findings computed from the data, then a
    narrative a model wrote from them that states only their numbers (or none, and why).

    Exit codes as for chat: 75 when the data cannot be read now, 1, 78.
    """
    settings = _settings(config)
    raise typer.Exit(asyncio.run(_analyze(settings, question, window, as_json)))


async def _analyze(settings: Settings, question: str, window: str, as_json: bool) -> int:
    from sincere.agents.data import window_of

    try:
        rt = build_runtime(settings)
    except ConfigError as exc:
        err.print(f"[bold red]configuration error[/]\n{escape(str(exc))}")
        return EXIT_CONFIG
    caller = Authenticator.operator(getpass.getuser())
    events = await rt.bus.subscribe(caller.user_id)
    progress = asyncio.create_task(_show_progress(events))
    try:
        run = await rt.analyst.run(caller, question, window_of(window, None, None, time.time()))
    except ServiceError as exc:
        _print_error(exc, as_json)
        return EXIT_RETRYABLE if exc.should_retry else EXIT_FAILED
    finally:
        events.close()
        progress.cancel()
        with suppress(asyncio.CancelledError):
            await progress
        await rt.aclose()
    if as_json:
        out.out(json.dumps(run.to_dict(), indent=2))
        return 0
    out.print(f"[bold]Findings[/] (your traffic, {escape(run.window.label)})")
    for finding in run.findings:
        out.print(f"  • {finding.title}", markup=False)
    if run.narrative is not None:
        out.print("[bold]Narrative[/]")
        out.print(run.narrative, markup=False)
    else:
        out.print("[bold]No narrative[/] (the findings above are the answer)")
        out.print(f"  {run.narrative_reason}", markup=False)
    lines = [
        f"{q.tool}: {q.rows_read} rows from {q.source}"
        + (" (degraded: " + q.scope + ")" if q.degraded else "")
        + f" in {q.duration_s:.3f} s"
        for q in run.queries
    ]
    lines += [f"narrator tried {a.summary()}" for a in run.attempts()]
    cost = run.cost_usd()
    if cost is not None:
        lines.append(f"narrative cost ${cost:.6f}")
    lines.append(f"run {run.id} in {run.duration_s:.2f} s")
    out.print("\n".join(f"[dim]── {escape(line)}[/]" for line in lines))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
