"""`tg-parser llm ...`: talk to the configured LLM."""

from __future__ import annotations

import logging
import sys

import click

from tg_parser.core.settings import LLMSettings, RetrySettings, load_llm_settings, load_retry_settings


@click.group()
def llm() -> None:
    """Check the LLM connection (LLM_* and RETRY_* settings)."""


@llm.command()
@click.option("--prompt", default="Reply with the single word: pong", show_default=True)
def ping(prompt: str) -> None:
    """Send one request with the configured settings; print the reply, model, attempts and time."""
    from tg_parser.llm.openai_compatible import OpenAICompatibleClient
    from tg_parser.llm.retry import LLMRequestFailed

    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s", stream=sys.stderr)
    settings, retry = load_llm_settings(), load_retry_settings()
    client = OpenAICompatibleClient(settings, retry)
    try:
        reply = client.complete(prompt)
    except LLMRequestFailed as failure:
        click.echo(f"error: {explain(failure, settings, retry)}", err=True)
        sys.exit(1)
    finally:
        client.close()
    click.echo(reply.text)
    click.echo(
        f"model: {reply.model}  attempts: {reply.attempts}  time: {reply.seconds:.2f} s  ({settings.base_url})"
    )


def explain(failure, settings: LLMSettings, retry: RetrySettings) -> str:
    """One line an operator can act on."""
    last = failure.last
    if failure.asked_delay is not None:
        return (
            f"rate limited: the server asked to wait {failure.asked_delay:g} s, more than "
            f"RETRY_SERVER_WAIT_MAX ({retry.server_wait_max:g} s)"
        )
    if last.status == 401:
        return "authentication failed (401): check LLM_API_KEY"
    if last.status == 403:
        return f"permission denied (403): the key may not use model {settings.model} (LLM_MODEL)"
    if last.status == 404:
        return f"not found (404): check LLM_BASE_URL ({settings.base_url}) and LLM_MODEL ({settings.model})"
    if last.quota_exhausted:
        return "quota exhausted (429): check the account's plan and billing; retrying cannot help"
    attempts = len(failure.attempts)
    return f"request failed after {attempts} attempt(s): {failure}"
