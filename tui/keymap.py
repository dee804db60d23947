"""User keymaps: `$XDG_CONFIG_HOME/tractatus-watch/keymap.toml` maps binding ids to keys.

    [keymap]
    "dashboard.quit" = "ctrl+q,q"
    "table.down" = "down,ctrl+n"

The ids are those of the dashboard's bindings (listed in the `?` help and the README); the
keys are Textual key names, several separated by commas (a single character such as "?" may
be given as itself). The map is applied with Textual's own keymap (`App.set_keymap`). A file
that cannot be read or parsed, an unknown id or a value that is not a key list is a one-line
warning, never a crash: what is valid is applied, the rest is ignored.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from textual.keys import _character_to_key

FILE_NAME: Final = "keymap.toml"
# A key as Textual names it: "q", "ctrl+q", "question_mark", "?", "f5", "shift+tab".
_KEY: Final = re.compile(r"^[^\s,]+$")


def default_path() -> Path:
    """$XDG_CONFIG_HOME/tractatus-watch/keymap.toml (~/.config when unset)."""
    home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(home) / "tractatus-watch" / FILE_NAME


@dataclass(frozen=True)
class Keymap:
    keys: dict[str, str] = field(default_factory=dict)   # binding id -> "key,key"
    warnings: tuple[str, ...] = ()                       # one line each


def load(path: Path, known_ids: Iterable[str]) -> Keymap:
    """The keymap in `path` (an absent file: an empty keymap, no warning)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Keymap()
    except OSError as exc:
        return Keymap(warnings=(f"keymap {path}: cannot read it ({exc.strerror or exc}); "
                                "default keys used",))
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return Keymap(warnings=(f"keymap {path}: not valid TOML ({reason}); default keys used",))
    return parse(doc, known_ids, str(path))


def parse(doc: dict[str, object], known_ids: Iterable[str], source: str = "keymap") -> Keymap:
    """Check a parsed keymap document: `[keymap]` of binding id = "key[,key...]"."""
    table = doc.get("keymap")
    extra = sorted(k for k in doc if k != "keymap")
    warnings: list[str] = []
    if extra:
        warnings.append(f"{source}: unknown section(s) {', '.join(extra)} ignored "
                        "(bindings go under [keymap])")
    if table is None:
        return Keymap(warnings=tuple(warnings))
    if not isinstance(table, dict):
        return Keymap(warnings=(*warnings, f"{source}: [keymap] must be a table of "
                                           '"binding.id" = "keys"; default keys used'))
    known = set(known_ids)
    keys: dict[str, str] = {}
    unknown: list[str] = []
    for binding_id, value in table.items():
        if binding_id not in known:
            unknown.append(binding_id)
            continue
        parsed = _key_list(value)
        if parsed is None:
            warnings.append(f"{source}: {binding_id} = {value!r} is not a key list such as "
                            '"ctrl+q,q"; ignored')
            continue
        keys[binding_id] = parsed
    if unknown:
        warnings.append(f"{source}: unknown binding id(s) {', '.join(sorted(unknown))} "
                        "ignored (the ids are listed in the ? help)")
    return Keymap(keys, tuple(warnings))


def _key_list(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    keys = [k.strip() for k in value.split(",")]
    if not keys or not all(k and _KEY.match(k) for k in keys):
        return None
    # A single character ("?", "/") as Textual names its key ("question_mark", "slash"):
    # Textual converts the bindings' own keys so, but not a keymap's, which would never fire.
    return ",".join(_character_to_key(k) if len(k) == 1 else k for k in keys)
