"""Data: schema, ingest, Dataset and splits."""
