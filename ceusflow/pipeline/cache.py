"""Content-addressed stage cache for ``ceusflow run``.

Each stage has a *key*: a SHA-256 over its own configuration and the keys (or content
fingerprints) of its inputs. A stage whose recorded key equals the new key is skipped; any change
upstream changes every key downstream, so exactly what depends on it reruns. Records live in
``RESULTS/.stages/<name>.json`` and are written only after the stage's outputs are complete.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def digest(*parts: Any) -> str:
    """Stable SHA-256 of JSON-serialisable parts (dict keys sorted)."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def tree_fingerprint(root: Path, patterns: Iterable[str] = ("**/*",)) -> str:
    """Fingerprint of a folder by relative path, size and modification time of each file.

    Cheap for terabyte exports (no file is read); a touched or replaced file changes it.
    """
    entries = []
    for pattern in patterns:
        for path in sorted(root.glob(pattern)):
            if path.is_file():
                st = path.stat()
                entries.append((str(path.relative_to(root)), st.st_size, st.st_mtime_ns))
    return digest(entries)


class StageCache:
    """Records of finished stages under ``results/.stages``."""

    def __init__(self, results: Path) -> None:
        self.folder = Path(results) / ".stages"
        self.folder.mkdir(parents=True, exist_ok=True)

    def done(self, name: str, key: str) -> bool:
        """Whether stage ``name`` finished with this exact key."""
        record = self.folder / f"{name}.json"
        return record.is_file() and json.loads(record.read_text()).get("key") == key

    def record(self, name: str, key: str, **info: Any) -> None:
        """Mark stage ``name`` finished (atomically: write then rename)."""
        tmp = self.folder / f".{name}.json.tmp"
        tmp.write_text(json.dumps({"key": key, **info}, indent=2, default=str))
        os.replace(tmp, self.folder / f"{name}.json")
