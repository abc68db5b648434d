"""`tg-parser llm ...`: talk to the configured LLM."""

from __future__ import annotations

import sys

import click

from tg_parser.cli import logs
from tg_parser.core.settings import (
    LLMSettings,
    RetrySettings,
    load_llm_settings,
    load_retry_settings,
)
from tg_parser.llm.errors import (
    LLMHTTPError,
    LLMIncomplete,
    LLMRefused,
    LLMRequestFailed,
)
from tg_parser.llm.redact import excerpt


@click.group(cls=logs.LoggedGroup)
def llm() -> None:
    """Check the LLM connection (LLM_* and RETRY_* settings)."""


@llm.command()
@click.option("--prompt", default="Reply with the single word: pong", show_default=True,
              help="What to send (it is never logged or stored).")
def ping(prompt: str) -> None:
    """Send one request to the configured LLM (LLM_PROVIDER).

    Prints the reply, then the API used, the model, the attempts, the tokens used and the time.
    """
    from tg_parser.llm.providers import make_client

    settings, retry = load_llm_settings(), load_retry_settings()
    client = make_client(settings, retry)
    try:
        reply = client.complete_sync(prompt)
    except LLMRequestFailed as failure:
        logs.human(f"error: {explain(failure, settings, retry, prompt)} ({client.api_name} at {settings.base_url})")
        sys.exit(1)
    click.echo(reply.text)
    usage = reply.usage
    tokens = (
        f"{usage.input_tokens} in, {usage.output_tokens} out ({usage.reasoning_tokens} reasoning)" if usage else "n/a"
    )
    click.echo(
        f"model: {reply.model}  attempts: {len(reply.attempts)}  time: {reply.seconds:.2f} s  tokens: {tokens}"
        f"  ({client.api_name} at {settings.base_url})"
    )


def explain(failure: LLMRequestFailed, settings: LLMSettings, retry: RetrySettings, prompt: str) -> str:
    """One line an operator can act on."""
    status = failure.status
    if status == 401:
        return "authentication failed (401): check LLM_API_KEY"
    if status == 403:
        return f"permission denied (403): the key may not use model {settings.model} (LLM_MODEL)"
    if status == 404:
        return f"not found (404): check LLM_BASE_URL and LLM_MODEL ({settings.model})"
    if isinstance(failure, LLMHTTPError) and failure.quota_exhausted:
        return "quota exhausted (429): check the account's plan and billing; retrying cannot help"
    if isinstance(failure, LLMHTTPError) and failure.asked_delay is not None:
        what = "rate limited" if status == 429 else f"server unavailable (HTTP {status})"
        return (
            f"{what}: the server asked to wait {failure.asked_delay:g} s, more than "
            f"RETRY_SERVER_WAIT_MAX ({retry.server_wait_max:g} s)"
        )
    if isinstance(failure, LLMIncomplete):
        return f"the reply was cut short ({failure.reason}) after {len(failure.attempts)} attempt(s)"
    if isinstance(failure, LLMRefused):
        key = settings.api_key.get_secret_value() if settings.api_key else ""
        return f"the model refused to answer: {excerpt(failure.refusal, (key, prompt))}"
    return f"request failed after {len(failure.attempts)} attempt(s): {failure}"
