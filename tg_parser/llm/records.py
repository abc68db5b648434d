"""What a call returns and what it remembers of each attempt: no prompt, no reply text, no key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel

T = TypeVar("T", bound=BaseModel)


@dataclass(frozen=True)
class Usage:
    """Tokens the provider billed for one reply; reasoning tokens are part of the output tokens."""

    input_tokens: int
    output_tokens: int
    reasoning_tokens: int = 0


@dataclass(frozen=True)
class Attempt:
    """One HTTP request of a call: everything one log line per attempt needs, and nothing private."""

    number: int
    api: str
    """`responses` or `chat` (OpenAI), `messages` (Anthropic), `generate_content` (Gemini), `ollama_chat`."""
    model: str
    """The model asked for."""
    status: int | None
    """HTTP status; None when no response came back."""
    error: str | None
    """None for the attempt that succeeded; else the error class (`LLMHTTPError`, `LLMIncomplete`, ...,
    or the transport error's own class: `ConnectError`, `RemoteProtocolError`, ...)."""
    latency: float
    """Seconds from sending to the outcome."""
    usage: Usage | None
    delay: float | None = None
    """Seconds slept after it before the next attempt; None when no attempt followed."""
    delay_reason: Literal["retry-after", "backoff"] | None = None
    """Why that delay: the server's Retry-After (waited as asked), or our backoff (when it asked for none)."""


@dataclass(frozen=True)
class LLMReply(Generic[T]):
    text: str
    model: str
    """The model the reply says answered (e.g. a dated snapshot of the one asked for)."""
    usage: Usage | None
    """None when the server reports no usage (some local servers)."""
    attempts: tuple[Attempt, ...]
    """Every attempt, the successful last one included."""
    seconds: float
    """Wall time of the call, waiting for a free slot included."""
    parsed: T | None = None
    """The reply validated into `output_type`, when the call asked for structured output."""
