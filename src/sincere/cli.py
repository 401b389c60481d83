"""The ``sincere`` command line. It translates; the domain decides."""

from __future__ import annotations

import asyncio
import getpass
import json
import sys
from contextlib import suppress
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.status import Status

from sincere import __version__
from sincere.answer import Answer
from sincere.config import Settings, load_settings
from sincere.context import ContextFactory, RequestContext, Tier
from sincere.errors import ConfigError, ServiceError
from sincere.events import EventType, InProcessEventBus
from sincere.llm.cascade import ModelCascade
from sincere.llm.provider import Delta
from sincere.llm.request import ChatRequest, Message

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
    bus = InProcessEventBus()
    ctx = ContextFactory(bus, settings.defaults.timeout_s).create(getpass.getuser(), Tier.STANDARD)
    cascade = ModelCascade.from_settings(settings)
    progress = asyncio.create_task(_show_progress(bus, ctx))
    printed = False
    await asyncio.sleep(0)  # let the progress task subscribe before the first event
    try:
        if as_json:
            answer = await cascade.complete(ctx, request)
            out.print_json(data={"request_id": ctx.request_id, **answer.to_dict()})
        else:
            async for item in cascade.stream(ctx, request):
                if isinstance(item, Delta):
                    printed = True
                    out.out(item.text, end="")
                else:
                    out.out("")
                    _print_provenance(item)
        return 0
    except ServiceError as exc:
        if printed:
            out.out("")
            err.print("[bold red]the answer above is incomplete: its stream broke[/]")
        _print_error(exc, as_json)
        return EXIT_RETRYABLE if exc.should_retry else EXIT_FAILED
    finally:
        progress.cancel()
        with suppress(asyncio.CancelledError):
            await progress
        await cascade.aclose()


async def _show_progress(bus: InProcessEventBus, ctx: RequestContext) -> None:
    """Service events of this request on stderr, with a spinner while a service initializes."""
    status: Status | None = None
    try:
        async for event in bus.subscribe(ctx.user_id):
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
