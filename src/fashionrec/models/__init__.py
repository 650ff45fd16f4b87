"""Recommender models; `fashionrec.models.registry` maps their names to classes."""
