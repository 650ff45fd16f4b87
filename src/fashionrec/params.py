"""Model parameters written as text, `model.key=value`, for the CLI's `--param` and the `params`
field of the composed models (the ranker, the hybrids). Values are JSON (numbers, true/false,
null) or else plain strings."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from fashionrec.errors import ConfigError

MAX_DAYS = 36_500  # the most days of any period: a hundred years; more is a typo, and overflows
# date arithmetic (day parameters of the models, the CLI's --test-days)


def parse_value(text: str) -> Any:
    """A parameter value: JSON (numbers, true/false, null) or else the plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_params(
    items: Iterable[str] | None, models: list[str] | None = None, what: str = "--param"
) -> dict[str, dict[str, Any]]:
    """`model.key=value` items into {model: {key: value}}, one entry per name in `models` (None:
    any model); a plain `key=value` is for the only model; blank items are skipped. The model is
    what comes before the last dot, so a labelled name (`sasrec@tag`) may hold dots. `what`
    prefixes the error messages."""
    out: dict[str, dict[str, Any]] = {m: {} for m in models or []}
    for item in (t.strip() for t in items or []):
        if not item:
            continue
        key, sep, value = item.partition("=")
        model, _, name = key.strip().rpartition(".")
        if not sep or not name:
            raise ConfigError(f"{what} {item!r}: expected key=value or model.key=value")
        if not model:
            if models is None or len(models) != 1:
                raise ConfigError(f"{what} {item!r}: name the model as model.{item}")
            model = models[0]
        if models is not None and model not in out:
            raise ConfigError(f"{what} {item!r}: {model!r} is not one of {', '.join(models)}")
        out.setdefault(model, {})[name] = parse_value(value)
    return out
