"""The LLM base client: every provider call goes through one retry policy, configured by RetrySettings."""

from __future__ import annotations

import random as random_module
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tg_parser.core.settings import RetrySettings, load_retry_settings
from tg_parser.llm.retry import Attempt, run_with_retry


@dataclass(frozen=True)
class LLMReply:
    text: str
    model: str
    attempts: int
    seconds: float
    failed_attempts: tuple[Attempt, ...] = ()


class BaseLLMClient(ABC):
    """Subclasses make one request in `_send` and raise `ProviderError` when it fails."""

    def __init__(
        self,
        retry: RetrySettings | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        random: Callable[[], float] = random_module.random,
    ):
        self.retry = retry if retry is not None else load_retry_settings()
        self._sleep, self._clock, self._random = sleep, clock, random

    def complete(
        self,
        prompt: str,
        *,
        instructions: str = "",
        max_output_tokens: int | None = None,
        retry: Mapping[str, float] | None = None,
    ) -> LLMReply:
        """One completion; `retry` overrides some RetrySettings fields for this call only (validated)."""
        settings = self._retry_for(retry)
        started = self._clock()
        (text, model), failed = run_with_retry(
            lambda: self._send(prompt, instructions, max_output_tokens),
            settings,
            sleep=self._sleep,
            clock=self._clock,
            random=self._random,
        )
        return LLMReply(text, model, len(failed) + 1, self._clock() - started, tuple(failed))

    def _retry_for(self, override: Mapping[str, float] | None) -> RetrySettings:
        if not override:
            return self.retry
        unknown = set(override) - set(RetrySettings.model_fields)
        if unknown:
            raise ValueError(
                f"unknown retry setting(s) {', '.join(sorted(unknown))}; "
                f"allowed: {', '.join(RetrySettings.model_fields)}"
            )
        return load_retry_settings(**{**self.retry.model_dump(), **override})

    @abstractmethod
    def _send(self, prompt: str, instructions: str, max_output_tokens: int | None) -> tuple[str, str]:
        """Make one request; return (reply text, model that answered)."""
