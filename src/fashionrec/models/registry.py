"""Model names -> classes, imported lazily so that heavy dependencies load only when used."""

from __future__ import annotations

import dataclasses
import importlib
import math
import numbers
import types
import typing
from typing import Any

import numpy as np

from fashionrec.errors import ConfigError
from fashionrec.params import MAX_DAYS

MODELS: dict[str, str] = {
    "popular": "fashionrec.models.popular:Popular",
    "decay": "fashionrec.models.popular:Decay",
    "repurchase": "fashionrec.models.repurchase:Repurchase",
    "segments": "fashionrec.models.segments:Segments",
    "itemcf": "fashionrec.models.itemcf:ItemCF",
    "content": "fashionrec.models.content:Content",
    "als": "fashionrec.models.als:ALS",
    "bpr": "fashionrec.models.als:BPR",
    "ns-rnn": "fashionrec.models.sequence:NSRNN",
    "ns-lstm": "fashionrec.models.sequence:NSLSTM",
    "ns-gru": "fashionrec.models.sequence:NSGRU",
    "ns-attention": "fashionrec.models.sequence:NSAttention",
    "ns-transformer": "fashionrec.models.sequence:NSTransformer",
    "sasrec": "fashionrec.models.sequence:SASRec",
    "cvae": "fashionrec.models.cvae:CVAE",
    "lightgcn": "fashionrec.models.lightgcn:LightGCN",
    "usercf": "fashionrec.models.usercf:UserCF",
    "ranker": "fashionrec.models.ranker:Ranker",
    "weighted": "fashionrec.models.hybrid:Weighted",
    "switching": "fashionrec.models.hybrid:Switching",
    "cascade": "fashionrec.models.hybrid:Cascade",
}


def get(name: str) -> type:
    """The class registered under `name`."""
    try:
        module, cls = MODELS[name].split(":")
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; known: {', '.join(MODELS)}") from None
    return getattr(importlib.import_module(module), cls)


def create(name: str, **params: Any) -> Any:
    """A new unfitted model; unknown parameters, and values of the wrong type, are a ConfigError
    naming the parameter (a whole number is taken for a float and as a string's text)."""
    cls = get(name)
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ConfigError(
            f"{name}: unknown parameter {', '.join(unknown)}; parameters are {', '.join(valid)}"
        )
    return cls(
        **{
            key: bounded(f"{name}.{key}", key, checked(f"{name}.{key}", value, hints[key]))
            for key, value in params.items()
        }
    )


# Parameters that count things (rounds, neighbours, days, sizes) and mean nothing below 1. Every
# other number must be finite and not negative, and a half-life more than 0.
AT_LEAST_ONE = frozenset(
    [
        "batch_size",
        "candidates",
        "days",
        "depth",
        "emb_dim",
        "epochs",
        "factors",
        "heads",
        "hidden",
        "iterations",
        "label_days",
        "latent",
        "max_history",
        "max_levels",
        "n_bands",
        "n_estimators",
        "n_init",
        "n_segments",
        "neighbours",
        "num_leaves",
        "threads",
        "train_rows",
        "train_users",
        "valid_k",
    ]
)


def bounded(where: str, key: str, value: Any) -> Any:
    """`value`, or a ConfigError naming `where` when a number is out of its range."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{where} must be a finite number of 0 or more, not {value!r}")
    if key in AT_LEAST_ONE and value < 1:
        raise ConfigError(f"{where} must be 1 or more, not {value!r}")
    if key.endswith("half_life") and value <= 0:
        raise ConfigError(f"{where} must be more than 0 (days), not {value!r}")
    if key.endswith(("days", "half_life")) and value > MAX_DAYS:
        raise ConfigError(f"{where} must be at most {MAX_DAYS:,} days, not {value!r}")
    return value


def checked(where: str, value: Any, hint: Any) -> Any:
    """`value` as the annotation `hint` wants it (int, float, bool, str, a Literal, X | None;
    other annotations are left to the model), or a ConfigError naming `where`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return checked(where, value, arg)
            except ConfigError:
                pass
    elif origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(f"{where} must be one of {', '.join(map(str, args))}, not {value!r}")
    elif origin is tuple and isinstance(value, list | tuple):
        return tuple(value)
    elif hint is bool:
        if isinstance(value, bool | np.bool_):
            return bool(value)
    elif hint is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif hint is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return str(value)  # `-p x.key=30` was read as a number
    else:
        return value
    raise ConfigError(f"{where} must be {_kind(hint)}, not {value!r}")


def _kind(hint: Any) -> str:
    """How an annotation reads in an error message."""
    names = {int: "a whole number", float: "a number", bool: "true or false", str: "a string"}
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return " or ".join("null" if a is type(None) else _kind(a) for a in typing.get_args(hint))
    return names.get(hint, str(hint))
