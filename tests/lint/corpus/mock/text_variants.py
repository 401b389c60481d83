# ruff: noqa
"""Canned text on failure paths, in the shapes it takes in real code."""

import logging

logger = logging.getLogger(__name__)

FALLBACK_REPLY = "I'm sorry, I can't answer that right now. Please try again."


def answer_sync(client, prompt):
    try:
        return client.complete(prompt)
    except Exception:
        logger.exception("completion failed")
        return "Sorry, something went wrong while generating your answer."  # expect: SIN001


async def answer_async(client, prompt):
    try:
        return await client.complete(prompt)
    except TimeoutError:
        return "The assistant is thinking hard, here is a short answer: yes."  # expect: SIN001


def answer_from_constant(client, prompt):
    try:
        return client.complete(prompt)
    except ConnectionError:
        return FALLBACK_REPLY  # expect: SIN001


class Assistant:
    DEFAULT_ANSWER = "I could not find anything about that topic."

    def ask(self, prompt):
        try:
            return self.client.complete(prompt)
        except Exception:
            return self.DEFAULT_ANSWER  # expect: SIN001


def answer_formatted(client, prompt):
    try:
        return client.complete(prompt)
    except Exception:
        return "Here is what I know about {}: nothing yet.".format(prompt)  # expect: SIN001


def answer_percent(client, prompt):
    try:
        return client.complete(prompt)
    except Exception:
        return "Your request about %s was processed successfully." % prompt  # expect: SIN001


def answer_concatenated(client, prompt):
    try:
        return client.complete(prompt)
    except Exception:
        return "We received your question " + prompt + " and will answer soon."  # expect: SIN001


def answer_conditional(client, prompt, verbose):
    try:
        return client.complete(prompt)
    except Exception:
        return "A detailed answer is not available now." if verbose else ""  # expect: SIN001


def answer_or_default(client, prompt):
    reply = None
    try:
        reply = client.complete(prompt)
    except Exception:
        return reply or "No answer could be generated for this question."  # expect: SIN001
    return reply


def answer_assigned_then_returned(client, prompt):
    try:
        reply = client.complete(prompt)
    except Exception as exc:
        logger.warning("falling back: %s", exc)
        reply = "The model is busy; here is a generic answer instead."
    return reply  # expect: SIN001


def answer_assigned_in_handler(client, prompt):
    try:
        return client.complete(prompt)
    except Exception:
        message = f"Thanks for asking about {prompt}! We'll get back to you."
        logger.info("sending canned reply")
        return message  # expect: SIN001


def answer_after_swallowed_failure(client, prompt):
    try:
        return client.complete(prompt)
    except Exception:
        logger.exception("completion failed")
    return "Unable to reach the model right now, showing a cached reply."  # expect: SIN001


def answer_after_retries(clients, prompt):
    for client in clients:
        try:
            return client.complete(prompt)
        except Exception:
            continue
    return "All our assistants are busy. Please hold on for a moment."  # expect: SIN001


def stream_answer(client, prompt):
    try:
        yield from client.stream(prompt)
    except Exception:
        yield "Sorry, the answer stream was interrupted before it finished."  # expect: SIN001


async def stream_answer_async(client, prompt):
    try:
        async for chunk in client.stream(prompt):
            yield chunk
    except Exception:
        yield f"data: The rest of the answer about {prompt} is unavailable.\n\n"  # expect: SIN001


def answer_with_offline_reply(client, prompt):
    try:
        return client.complete(prompt)
    except Exception:
        return _offline_reply(prompt)


def _offline_reply(prompt):
    # Only ever returned from the handler above: a failure path of its own.
    return f"Offline mode: we think the answer to {prompt} is probably yes."  # expect: SIN001


def answer_through_two_helpers(client, prompt):
    try:
        return client.complete(prompt)
    except Exception:
        return _degraded(prompt)


def _degraded(prompt):
    return _degraded_text(prompt)


def _degraded_text(prompt):
    return "Our answer engine is warming up, please enjoy this tip instead."  # expect: SIN001


def answer_in_group(client, prompt):
    try:
        return client.complete(prompt)
    except* ValueError:
        pass
    return "Everything went fine, no further details are available."  # expect: SIN001


def apology_with_the_error(client, prompt):
    try:
        return client.complete(prompt)
    except Exception as exc:
        # Quoting the error does not make an apology an answer.
        return (
            f"Sorry, I ran into a problem: {exc}. Here is my best guess instead."  # expect: SIN001
        )


class Bot:
    def __init__(self, client):
        self.client = client
        self.busy_message = "Our assistant is busy, but your question matters to us!"

    def reply(self, prompt):
        try:
            return self.client.complete(prompt)
        except Exception:
            return self.busy_message  # expect: SIN001
