"""Save and load fitted models without pickle: state arrays in npz, everything else in JSON.

An artifact is a directory: `model.json` (name, parameters, versions, dataset hash, the kind of
each state field), `state.npz` (numpy arrays; a sparse matrix as its CSR parts) and, for a state
field that is a dict of named arrays (network weights), `<field>.safetensors`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from safetensors.numpy import load_file, save_file

from fashionrec import __version__
from fashionrec.errors import ConfigError
from fashionrec.models import registry
from fashionrec.models.base import params_of, state_of

FORMAT = "fashionrec-model/1"


def save(
    model: Any, path: str | Path, *, dataset_hash: str = "", extra: dict | None = None
) -> Path:
    """Write `model` to the directory `path` (replaced atomically if it exists)."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {}
    tensors: dict[str, dict[str, np.ndarray]] = {}
    kinds: dict[str, Any] = {}
    for key, value in state_of(model).items():
        if value is None:
            kinds[key] = "none"
        elif sp.issparse(value):
            csr = sp.csr_matrix(value)
            arrays |= {
                f"{key}.data": csr.data,
                f"{key}.indices": csr.indices,
                f"{key}.indptr": csr.indptr,
                f"{key}.shape": np.array(csr.shape),
            }
            kinds[key] = "csr"
        elif isinstance(value, np.ndarray):
            arrays[key] = value
            kinds[key] = "array"
        elif (
            isinstance(value, dict)
            and value
            and all(isinstance(v, np.ndarray) for v in value.values())
        ):
            tensors[key] = {name: np.ascontiguousarray(v) for name, v in value.items()}
            kinds[key] = "tensors"
        else:
            kinds[key] = {"json": value}
    meta = {
        "format": FORMAT,
        "name": model.name,
        "params": params_of(model),
        "state": kinds,
        "fashionrec_version": __version__,
        "dataset_hash": dataset_hash,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **(extra or {}),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        np.savez(tmp / "state.npz", **arrays)
        for key, named in tensors.items():
            save_file(named, tmp / f"{key}.safetensors")
        (tmp / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_meta(path: str | Path) -> dict:
    """The model.json of an artifact."""
    meta_path = Path(path) / "model.json"
    if not meta_path.exists():
        raise ConfigError(f"{path}: not a fashionrec model artifact (no model.json)")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise ConfigError(f"{path}: unsupported artifact format {meta.get('format')!r}")
    return meta


def load(path: str | Path) -> Any:
    """The fitted model stored at `path`."""
    path = Path(path)
    meta = read_meta(path)
    model = registry.create(meta["name"], **meta["params"])
    with np.load(path / "state.npz", allow_pickle=False) as npz:
        for key, kind in meta["state"].items():
            if kind == "none":
                value = None
            elif kind == "csr":
                shape = tuple(int(s) for s in npz[f"{key}.shape"])
                value = sp.csr_matrix(
                    (npz[f"{key}.data"], npz[f"{key}.indices"], npz[f"{key}.indptr"]), shape=shape
                )
            elif kind == "array":
                value = npz[key]
            elif kind == "tensors":
                value = load_file(path / f"{key}.safetensors")
            else:
                value = kind["json"]
            setattr(model, key, value)
    return model
