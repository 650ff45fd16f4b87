"""Model registry on disk: versioned artifact directories and which one serves.

ROOT/<model>/v<N>/        an artifact (model.json + state)
ROOT/registry.json        {"serving": "<model>/v<N>", "history": ["<model>/v<N>", ...]}
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from fashionrec import artifacts
from fashionrec.atomic import check_own_directory, write_text
from fashionrec.errors import ConfigError

_VERSION = re.compile(r"^v(\d+)$")


def is_registry(root: Path) -> bool:
    return (Path(root) / "registry.json").exists()


def read(root: Path) -> dict:
    path = Path(root) / "registry.json"
    if not path.exists():
        return {"serving": None, "history": []}
    return json.loads(path.read_text())


def write(root: Path, state: dict) -> None:
    write_text(Path(root) / "registry.json", json.dumps(state, indent=2))


def versions(root: Path) -> dict[str, list[str]]:
    """Every published model and its versions, oldest first."""
    root = Path(root)
    out: dict[str, list[str]] = {}
    for model_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found = [
            (int(m.group(1)), d.name)
            for d in model_dir.iterdir()
            if (m := _VERSION.match(d.name)) and (d / "model.json").exists()
        ]
        if found:
            out[model_dir.name] = [name for _, name in sorted(found)]
    return out


def check_root(root: Path) -> None:
    """A ConfigError unless `root` is a registry, an empty directory or a new path."""
    check_own_directory(Path(root), "registry.json", "a model registry", "write into")


def publish(artifact: Path, root: Path, *, serve: bool = False) -> str:
    """Copy an artifact into the registry as the next version of its model; returns 'model/vN'."""
    check_root(root)
    meta = artifacts.check_complete(artifact)
    name = meta["name"]
    existing = versions(root).get(name, []) if Path(root).exists() else []
    version = f"v{len(existing) + 1}"
    while (Path(root) / name / version).exists():
        version = f"v{int(version[1:]) + 1}"
    target = Path(root) / name / version
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(artifact, target)
    ref = f"{name}/{version}"
    state = read(root)
    if serve or state["serving"] is None:
        state = promote_state(state, ref)
    write(root, state)
    return ref


def promote_state(state: dict, ref: str) -> dict:
    """The registry state with `ref` serving, and the one it replaces last in the history (the
    same model again changes nothing: a rollback must go back to another one)."""
    if ref == state.get("serving"):
        return state
    history = [*state.get("history", []), state["serving"]] if state.get("serving") else []
    return {"serving": ref, "history": history[-50:]}


def resolve(root: Path, name: str, version: str | None = None) -> str:
    """'model/vN' for a model name (latest version unless given); ConfigError if unknown."""
    found = versions(root).get(name)
    if not found:
        raise ConfigError(f"no published model {name!r}")
    if version is None:
        return f"{name}/{found[-1]}"
    if version not in found:
        raise ConfigError(f"model {name!r} has no version {version!r} (has {', '.join(found)})")
    return f"{name}/{version}"
