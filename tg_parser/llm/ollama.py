"""Ollama's own chat API (`/api/chat`, not streamed), with the request the `ollama` package sends.

Unlike its OpenAI-compatible `/v1`, it honours the output cap (`options.num_predict`) and takes
structured output as a JSON schema in `format` ("json" for any object). No auth: a local server.
A refused connection (the server starting) and a 503 (a model loading, the queue full) are
retried by the base client.
"""

from __future__ import annotations

from tg_parser.llm.base_client import BaseLLMClient, LLMRequest, ProviderReply
from tg_parser.llm.errors import LLMIncomplete, LLMMalformedReply
from tg_parser.llm.records import Usage
from tg_parser.llm.replies import body_object, reported_model


class OllamaClient(BaseLLMClient):
    api = "ollama_chat"
    api_name = "Ollama chat API"

    async def _send(self, request: LLMRequest) -> ProviderReply:
        status, data = await self._post("api/chat", self._body(request), request)
        return read_ollama_chat(data, status, self.llm.model)

    def _body(self, request: LLMRequest) -> dict:
        options: dict = {"temperature": self.llm.temperature if request.temperature is None else request.temperature}
        if request.max_output_tokens is not None:
            options["num_predict"] = request.max_output_tokens
        if self.llm.seed is not None:
            options["seed"] = self.llm.seed
        system = [{"role": "system", "content": request.instructions}] if request.instructions else []
        body: dict = {"model": self.llm.model, "stream": False, "options": options}
        if request.output_type is not None:
            body["format"] = request.output_type.model_json_schema()
        elif request.json_mode:
            body["format"] = "json"
        body["messages"] = [*system, {"role": "user", "content": request.prompt}]
        body["tools"] = []
        return body

    def _headers(self) -> dict[str, str]:
        return {"Accept": "application/json"}


def read_ollama_chat(data: object, status: int, asked_model: str) -> ProviderReply:
    """`message.content`, by `done` and `done_reason` (`length`: cut short)."""
    body = body_object(data, status)
    usage = _usage(body)
    message = body.get("message")
    if not isinstance(message, dict) or not isinstance(message.get("content"), str):
        raise LLMMalformedReply("`message.content` is not a string", status=status, usage=usage)
    if body.get("done") is not True:
        raise LLMMalformedReply("`done` is not true", status=status, usage=usage)
    if body.get("done_reason") == "length":
        raise LLMIncomplete("max_output_tokens", message["content"], usage=usage, status=status)
    return ProviderReply(message["content"], reported_model(body, asked_model), usage, status)


def _usage(body: dict) -> Usage | None:
    counts = body.get("prompt_eval_count"), body.get("eval_count")
    return Usage(*counts) if all(isinstance(count, int) for count in counts) else None
