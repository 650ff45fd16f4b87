"""Atomic file writes: a file is written next to its destination under a temporary name and
renamed over it, so readers never see a partial file and a failed write leaves no output."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any


def replace_with(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call `write(tmp)` to write a temporary file in `path`'s directory (same suffix, for writers
    that choose the format by it), then rename it to `path`. On an error the temporary file is
    removed and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a unique name that `write` creates itself, so the file gets the usual permissions
    # (mkstemp would make it 0600)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write `text` to `path` atomically."""
    return replace_with(path, lambda tmp: tmp.write_text(text))
