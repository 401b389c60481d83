# ruff: noqa
"""Hard-coded estimates attached to errors and answers."""


def raise_outside_a_handler(breaker):
    if breaker.is_open:
        raise ServiceUnavailable("model down", estimated_recovery_time_seconds=45)  # expect: SIN005


def eta_text(queue):
    if queue.full():
        raise QueueFull("queue is full", recovery_eta="about 30 seconds")  # expect: SIN005


def failure_response(error):
    return EnterpriseFailureResponse(
        message="Service temporarily unavailable - Enterprise support notified",
        estimated_recovery_time=120,  # expect: SIN005
    )


def answer_with_score(text, model):
    return Answer(text=text, model=model, confidence_score=0.92)  # expect: SIN005


def dict_in_handler(client, prompt):
    try:
        return client.ask(prompt)
    except Exception:
        return {"error": "timeout", "reliability_score": 0.99}  # expect: SIN005


def built_then_raised(context):
    error = UnifiedServiceException(  # the call is checked where it is built
        message="Data services temporarily unavailable",
        estimated_recovery_time_seconds=90,  # expect: SIN005
    )
    raise error
