"""The client for LLM_PROVIDER: the one place that maps a provider to its class."""

from __future__ import annotations

from tg_parser.core.settings import LLMSettings, RetrySettings
from tg_parser.llm.anthropic import AnthropicClient
from tg_parser.llm.base_client import BaseLLMClient
from tg_parser.llm.gemini import GeminiClient
from tg_parser.llm.ollama import OllamaClient
from tg_parser.llm.openai_compatible import OpenAICompatibleClient

CLIENTS: dict[str, type[BaseLLMClient]] = {
    "openai": OpenAICompatibleClient,
    "anthropic": AnthropicClient,
    "gemini": GeminiClient,
    "ollama": OllamaClient,
}


def make_client(llm: LLMSettings, retry: RetrySettings | None = None, **injected) -> BaseLLMClient:
    return CLIENTS[llm.provider](llm, retry, **injected)
