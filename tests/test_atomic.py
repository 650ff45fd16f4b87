from __future__ import annotations

from pathlib import Path

import pytest

from fashionrec.atomic import replace_with, write_text


def test_replace_with_writes_the_file_and_nothing_else(tmp_path: Path) -> None:
    seen: list[Path] = []

    def write(tmp: Path) -> None:
        seen.append(tmp)
        tmp.write_bytes(b"new")

    path = tmp_path / "sub" / "out.csv"  # the parent is created
    assert replace_with(path, write) == path
    assert path.read_bytes() == b"new"
    assert list(path.parent.iterdir()) == [path]
    (tmp,) = seen  # written next to the destination, hidden, with the same suffix
    assert tmp.parent == path.parent and tmp.name.startswith(".") and tmp.suffix == ".csv"


def test_write_text_replaces_the_content(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text("old")
    write_text(path, "new\n")
    assert path.read_text() == "new\n"
    assert list(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize("error", [OSError, KeyboardInterrupt])
def test_a_failed_write_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, error: type[BaseException]
) -> None:
    path = tmp_path / "a.json"
    path.write_text("old")

    def write(tmp: Path) -> None:
        tmp.write_text("half")
        raise error("boom")

    with pytest.raises(error, match="boom"):
        replace_with(path, write)
    assert path.read_text() == "old"
    assert list(tmp_path.iterdir()) == [path]
