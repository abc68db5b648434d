"""Structured output: a JSON schema sent in each API's shape, the reply validated into a pydantic model."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel, ConfigDict

from tests.llm_server import ScriptedServer, ok
from tests.test_llm_client import client_for
from tg_parser.llm.errors import LLMValidationFailed


class TopicCard(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str
    message_ids: list[int]


SCHEMA = {"name": "TopicCard", "schema": TopicCard.model_json_schema(), "strict": True}
VALID = json.dumps({"title": "Elections", "message_ids": [3, 5]})


def test_the_schema_is_sent_in_the_responses_shape_and_the_reply_parsed():
    with ScriptedServer([ok(VALID)]) as server:
        reply = client_for(server).complete_sync("x", output_type=TopicCard)
    assert reply.parsed == TopicCard(title="Elections", message_ids=[3, 5]) and reply.text == VALID
    assert server.requests[0]["body"]["text"] == {"verbosity": "low", "format": {"type": "json_schema", **SCHEMA}}
    assert SCHEMA["schema"]["additionalProperties"] is False


def test_the_schema_is_sent_in_the_chat_shape_and_the_reply_parsed():
    with ScriptedServer([ok(VALID, model="llama3")]) as server:
        reply = client_for(server, model="llama3").complete_sync("x", output_type=TopicCard)
    assert reply.parsed == TopicCard(title="Elections", message_ids=[3, 5])
    assert server.requests[0]["body"]["response_format"] == {"type": "json_schema", "json_schema": SCHEMA}


def test_no_output_type_no_format_and_nothing_parsed():
    with ScriptedServer([ok(VALID, model="llama3")]) as server:
        reply = client_for(server, model="llama3").complete_sync("x")
    assert reply.parsed is None and "response_format" not in server.requests[0]["body"]


@pytest.mark.parametrize(
    "text", ['{"title": "Elections", "message_ids": ["three"]}', '{"title": "Elections"}', "Sure! Here is the card"]
)
def test_a_reply_that_does_not_validate_is_a_validation_error_after_one_request(text):
    with ScriptedServer([ok(text), ok(VALID)]) as server, pytest.raises(LLMValidationFailed) as failure:
        client_for(server).complete_sync("x", output_type=TopicCard)
    assert len(server.requests) == 1
    assert failure.value.text == text and failure.value.validation_error.error_count() >= 1
    assert str(failure.value).startswith("reply does not match TopicCard (")
    assert text not in str(failure.value)
    assert [(a.status, a.error) for a in failure.value.attempts] == [(200, "LLMValidationFailed")]
