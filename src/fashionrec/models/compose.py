"""Helpers for models made of registered models (the two-stage ranker, the hybrids).

A composed model keeps the fitted state of its parts in two of its own state fields: the arrays
of every part in one dict of named arrays (saved as safetensors) and a JSON description (each
part's registry name, parameters and the kind of each state field). `artifacts.save/load` then
round-trip it with no special code, and the parts are rebuilt from that state on first use.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from fashionrec.errors import ConfigError
from fashionrec.models import registry
from fashionrec.models.base import params_of, state_of
from fashionrec.params import parse_params as parse_items

SEP = "/"  # between the part, field and array names of a packed array


def pack_values(values: dict[str, Any], prefix: str, arrays: dict[str, np.ndarray]) -> dict:
    """Move `values` (arrays, CSR matrices, dicts of arrays, None, JSON) into `arrays` under
    `prefix`; returns the JSON kinds that `unpack_values` needs to rebuild them."""
    kinds: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{SEP}{key}"
        if value is None:
            kinds[key] = "none"
        elif sp.issparse(value):
            csr = sp.csr_matrix(value)
            for part in ("data", "indices", "indptr"):
                arrays[f"{name}{SEP}{part}"] = np.ascontiguousarray(getattr(csr, part))
            kinds[key] = {"csr": list(csr.shape)}
        elif isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
            arrays[name] = np.ascontiguousarray(value)
            kinds[key] = "array"
        elif isinstance(value, np.ndarray):  # strings: safetensors holds numbers only
            kinds[key] = {"strings": value.astype(str).tolist()}
        elif (
            isinstance(value, dict)
            and value
            and all(isinstance(v, np.ndarray) for v in value.values())
        ):
            for sub, v in value.items():
                arrays[f"{name}{SEP}{sub}"] = np.ascontiguousarray(v)
            kinds[key] = {"tensors": list(value)}
        else:
            kinds[key] = {"json": value}
    return kinds


def unpack_values(kinds: dict, prefix: str, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """The values `pack_values` stored under `prefix`."""
    out: dict[str, Any] = {}
    for key, kind in kinds.items():
        name = f"{prefix}{SEP}{key}"
        if kind == "none":
            out[key] = None
        elif kind == "array":
            out[key] = arrays[name]
        elif "csr" in kind:
            parts = [arrays[f"{name}{SEP}{p}"] for p in ("data", "indices", "indptr")]
            out[key] = sp.csr_matrix(tuple(parts), shape=tuple(kind["csr"]))
        elif "strings" in kind:
            out[key] = np.array(kind["strings"], dtype=str)
        elif "tensors" in kind:
            out[key] = {sub: arrays[f"{name}{SEP}{sub}"] for sub in kind["tensors"]}
        else:
            out[key] = kind["json"]
    return out


def pack(parts: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> tuple[dict, dict]:
    """Fitted models {key: model} as (named arrays, JSON description)."""
    arrays = {} if arrays is None else arrays
    meta = {
        key: {
            "name": model.name,
            "params": params_of(model),
            "state": pack_values(state_of(model), key, arrays),
        }
        for key, model in parts.items()
    }
    return arrays, meta


def unpack(arrays: dict[str, np.ndarray], meta: dict) -> dict[str, Any]:
    """The fitted models that `pack` described."""
    parts = {}
    for key, desc in meta.items():
        model = registry.create(desc["name"], **desc["params"])
        for field_name, value in unpack_values(desc["state"], key, arrays).items():
            setattr(model, field_name, value)
        parts[key] = model
    return parts


def split_list(text: str, what: str) -> list[str]:
    """'a,b, c' -> ['a', 'b', 'c'] (at least one name)."""
    names = [t.strip() for t in str(text).split(",") if t.strip()]
    if not names:
        raise ConfigError(f"{what}: give at least one name")
    return names


def parse_params(text: str, known: list[str]) -> dict[str, dict[str, Any]]:
    """'als.factors=64;itemcf.window_days=0' -> {'als': {'factors': 64}, ...}, one entry per
    name in `known` (values as in `fashionrec.params`). Every model named must be in `known`."""
    return parse_items(str(text or "").split(";"), known, "params")


def create_parts(names: list[str], params: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Unfitted registered models by name (each name once), with their parameters."""
    if len(set(names)) != len(names):
        raise ConfigError(f"models {', '.join(names)}: each model may appear once")
    return {name: registry.create(name, **params.get(name, {})) for name in names}
