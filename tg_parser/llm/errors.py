"""Why an LLM call failed. Each class is one answer to "should we pay for another try?".

A provider raises one of these for a failed attempt; the client retries it when `retryable`
(and the retry policy agrees), otherwise raises it with `attempts` filled in. Messages never
hold prompt or reply text: refusals, partial text and the reply that failed validation are
attributes, for the caller to use or store deliberately.
"""

from __future__ import annotations

from pydantic import ValidationError

from tg_parser.llm.records import Attempt, Usage

RETRYABLE_STATUS = frozenset({408, 409, 429})


class LLMRequestFailed(Exception):
    """A call that failed for good; `attempts` records every try, `gave_up` says why no more followed."""

    retryable = False
    retry_after: float | None = None
    """Seconds the server asked us to wait (`Retry-After`, `retry-after-ms`); only HTTP errors carry one."""

    def __init__(self, message: str, *, status: int | None = None, usage: Usage | None = None):
        super().__init__(message)
        self.status = status
        self.usage = usage
        self.attempts: tuple[Attempt, ...] = ()
        self.gave_up = ""

    @property
    def error_class(self) -> str:
        """What an attempt record calls this failure."""
        return type(self).__name__

    @property
    def summary(self) -> str:
        """`HTTP 503` or the error class: short, and safe to log."""
        return f"HTTP {self.status}" if self.status and self.status >= 400 else self.error_class

    def __str__(self) -> str:
        message = super().__str__()
        return f"{message}; {self.gave_up}" if self.gave_up else message


class LLMHTTPError(LLMRequestFailed):
    """The server answered with an error status."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        retry_after: float | None = None,
        should_retry: bool | None = None,
        quota_exhausted: bool = False,
    ):
        super().__init__(f"HTTP {status}: {message}", status=status)
        self.retry_after = retry_after
        self.should_retry = should_retry
        """The server's own verdict (`x-should-retry`), which wins over the status, as in OpenAI's SDK."""
        self.quota_exhausted = quota_exhausted
        self.asked_delay: float | None = None
        """Set when the call gave up because `retry_after` exceeded RETRY_SERVER_WAIT_MAX."""

    @property
    def retryable(self) -> bool:
        if self.should_retry is not None:
            return self.should_retry
        if self.quota_exhausted:
            return False
        return self.status in RETRYABLE_STATUS or self.status >= 500


class LLMConnectionError(LLMRequestFailed):
    """No HTTP response: the connection was refused, reset (also mid-body) or broke the protocol."""

    retryable = True

    @property
    def error_class(self) -> str:
        return type(self.__cause__).__name__ if self.__cause__ else super().error_class


class LLMTimeout(LLMRequestFailed):
    """The whole request (not one read) took longer than its share of LLM_TIMEOUT and RETRY_TOTAL_TIMEOUT."""

    retryable = True


class LLMIncomplete(LLMRequestFailed):
    """The model stopped early; the generation was billed, so it is not retried unless the caller asks."""

    def __init__(self, reason: str, partial_text: str, *, usage: Usage | None = None, status: int = 200):
        super().__init__(f"reply incomplete ({reason})", status=status, usage=usage)
        self.reason = reason
        """`max_output_tokens` (Chat's `length` too), `content_filter`, or what the provider said."""
        self.partial_text = partial_text


class LLMRefused(LLMRequestFailed):
    """The model declined to answer; asking again does not change that."""

    def __init__(self, refusal: str, *, usage: Usage | None = None, status: int = 200):
        super().__init__("the model refused to answer", status=status, usage=usage)
        self.refusal = refusal


class LLMMalformedReply(LLMRequestFailed):
    """A success status with a body we cannot read: not JSON, or not the API's shape.

    Not retried: the generation behind a 200 was finished and billed.
    """

    def __init__(self, detail: str, *, status: int, usage: Usage | None = None):
        super().__init__(f"malformed reply (HTTP {status}): {detail}", status=status, usage=usage)


class LLMValidationFailed(LLMRequestFailed):
    """A complete reply that does not validate against the requested output model."""

    def __init__(self, model_name: str, text: str, error: ValidationError, *, usage: Usage | None = None):
        super().__init__(
            f"reply does not match {model_name} ({error.error_count()} validation error(s))", status=200, usage=usage
        )
        self.text = text
        self.validation_error = error
