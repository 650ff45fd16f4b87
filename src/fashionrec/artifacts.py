"""Save and load fitted models without pickle: state arrays in npz, everything else in JSON.

An artifact is a directory: `model.json` (name, parameters, versions, dataset hash, the kind of
each state field), `state.npz` (numpy arrays; a sparse matrix as its CSR parts) and, for a state
field that is a dict of named arrays (network weights), `<field>.safetensors`.
"""

from __future__ import annotations

import json
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from fashionrec import __version__
from fashionrec.atomic import check_own_directory, new_directory
from fashionrec.errors import ConfigError, DataError
from fashionrec.models import registry
from fashionrec.models.base import params_of, state_of

FORMAT = "fashionrec-model/1"


def save(
    model: Any, path: str | Path, *, dataset_hash: str = "", extra: dict | None = None
) -> Path:
    """Write `model` to the directory `path` (replaced atomically if it exists; only an earlier
    artifact or an empty directory is replaced, never other files)."""
    path = Path(path)
    check_replaceable(path)
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
    with new_directory(path) as tmp:
        np.savez(tmp / "state.npz", **arrays)
        for key, named in tensors.items():
            save_file(named, tmp / f"{key}.safetensors")
        (tmp / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
    return path


def check_replaceable(path: Path) -> None:
    """A ConfigError unless `path` is new, an empty directory or an earlier artifact: saving
    replaces the whole directory, so it must not hold anything else (a dataset, the current
    directory, a user's files)."""
    if path.resolve() == Path.cwd().resolve():
        raise ConfigError(f"{path}: give a new directory for the model, not the current one")
    if (path.parent.parent / "registry.json").is_file():
        raise ConfigError(f"{path}: a version in a model registry never changes; publish a new one")
    check_own_directory(path, "model.json", "a fashionrec model artifact")


def read_meta(path: str | Path) -> dict:
    """The model.json of an artifact."""
    meta_path = Path(path) / "model.json"
    if not meta_path.is_file():
        raise ConfigError(f"{path}: not a fashionrec model artifact (no model.json)")
    try:
        meta = json.loads(meta_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"not valid JSON ({exc})", file=meta_path) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ConfigError(f"{meta_path}: unsupported artifact format {found!r}")
    if (
        not isinstance(meta.get("name"), str)
        or not all(isinstance(meta.get(key, {}), dict) for key in ("state", "params"))
        or "state" not in meta
    ):
        raise DataError("no model name, state or parameters: it is damaged", file=meta_path)
    return meta


def check_complete(path: str | Path) -> dict:
    """The model.json of an artifact whose state files are all there (what a registry accepts:
    a damaged artifact is refused when published, not when served)."""
    path = Path(path)
    meta = read_meta(path)
    files = ["state.npz"]
    files += [f"{key}.safetensors" for key, kind in meta["state"].items() if kind == "tensors"]
    missing = [name for name in files if not (path / name).is_file()]
    if missing:
        raise DataError(f"the artifact is incomplete: {', '.join(missing)} missing", file=path)
    return meta


def load(path: str | Path) -> Any:
    """The fitted model stored at `path`."""
    path = Path(path)
    meta = read_meta(path)
    model = registry.create(meta["name"], **meta.get("params", {}))
    try:
        _load_state(model, path, meta)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, SafetensorError) as exc:
        raise DataError(
            f"the model's state cannot be read ({type(exc).__name__}: {exc}); save it again",
            file=path,
        ) from None
    return model


def _load_state(model: Any, path: Path, meta: dict) -> None:
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
