"""What a server echoes back, made safe to print and log: no key, nothing shaped like one, no prompt.

Servers put request text in their error messages: a proxy's 500 may quote the Authorization
header, a 400 may quote the prompt. Every error message built from a server's words goes through
`excerpt`, so neither reaches stderr, LOG_FILE or an exception's text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from difflib import SequenceMatcher

EXCERPT_CHARS = 160
"""The most of a server's message shown."""
PROMPT_RUN = 12
"""Characters in a row shared with the prompt that count as quoting it."""
_SCANNED = 4000
"""Only the start of a message is looked at: no more than an excerpt of it is ever shown."""

_KEY_SHAPES = re.compile(
    r"""
    (?:bearer|basic)\s+[^\s"',;]+          # an Authorization header's value
    | \b(?:sk|pk|rk)-[A-Za-z0-9_\-]{8,}    # OpenAI and Anthropic keys (sk-..., sk-ant-...)
    | \bAIza[0-9A-Za-z_\-]{20,}            # Google API keys
    | \b(?:key|api[_-]?key|token|access_token|password)=[^\s&"']+  # a secret in a query string
    | (?:x-api-key|x-goog-api-key|authorization)["']?\s*[:=]\s*["']?[^\s"',;]+  # a header quoted
    | \b[A-Za-z0-9_\-]{32,}\b              # any long token (hex digests, JWT parts, ...)
    """,
    re.IGNORECASE | re.VERBOSE,
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with each secret, each run of a prompt it quotes and anything shaped like a key masked."""
    text = text[:_SCANNED]
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = _mask_quotes(text, secret)
    return _KEY_SHAPES.sub("[redacted]", text)


def excerpt(text: str, secrets: Iterable[str] = ()) -> str:
    """A short, redacted, one-line excerpt of a server's message."""
    line = " ".join(redact(text, secrets).split())
    return line if len(line) <= EXCERPT_CHARS else line[: EXCERPT_CHARS - 1] + "…"


def _mask_quotes(text: str, secret: str) -> str:
    """Mask the whole secret, and every run of `PROMPT_RUN`+ characters it shares with `text`.

    One matcher pass finds quotes in order; a prompt quoted twice needs another pass.
    """
    text = text.replace(secret, "[redacted]")
    if len(secret) < PROMPT_RUN:
        return text
    while True:
        matcher = SequenceMatcher(None, text, secret[:_SCANNED], autojunk=False)
        runs = [(m.a, m.a + m.size) for m in matcher.get_matching_blocks() if m.size >= PROMPT_RUN]
        if not runs:
            return text
        for start, end in reversed(runs):
            text = text[:start] + "[redacted]" + text[end:]
