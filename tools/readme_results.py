"""Write the results tables of `make readme` into README.md between its results markers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from fashionrec.evaluate import markdown_table, table_columns

START, END = "<!-- results:start -->", "<!-- results:end -->"


def section(path: Path) -> str:
    rows = json.loads(path.read_text())
    tests = rows[0]["test"]
    what = tests[0] if len(tests) == 1 else f"{len(tests)} rolling weeks, mean ± 95% CI"
    return f"`{path}` ({what}):\n\n{markdown_table(rows, table_columns(12))}\n"


def main(readme: str, *results: str) -> None:
    text = Path(readme).read_text()
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    body = "\n".join(section(Path(r)) for r in results)
    Path(readme).write_text(f"{head}{START}\n{body}{END}{tail}")


if __name__ == "__main__":
    main(*sys.argv[1:])
