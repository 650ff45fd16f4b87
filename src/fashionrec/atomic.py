"""Atomic file writes: a file is written next to its destination under a temporary name and
renamed over it, so readers never see a partial file and a failed write leaves no output."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fashionrec.errors import ConfigError


def replace_with(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call `write(tmp)` to write a temporary file in `path`'s directory (same suffix, for writers
    that choose the format by it), then rename it to `path`. On an error the temporary file is
    removed and `path` is left as it was."""
    path = Path(path)
    check_path(path)
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


# files that mark a directory as a fashionrec dataset, model artifact or registry: a user's
# output file never goes into one (it would replace or corrupt what is there)
OWNED = ("manifest.json", "model.json", "registry.json")


def check_output(path: Path, inputs: tuple[Path, ...] = ()) -> None:
    """For a command's output file, before the work: `check_path`, and not inside a dataset,
    artifact or registry, nor one of the command's `inputs` (files, or directories)."""
    path = Path(path)
    check_path(path)
    target = path.resolve()
    for given in inputs:
        source = Path(given).resolve()
        if target == source or source in target.parents:
            raise ConfigError(f"{path}: would overwrite an input ({given}); give another path")
    if any((path.parent / name).is_file() for name in OWNED):
        raise ConfigError(f"{path}: inside a fashionrec dataset, model or registry")


def check_path(path: Path) -> None:
    """A ConfigError unless `path` can become a file: a name, not a directory, under a directory
    (created when missing)."""
    if not path.name:
        raise ConfigError(f"{str(path)!r}: give a file name for the output")
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory; give a file path for the output")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ConfigError(f"{path}: {path.parent} is a file, not a directory") from None


def check_own_directory(out: Path, marker: str, what: str, verb: str = "replace") -> None:
    """A ConfigError unless `out` is new, an empty directory, or one holding `marker` (the file
    that marks our own earlier output of this kind): an output directory never replaces, or
    writes into, a directory of someone else's files."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a directory; give a new directory")
    if out.is_dir() and any(out.iterdir()) and not (out / marker).is_file():
        raise ConfigError(f"{out}: exists and is not {what}; refusing to {verb} it")


@contextmanager
def new_directory(out: Path) -> Iterator[Path]:
    """A temporary directory next to `out` to build it in. When the block ends without an error
    it becomes `out` (an older `out` is replaced only once the new one is whole); on an error it
    is removed and `out` is left as it was."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
        os.chmod(out, 0o755)  # mkdtemp's 0700 is for the build only
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text(path: str | Path, text: str) -> Path:
    """Write `text` to `path` atomically."""
    return replace_with(path, lambda tmp: tmp.write_text(text))
