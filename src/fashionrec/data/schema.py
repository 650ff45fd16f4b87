"""Column specs of the three H&M tables: which columns are required and how each is typed."""

from __future__ import annotations

import polars as pl

TABLES = ("transactions_train", "articles", "customers")
SUFFIXES = (".parquet", ".csv.gz", ".csv")

REQUIRED: dict[str, tuple[str, ...]] = {
    "transactions_train": ("t_dat", "customer_id", "article_id"),
    "articles": ("article_id",),
    "customers": ("customer_id",),
}

# The years a t_dat may have: outside them a date is a typo (9999-12-31) that breaks every window.
T_DAT_YEARS = (1970, 2100)

# Optional columns with a non-string type; every other column is kept as a string.
TRANSACTION_TYPES: dict[str, pl.DataType] = {"price": pl.Float64(), "sales_channel_id": pl.Int8()}

ARTICLE_INT_COLUMNS = (
    "product_type_no",
    "graphical_appearance_no",
    "perceived_colour_value_id",
    "perceived_colour_master_id",
    "department_no",
    "index_group_no",
    "section_no",
    "garment_group_no",
)

# The H&M article columns in Kaggle order, so that we can say which ones a retailer lacks.
HM_ARTICLE_COLUMNS = (
    "article_id",
    "product_code",
    "prod_name",
    "product_type_no",
    "product_type_name",
    "product_group_name",
    "graphical_appearance_no",
    "graphical_appearance_name",
    "colour_group_code",
    "colour_group_name",
    "perceived_colour_value_id",
    "perceived_colour_value_name",
    "perceived_colour_master_id",
    "perceived_colour_master_name",
    "department_no",
    "department_name",
    "index_code",
    "index_name",
    "index_group_no",
    "index_group_name",
    "section_no",
    "section_name",
    "garment_group_no",
    "garment_group_name",
    "detail_desc",
)

CUSTOMER_FLOAT_COLUMNS = ("FN", "Active", "age")
HM_CUSTOMER_COLUMNS = (
    "customer_id",
    "FN",
    "Active",
    "club_member_status",
    "fashion_news_frequency",
    "age",
    "postal_code",
)
HM_TRANSACTION_COLUMNS = ("t_dat", "customer_id", "article_id", "price", "sales_channel_id")

EXPECTED_COLUMNS = {
    "transactions_train": HM_TRANSACTION_COLUMNS,
    "articles": HM_ARTICLE_COLUMNS,
    "customers": HM_CUSTOMER_COLUMNS,
}

# H&M article ids are 10 digits with a leading zero; spreadsheets and int parsing drop it.
HM_ARTICLE_ID_WIDTH = 10
