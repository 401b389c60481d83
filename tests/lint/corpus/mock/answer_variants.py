# ruff: noqa
"""Answers built from literals on failure paths: dicts, OpenAI shapes, answer objects."""

from dataclasses import dataclass


@dataclass
class ChatResponse:
    content: str
    model: str


class AIMessage:
    def __init__(self, content):
        self.content = content


def answer_dict(client, question):
    try:
        return {"answer": client.ask(question), "source": "model"}
    except Exception:
        return {
            "answer": "Our best guess is that it depends on your setup.",  # expect: SIN002
            "source": "cache",
        }


def openai_shaped(client, request):
    try:
        return client.chat(request)
    except Exception:
        return {
            "id": "chatcmpl-fallback",
            "object": "chat.completion",
            "choices": [  # expect: SIN002
                {"index": 0, "message": {"role": "assistant", "content": "Hello! How can I help?"}}
            ],
        }


def success_status_does_not_excuse(client, request):
    try:
        return client.chat(request)
    except Exception:
        return {
            "status": "success",
            "result": "Your document was summarised as: all good.",  # expect: SIN002
        }


def none_in_the_failure_key_does_not_excuse(client, request):
    try:
        return client.chat(request)
    except Exception:
        return {
            "error": None,
            "content": "Everything is operating normally right now.",  # expect: SIN002
        }


def literal_data(db, query):
    try:
        return {"data": db.fetch(query)}
    except Exception:
        return {
            "data": [{"region": "EMEA", "revenue": "1.2M"}],  # expect: SIN002
            "source": "warehouse",
        }


def answer_object(client, prompt):
    try:
        return client.chat(prompt)
    except Exception:
        return ChatResponse(
            content="I'm not able to help with that right now.",  # expect: SIN002
            model="gpt-4",
        )


def positional_answer_object(client, prompt):
    try:
        return client.chat(prompt)
    except Exception:
        return AIMessage(
            "Let me think about that and get back to you shortly."  # expect: SIN002
        )


def nested_answer(client, prompt):
    try:
        return client.chat(prompt)
    except Exception:
        return {
            "payload": {
                "message": {"text": "Your ticket has been resolved, thank you."}  # expect: SIN002
            }
        }


def answer_built_in_handler_returned_after(client, prompt):
    try:
        result = client.chat(prompt)
    except Exception:
        result = {"response": "Generated offline: the weather will be sunny."}
    return result  # expect: SIN002


async def stream_fake_chunks(client, prompt):
    try:
        async for chunk in client.stream(prompt):
            yield chunk
    except Exception:
        yield {
            "choices": [{"delta": {"content": "…and that concludes the answer."}}]  # expect: SIN002
        }


def field_from_local_text(client, prompt):
    try:
        return client.chat(prompt)
    except Exception:
        text = "Sorry, I had trouble understanding the question you asked."
        return {"reply_to": prompt, "message": text}  # expect: SIN002


def field_assigned_in_handler_returned_after(client, prompt):
    try:
        reply = client.chat(prompt)
    except Exception:
        reply = "We are experiencing high demand; a summary will follow."
    return {"reply": reply, "prompt": prompt}  # expect: SIN002


def agent_output(agent, task):
    try:
        return agent.run(task)
    except Exception:
        return AgentResult(
            output="Task completed: all steps finished successfully.",  # expect: SIN002
            steps=[],
        )
