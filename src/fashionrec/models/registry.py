"""Model names -> classes, imported lazily so that heavy dependencies load only when used."""

from __future__ import annotations

import importlib
from typing import Any

from fashionrec.errors import ConfigError

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
    """A new unfitted model; unknown parameters are a ConfigError naming the valid ones."""
    cls = get(name)
    try:
        return cls(**params)
    except TypeError as exc:
        from dataclasses import fields

        valid = [f.name for f in fields(cls) if f.init]
        raise ConfigError(f"{name}: {exc}; parameters are {', '.join(valid)}") from None
