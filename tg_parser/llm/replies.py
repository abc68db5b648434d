"""Reading a 2xx body of the Responses or Chat Completions API: classified, never guessed.

complete → a `ProviderReply`; cut short → `LLMIncomplete` (with the partial text); declined →
`LLMRefused` (with the refusal); anything we cannot read → `LLMMalformedReply`. An unexpected
shape is an error we name, never a `TypeError` escaping from deep inside.
"""

from __future__ import annotations

import re

from tg_parser.llm.base_client import ProviderReply
from tg_parser.llm.errors import LLMIncomplete, LLMMalformedReply, LLMRefused
from tg_parser.llm.records import Usage


def read_responses(data: object, status: int, asked_model: str) -> ProviderReply:
    """A Responses API body: `status`, `incomplete_details`, and the `output_text`/`refusal` parts of `output`."""
    body = body_object(data, status)
    usage = _usage(body.get("usage"), "input_tokens", "output_tokens")
    output = body.get("output")
    if not isinstance(output, list) or not all(isinstance(item, dict) for item in output):
        raise LLMMalformedReply("`output` is not a list of items", status=status, usage=usage)
    texts, refusals = [], []
    for item in output:
        if item.get("type") != "message":
            continue  # reasoning, tool calls
        content = item.get("content")
        if not isinstance(content, list) or not all(isinstance(part, dict) for part in content):
            raise LLMMalformedReply("a message's `content` is not a list of parts", status=status, usage=usage)
        for part in content:
            if part.get("type") == "output_text":
                texts.append(part.get("text"))
            elif part.get("type") == "refusal":
                refusals.append(str(part.get("refusal") or ""))
    if not all(isinstance(text, str) for text in texts):
        raise LLMMalformedReply("an `output_text` part has no text", status=status, usage=usage)
    if refusals:
        raise LLMRefused("".join(refusals), usage=usage, status=status)
    state = body.get("status") or "completed"  # some compatible servers leave it out
    if state == "incomplete":
        details = body.get("incomplete_details")
        reason = details.get("reason") if isinstance(details, dict) else None
        shown = reason if isinstance(reason, str) and _NAME.fullmatch(reason) else "unknown"
        raise LLMIncomplete(shown, "".join(texts), usage=usage, status=status)
    if state != "completed":
        raise LLMMalformedReply(f"`status` is {named(state)}", status=status, usage=usage)
    if not texts:
        raise LLMMalformedReply("no `output_text` in `output`", status=status, usage=usage)
    return ProviderReply("".join(texts), reported_model(body, asked_model), usage, status)


def read_chat(data: object, status: int, asked_model: str) -> ProviderReply:
    """A Chat Completions body: the first choice's `finish_reason`, `message.content` and `message.refusal`."""
    body = body_object(data, status)
    usage = _usage(body.get("usage"), "prompt_tokens", "completion_tokens")
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise LLMMalformedReply("`choices` is not a non-empty list", status=status, usage=usage)
    message = choices[0].get("message")
    if not isinstance(message, dict):
        raise LLMMalformedReply("`choices[0].message` is not an object", status=status, usage=usage)
    content, refusal = message.get("content"), message.get("refusal")
    if isinstance(content, list):  # content parts, as some servers (and the SDK) allow
        content, refusal = _chat_parts(content, refusal, status, usage)
    if refusal:
        raise LLMRefused(str(refusal), usage=usage, status=status)
    if content is not None and not isinstance(content, str):
        raise LLMMalformedReply("`choices[0].message.content` is not a string or a list of parts", status=status,
                                usage=usage)
    finish = choices[0].get("finish_reason")
    if finish in ("length", "content_filter"):
        reason = "max_output_tokens" if finish == "length" else finish  # the Responses API's names
        raise LLMIncomplete(reason, content or "", usage=usage, status=status)
    if content is None:
        raise LLMMalformedReply("`choices[0].message.content` is null", status=status, usage=usage)
    return ProviderReply(content, reported_model(body, asked_model), usage, status)


def _chat_parts(parts: list, refusal: object, status: int, usage: Usage | None) -> tuple[str, object]:
    """The text of `text` parts, joined; a `refusal` part is the refusal."""
    if not all(isinstance(part, dict) for part in parts):
        raise LLMMalformedReply("`choices[0].message.content` has a part that is not an object", status=status,
                                usage=usage)
    texts = [part.get("text") for part in parts if part.get("type") in ("text", "output_text")]
    if not all(isinstance(text, str) for text in texts):
        raise LLMMalformedReply("a `text` part of `choices[0].message.content` has no text", status=status,
                                usage=usage)
    refusals = [str(part.get("refusal") or "") for part in parts if part.get("type") == "refusal"]
    if not texts and not refusals and not refusal:
        raise LLMMalformedReply("`choices[0].message.content` has no `text` part", status=status, usage=usage)
    return "".join(texts), refusal or "".join(refusals)


_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,39}")


def named(value: object) -> str:
    """A server's enum value (`status`, `stop_reason`, ...) as a message may show it: a short name
    quoted, anything else (which could echo a key or the prompt) not shown."""
    return repr(value) if isinstance(value, str) and _NAME.fullmatch(value) else "an unexpected value"


JSON_TYPES = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}


def body_object(data: object, status: int) -> dict:
    if not isinstance(data, dict):
        raise LLMMalformedReply(f"the body is {JSON_TYPES.get(type(data), 'null')}, not an object", status=status)
    return data


def reported_model(body: dict, asked_model: str) -> str:
    model = body.get("model")
    return model if isinstance(model, str) and model else asked_model


def _usage(raw: object, input_key: str, output_key: str) -> Usage | None:
    """Token counts, or None when the server reports none (or nonsense)."""
    if not isinstance(raw, dict):
        return None
    details = raw.get(f"{output_key}_details")
    reasoning = details.get("reasoning_tokens") if isinstance(details, dict) else None
    counts = raw.get(input_key), raw.get(output_key), reasoning or 0
    if not all(isinstance(count, int) for count in counts):
        return None
    return Usage(*counts)
