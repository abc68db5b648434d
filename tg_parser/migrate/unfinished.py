"""A run cut off between its commits, remembered so that the same command, run again, finishes it.

Only a relative revision (`-1`, `+2`) needs this: run again after some databases committed, it
would otherwise take those one step further. So a run with a relative revision that commits more
than one database writes, just before its first COMMIT, what each database goes from and to; the
note goes once every database has committed. A rerun of the same command whose databases are
each at their before or after state takes the ones still before to their after state, and the
ones there already nowhere. Any other note is stale and is removed.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

NOTE = ".unfinished-run.json"
_RELATIVE = re.compile(r"^[+-]\d+$")


def applies(revision: str, names: list[str]) -> bool:
    return bool(_RELATIVE.match(revision)) and len(names) > 1


def record(folder: Path, upgrading: bool, revision: str, states: dict[str, tuple[list[str], list[str]]]) -> None:
    """`states`: each database's revisions before and after the run."""
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f"{NOTE}.partial"
    with open(partial, "w") as file:
        json.dump({"upgrade": upgrading, "revision": revision,
                   "databases": {name: {"before": before, "after": after} for name, (before, after) in states.items()}},
                  file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, folder / NOTE)


def forget(folder: Path) -> None:
    (folder / NOTE).unlink(missing_ok=True)


def resume(folder: Path, upgrading: bool, revision: str, current: dict[str, tuple[str, ...]]) -> dict[str, str] | None:
    """Per database, the absolute revision that finishes the cut-off run this command repeats; None
    when it repeats none (a stale note is removed)."""
    path = folder / NOTE
    try:
        note = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    databases = note.get("databases", {})
    states = {name: (tuple(databases[name]["before"]), tuple(databases[name]["after"])) for name in databases}
    same_command = note.get("upgrade") == upgrading and note.get("revision") == revision and set(states) == set(current)
    if not same_command or any(current[name] not in states[name] for name in states):
        forget(folder)
        return None
    if any(len(after) > 1 for _before, after in states.values()):
        return None
    return {name: (after[0] if after else "base") for name, (_before, after) in states.items()}
