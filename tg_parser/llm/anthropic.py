"""Anthropic's Messages API (`/v1/messages`), over plain HTTP, with the request the official SDK sends.

The SDK (anthropic 2.x) speaks API version 2026-10-21, which authenticates with a bearer key and
refuses sampling parameters: no temperature is sent, whatever the call asks. The API requires
`max_tokens`; a call that sets none gets `DEFAULT_MAX_TOKENS`, as TG_parser 3.0.0's client did.
Structured output is a forced tool whose input schema is the output model's; JSON mode (any
object) is 3.0.0's instruction at the end of the prompt, since the API has no such switch.
Overloaded (529), 500 and 429 are retried by the base client, with `retry-after` and
`x-should-retry` as the server sends them.
"""

from __future__ import annotations

import json
import re

from tg_parser.llm.base_client import BaseLLMClient, LLMRequest, ProviderReply
from tg_parser.llm.errors import LLMIncomplete, LLMMalformedReply, LLMRefused
from tg_parser.llm.records import Usage
from tg_parser.llm.replies import body_object, named, reported_model

API_VERSION = "2026-10-21"
DEFAULT_MAX_TOKENS = 4096
JSON_HINT = "\n\nRespond with valid JSON only."
COMPLETE = frozenset({"end_turn", "stop_sequence", "tool_use"})
CUT_SHORT = {"max_tokens": "max_output_tokens", "model_context_window_exceeded": "model_context_window_exceeded"}


class AnthropicClient(BaseLLMClient):
    api = "messages"
    api_name = "Anthropic Messages API"

    async def _send(self, request: LLMRequest) -> ProviderReply:
        status, data = await self._post("v1/messages", self._body(request), request)
        return read_messages(data, status, self.llm.model, _tool_name(request))

    def _body(self, request: LLMRequest) -> dict:
        prompt = request.prompt
        if request.json_mode and "json" not in prompt.lower():
            prompt += JSON_HINT
        body: dict = {
            "max_tokens": request.max_output_tokens or DEFAULT_MAX_TOKENS,
            "messages": [{"role": "user", "content": prompt}],
            "model": self.llm.model,
        }
        if request.instructions:
            body["system"] = request.instructions
        if request.output_type is not None:
            name = _tool_name(request)
            body["tool_choice"] = {"type": "tool", "name": name}
            body["tools"] = [{"name": name, "input_schema": request.output_type.model_json_schema()}]
        return body

    def _headers(self) -> dict[str, str]:
        auth = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        return {"Accept": "application/json", **auth, "anthropic-version": API_VERSION}


def _tool_name(request: LLMRequest) -> str | None:
    if request.output_type is None:
        return None
    return re.sub(r"[^A-Za-z0-9_-]", "_", request.output_type.__name__)[:64]


def read_messages(data: object, status: int, asked_model: str, tool: str | None) -> ProviderReply:
    """A Messages body by its `stop_reason`: the text blocks, or the forced tool's input as JSON."""
    body = body_object(data, status)
    usage = _usage(body.get("usage"))
    content = body.get("content")
    if not isinstance(content, list) or not all(isinstance(block, dict) for block in content):
        raise LLMMalformedReply("`content` is not a list of blocks", status=status, usage=usage)
    texts = [block.get("text") for block in content if block.get("type") == "text"]
    if not all(isinstance(text, str) for text in texts):
        raise LLMMalformedReply("a text block has no text", status=status, usage=usage)
    reason = body.get("stop_reason")
    if reason == "refusal":
        raise LLMRefused("".join(texts) or "refusal", usage=usage, status=status)
    if reason in CUT_SHORT:
        raise LLMIncomplete(CUT_SHORT[reason], "".join(texts), usage=usage, status=status)
    if reason not in COMPLETE:
        raise LLMMalformedReply(f"`stop_reason` is {named(reason)}", status=status, usage=usage)
    model = reported_model(body, asked_model)
    if tool is not None:
        inputs = [b.get("input") for b in content if b.get("type") == "tool_use" and b.get("name") == tool]
        if not inputs or not isinstance(inputs[0], dict):
            raise LLMMalformedReply(f"no `tool_use` block of {tool} with an input object", status=status, usage=usage)
        return ProviderReply(json.dumps(inputs[0]), model, usage, status)
    if not texts:
        raise LLMMalformedReply("no text block in `content`", status=status, usage=usage)
    return ProviderReply("".join(texts), model, usage, status)


def _usage(raw: object) -> Usage | None:
    """Input tokens, cached ones included (the API counts them apart), and output tokens."""
    if not isinstance(raw, dict):
        return None
    counts = [raw.get("input_tokens"), raw.get("output_tokens")]
    if not all(isinstance(count, int) for count in counts):
        return None
    cached = [raw.get(key) for key in ("cache_creation_input_tokens", "cache_read_input_tokens")]
    return Usage(counts[0] + sum(count for count in cached if isinstance(count, int)), counts[1])
