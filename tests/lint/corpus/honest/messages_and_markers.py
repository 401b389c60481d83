# ruff: noqa
"""Text that reports a failure, marks what is missing, or is what the function is for."""

import logging

logger = logging.getLogger(__name__)


class Record:
    def __repr__(self):
        try:
            return f"Record({self.fields!r})"
        except Exception:
            return "<Record: fields could not be shown>"


def safe_str(obj):
    try:
        return str(obj)
    except Exception:
        return "<exception str() failed>"


def describe_failure(exc):
    try:
        return exc.render()
    except Exception:
        return "The service failed in a way that could not be described."


def validate_config(config) -> str | None:
    try:
        config.check()
    except ValueError:
        return "The configuration is invalid: see the documentation."
    return None


def scan(client, target) -> "Report | str":
    try:
        return client.scan(target)
    except ConnectionError:
        return "The scanner was unreachable, so no report was produced."


def tool_result(sandbox, code):
    """Tool results go back to the model, which must see the real error."""
    try:
        return sandbox.run(code)
    except Exception as exc:
        return f"Code execution failed: {exc}"


def graph_message(body):
    if not body:
        return "The Graph request failed with an empty body."
    try:
        return body["error"]["message"]
    except (KeyError, TypeError):
        return "The Graph request failed with an empty body."


def body_preview(response):
    try:
        return response.text[:200]
    except UnicodeDecodeError:
        return "[binary body of unknown encoding omitted]"


def log_and_continue(items, handle):
    for item in items:
        try:
            handle(item)
        except Exception:
            logger.exception("could not handle %s, moving on to the next one", item)


def shared_helper_is_not_a_failure_path(client, prompt):
    try:
        return client.complete(prompt)
    except Exception:
        return _greeting(prompt)


def _greeting(prompt):
    return f"Welcome back! You asked about {prompt} earlier today."


def greet(prompt):
    return _greeting(prompt)


def error_page(render, request):
    try:
        return render(request)
    except Exception:
        return HTMLResponse("<h1>Internal Server Error</h1><p>Please retry.</p>", status_code=500)


def codemod(func, oldcode, fname):
    try:
        return func(oldcode)
    except Exception as err:
        msg = str(err).strip()
        return f"skipping {fname!r} due to {msg}"


def watch(scheduler):
    try:
        scheduler.run_forever()
    except KeyboardInterrupt:
        scheduler.stop()
        return "Stopped the scheduled commits at your request."
