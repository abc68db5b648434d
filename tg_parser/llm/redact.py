"""What a server echoes back, made safe to print and log: no key, nothing shaped like one, no prompt.

Servers put request text in their error messages: a proxy's 500 may quote the Authorization
header, a 400 may quote the prompt. Every error message built from a server's words goes through
`excerpt`, so neither reaches stderr, LOG_FILE or an exception's text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from difflib import SequenceMatcher
from urllib.parse import unquote_plus

EXCERPT_CHARS = 160
"""The most of a server's message shown."""
PROMPT_RUN = 12
"""Characters in a row shared with a secret (any case) that count as quoting it."""
WORDS_RUN = 2
"""Words in a row shared with the prompt (any case, any spacing) that count as quoting it, once
they hold at least `WORDS_CHARS` characters."""
WORDS_CHARS = 8
_SCANNED = 4000
"""Only the start of a message is looked at: no more than an excerpt of it is ever shown."""

_CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|[\x00-\x1f\x7f-\x9f]")
"""Terminal escapes and control characters: a server's message must not drive the operator's terminal."""
_WORD = re.compile(r"\w+")

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


_MASK = "\ue000"
"""Stands for a masked run while masking: no secret holds it (it is taken out of both sides), so no
later pass can match it again, and each pass shortens the text: masking ends."""


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with each secret, each run of a prompt it quotes and anything shaped like a key masked.

    The text is URL-decoded and stripped of control characters first, so neither `%20` nor an
    escape sequence between the words hides a quote; quotes are found in any case and, word by
    word, whatever separates the words."""
    text = _CONTROL.sub(" ", unquote_plus(text[:_SCANNED])).replace(_MASK, " ")
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        secret = secret[:_SCANNED].replace(_MASK, "")
        text = re.sub(re.escape(secret), _MASK, text, flags=re.IGNORECASE)
        text = _mask_runs(text, lambda t, secret=secret: _char_runs(t, secret))
        text = _mask_runs(text, lambda t, secret=secret: _word_runs(t, secret))
    return _KEY_SHAPES.sub("[redacted]", text).replace(_MASK, "[redacted]")


def excerpt(text: str, secrets: Iterable[str] = ()) -> str:
    """A short, redacted, one-line excerpt of a server's message."""
    line = " ".join(redact(text, secrets).split())
    return line if len(line) <= EXCERPT_CHARS else line[: EXCERPT_CHARS - 1] + "…"


def _mask_runs(text: str, find) -> str:
    """Mask the (start, end) runs `find` finds until it finds none: one matcher pass finds quotes in
    order, so a prompt quoted twice needs another."""
    while runs := find(text):
        for start, end in reversed(runs):
            text = text[:start] + _MASK + text[end:]
    return text


def _char_runs(text: str, secret: str) -> list[tuple[int, int]]:
    """Runs of `PROMPT_RUN`+ characters the text shares with the secret, in any case."""
    if len(secret) < PROMPT_RUN:
        return []
    seen = text.lower() if len(text.lower()) == len(text) else text
    matcher = SequenceMatcher(None, seen, secret.lower(), autojunk=False)
    return [(m.a, m.a + m.size) for m in matcher.get_matching_blocks() if m.size >= PROMPT_RUN]


def _word_runs(text: str, secret: str) -> list[tuple[int, int]]:
    """Runs of `WORDS_RUN`+ words (of `WORDS_CHARS`+ characters) the text shares with the secret."""
    wanted = [word.lower() for word in _WORD.findall(secret)]
    if len(wanted) < WORDS_RUN:
        return []
    words = list(_WORD.finditer(text))
    matcher = SequenceMatcher(None, [w.group().lower() for w in words], wanted, autojunk=False)
    return [
        (words[m.a].start(), words[m.a + m.size - 1].end())
        for m in matcher.get_matching_blocks()
        if m.size >= WORDS_RUN and sum(len(w.group()) for w in words[m.a:m.a + m.size]) >= WORDS_CHARS
    ]
