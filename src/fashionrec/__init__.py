"""fashionrec: recommender systems for fashion retail on the H&M data model."""

__version__ = "0.1.0"
