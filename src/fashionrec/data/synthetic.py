"""Synthetic H&M data at any scale: the three Kaggle tables with the structure that makes the real
problem hard, so that ingest, models and Spark can be measured at full size.

Only the articles and the final week of the competition are in ../shared/data/hm; `generate`
stands in for the two years (at scale 1.0: 1.37M customers, 31.8M transactions, 2018-09-20 ..
2020-09-22). What it models, and why (each is something a recommender must get right):

- customers with the Kaggle fields and marginals set from published descriptions of the Kaggle
  table (two age peaks near 23 and 51, club status, fashion news, FN / Active, postal codes with
  one huge default code and a heavy tail), unchecked: no real customers table is available;
- heavy-tailed activity (log-normal visit rates), customers who join late or churn;
- article life cycles: launch in product-code order (H&M numbers products as it makes them), a
  rise of a week or two, then decay (a few "basics" sell for years); yearly seasons per product
  type (swimwear in summer, knitwear in winter), weekday and yearly volume, sales events;
- segments that depend on age (young, women, parents, men, mature...) with tastes over the
  index (Divided, Menswear, Baby...) and departments, plus two favourite departments each;
- baskets of related articles: other colours of the same product_code, the same department,
  quantity > 1 (exact duplicate rows);
- buying again: re-buys soon after a visit (falling off with the gap), rare repeats of older
  purchases, and no chance re-buys (a customer does not draw again what they already own), so
  that as few pairs are bought twice, and as soon, as in the whole real history;
- prices per article by garment group (SEK / 590, as in Kaggle), markdowns late in life and in
  sales seasons, per-row discounts; a 30/70 store/online split that moves with the weekday.

Everything is vectorised numpy / polars (no per-row Python), deterministic by `seed`, streamed to
disk in customer chunks and written sorted by (t_dat, customer_id) like the Kaggle file.
`calibrate` compares the final week with the real one, and `history_stats` the whole history
with the published real figures (`HM_HISTORY`).
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
from tqdm import tqdm

from fashionrec.atomic import check_own_directory, write_text
from fashionrec.data import schema
from fashionrec.data.ingest import find_table, read_articles
from fashionrec.errors import ConfigError, DataError

log = logging.getLogger(__name__)

Format = Literal["csv.gz", "parquet"]
FORMATS: tuple[str, ...] = ("csv.gz", "parquet")

START = date(2018, 9, 20)
END = date(2020, 9, 22)
N_DAYS = (END - START).days + 1  # 734
N_WEEKS = -(-N_DAYS // 7)  # 105
HM_CUSTOMERS = 1_371_980
HM_TRANSACTIONS = 31_788_324
HM_POSTAL_CODES = 352_899
HM_ARTICLES = 105_542
CHUNK = 100_000  # customers per chunk: ~2.3M rows, a few hundred MB of arrays
PRICE_UNIT = 590.0  # Kaggle prices are SEK / 590: 0.033881355 = 19.99 SEK
GZIP_LEVEL = 1  # 3.4 GB of CSV at scale 1.0: level 6 triples the time for 15% smaller files
EPOCH_DAY = (START - date(1970, 1, 1)).days

# ---- customer behaviour (calibrated on the real final week and history, docs/scale.md) -------
LAUNCH_LEAD = 420  # the oldest products launched this many days before START
BASIC_SHARE = 0.04  # articles that sell for years
BASIC_DECAY = 800.0  # their decay time in days
P_FAVOURITE_ANCHOR = 0.30  # first article of a basket from a favourite department
P_DUP, P_COLOUR, P_DEPT, P_FAVOURITE = 0.08, 0.17, 0.10, 0.08  # later articles of a basket
P_SHORT, SHORT_DAYS = 0.11, 14  # re-buys from the previous visit when it is this recent
SHORT_DECAY = 0.93  # and the chance falls by this factor per day of the gap after the first
REPEAT_BETA = (1.0, 130.0)  # each customer's chance that an article copies an earlier visit's
REDRAWS = 3  # rounds of drawing again a fresh row of an article bought before
BASE_SIGMA = (1.05, 0.65)  # log-normal spread of the base demand of products and of articles
WEEKDAY_VOLUME = np.array([0.95, 0.95, 0.9, 1.1, 1.15, 1.1, 0.85])  # Monday first
WEEKDAY_ONLINE = np.array([0.0, 0.0, 0.0, 0.0, -0.1, -0.6, 0.5])  # logit shift (Sat: stores)
PRICE_NOISE = (np.array([1.0, 0.9, 0.85, 0.8, 0.7, 0.5]), [0.78, 0.08, 0.04, 0.05, 0.03, 0.02])

# Segments: taste over the H&M index (unlisted index names weigh 0.15), and prior given age.
SEGMENTS = ("young", "women", "parents", "teen parents", "men", "mature")
INDEX_TASTE = {
    "young": {"Divided": 5, "Ladieswear": 2, "Ladies Accessories": 2, "Lingeries/Tights": 2,
              "Sport": 1.5, "Menswear": 0.8},
    "women": {"Ladieswear": 5, "Lingeries/Tights": 2, "Ladies Accessories": 1.5, "Divided": 1,
              "Sport": 1, "Menswear": 0.5},
    "parents": {"Baby Sizes 50-98": 5, "Children Sizes 92-140": 4,
                "Children Accessories, Swimwear": 2, "Ladieswear": 2, "Lingeries/Tights": 1},
    "teen parents": {"Children Sizes 134-170": 5, "Children Sizes 92-140": 2,
                     "Children Accessories, Swimwear": 1.5, "Ladieswear": 2, "Divided": 1.5,
                     "Menswear": 1},
    "men": {"Menswear": 8, "Sport": 1.5, "Divided": 0.6},
    "mature": {"Ladieswear": 5, "Lingeries/Tights": 2.5, "Ladies Accessories": 2,
               "Menswear": 1.5, "Children Sizes 92-140": 0.6},
}  # fmt: skip
AGE_BANDS = np.array([27, 40, 60])  # <27, 27-39, 40-59, 60+, unknown
SEGMENT_BY_AGE = np.array(
    [
        [0.56, 0.18, 0.05, 0.01, 0.17, 0.03],
        [0.12, 0.30, 0.33, 0.05, 0.15, 0.05],
        [0.02, 0.26, 0.06, 0.22, 0.14, 0.30],
        [0.01, 0.20, 0.04, 0.05, 0.15, 0.55],
        [0.20, 0.25, 0.12, 0.08, 0.15, 0.20],
    ]
)

# Garment groups that cost more or less than the 19.99 SEK median, and seasonal product types.
PRICE_FACTOR = {
    "Outdoor": 2.6, "Trousers Denim": 1.7, "Shoes": 1.8, "Trousers": 1.5, "Dresses Ladies": 1.5,
    "Knitwear": 1.4, "Blouses": 1.3, "Shirts": 1.3, "Dressed": 1.6, "Skirts": 1.2,
    "Accessories": 0.7, "Swimwear": 0.8, "Under-, Nightwear": 0.8, "Jersey Basic": 0.6,
    "Socks and Tights": 0.45,
}  # fmt: skip
SUMMER = r"swim|bikini|shorts|sandal|sunglasses|sun hat|dress"
WINTER = r"sweater|knit|jacket|coat|outdoor|cardigan|beanie|scarf|gloves|boots|hoodie"


# ---------------------------------------------------------------------------------------------
# Calendar


def _calendar() -> dict[str, np.ndarray]:
    """Per day of the period: volume weight, online logit shift, sale flag, month index."""
    days = np.datetime64(START) + np.arange(N_DAYS)
    weekday = (days.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday
    doy = (days - days.astype("datetime64[Y]")).astype(np.int64)
    month = days.astype("datetime64[M]").astype(np.int64)
    volume = WEEKDAY_VOLUME[weekday] * (1 + 0.18 * np.cos(2 * np.pi * (doy - 182) / 365.25))
    online = WEEKDAY_ONLINE[weekday].copy()
    sale = np.zeros(N_DAYS, bool)

    def span(a: str, b: str) -> np.ndarray:
        return (days >= np.datetime64(a)) & (days <= np.datetime64(b))

    for year in (2018, 2019, 2020):
        sale |= span(f"{year}-06-20", f"{year}-07-31") | span(f"{year}-12-26", f"{year + 1}-01-31")
        volume[span(f"{year}-06-24", f"{year}-07-07")] *= 1.3
        volume[span(f"{year}-12-01", f"{year}-12-21")] *= 1.15
        volume[span(f"{year}-12-24", f"{year}-12-26")] *= 0.4
    for friday in ("2018-11-23", "2019-11-29"):  # Black Friday weekends
        week = span(friday, str(np.datetime64(friday) + 3))
        volume[week] *= 1.7
        sale |= week
    volume[days >= np.datetime64("2020-01-01")] *= 0.85
    volume[days >= np.datetime64("2020-08-01")] *= 0.85
    lockdown = span("2020-03-16", "2020-05-10")
    volume[lockdown] *= 0.6
    online[lockdown] += 1.2
    return {"volume": volume, "online": online, "sale": sale, "month": month - month[0]}


# ---------------------------------------------------------------------------------------------
# Hex ids and categorical draws (vectorised)

_HEX = np.array([f"{i:02x}" for i in range(256)], dtype="S2")


def hex_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """`n` random 64-character lowercase hex strings (like Kaggle's hashed ids)."""
    raw = rng.integers(0, 256, size=(n, 32), dtype=np.uint8)
    return np.ascontiguousarray(_HEX[raw]).view("S64").ravel().astype(str)


def _choice_rows(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One category per row of a (n, k) probability matrix."""
    cum = np.cumsum(probs, axis=1)
    u = rng.random(len(probs)) * cum[:, -1]
    return (u[:, None] >= cum).sum(axis=1).clip(0, probs.shape[1] - 1)


def _draw(cum: np.ndarray, width: int, row: np.ndarray, lo: np.ndarray, hi: np.ndarray,
          r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Positions in [lo, hi) of table row `row`, drawn in proportion to mass, and that mass.

    `cum` is a flattened table of cumulative masses (rows of `width`, each starting where the
    previous ends), so that one searchsorted serves every (row, range) at once.
    """
    base = row.astype(np.int64) * width
    a, b = cum[base + lo], cum[base + hi]
    pos = np.searchsorted(cum, a + r * (b - a), side="right") - 1 - base
    return np.clip(pos, lo, np.maximum(hi - 1, lo)), b - a


def _cumulative(mass: np.ndarray) -> np.ndarray:
    """Flattened per-row cumulative sums with a leading 0, rows normalised to sum to 1 and
    chained (row i starts at i) so the whole table is non-decreasing."""
    mass = mass / np.maximum(mass.sum(axis=1, keepdims=True), 1e-300)
    cum = np.zeros((mass.shape[0], mass.shape[1] + 1))
    np.cumsum(mass, axis=1, out=cum[:, 1:])
    cum += np.arange(mass.shape[0])[:, None]
    return cum.ravel()


def _resolve(src: np.ndarray) -> np.ndarray:
    """Follow copy pointers (src[i] = i for originals; pointers go backwards) to the original."""
    while True:
        nxt = src[src]
        if np.array_equal(nxt, src):
            return src
        src = nxt


def _bought_before(qu: np.ndarray, qpos: np.ndarray, qday: np.ndarray, u: np.ndarray,
                   pos: np.ndarray, day: np.ndarray, width: int) -> np.ndarray:  # fmt: skip
    """For each query (customer, article position < width, day): do the rows (u, pos, day)
    have that customer buy that article on an earlier day?"""
    key = u.astype(np.int64) * width + pos
    order = np.lexsort((day, key))  # by key, then day: each key's first row is its earliest
    sorted_key = key[order]
    qkey = qu.astype(np.int64) * width + qpos
    at = np.minimum(np.searchsorted(sorted_key, qkey), len(order) - 1)
    return (sorted_key[at] == qkey) & (day[order][at] < qday)


# ---------------------------------------------------------------------------------------------
# Articles


def synth_articles(n: int, seed: int) -> pl.DataFrame:
    """An H&M-like articles table of `n` rows with the 25 Kaggle columns (all text, like the CSV):
    products with 1..n colours, departments within the ten H&M index names."""
    rng = np.random.default_rng([seed, 3])
    indexes = [
        ("A", "Ladieswear", "1", "Ladieswear", 0.25, "ADFGHIS"),
        ("B", "Lingeries/Tights", "1", "Ladieswear", 0.064, ""),
        ("C", "Ladies Accessories", "1", "Ladieswear", 0.066, ""),
        ("D", "Divided", "2", "Divided", 0.144, ""),
        ("F", "Menswear", "3", "Menswear", 0.119, ""),
        ("G", "Baby Sizes 50-98", "4", "Baby/Children", 0.084, ""),
        ("H", "Children Sizes 92-140", "4", "Baby/Children", 0.114, ""),
        ("I", "Children Sizes 134-170", "4", "Baby/Children", 0.087, ""),
        ("J", "Children Accessories, Swimwear", "4", "Baby/Children", 0.044, ""),
        ("S", "Sport", "26", "Sport", 0.032, ""),
    ]
    types = [  # product type no, name, group, garment group no, name, index codes it appears in
        ("272", "Trousers", "Garment Lower body", "1009", "Trousers", "ADFGHIS"),
        ("265", "Dress", "Garment Full body", "1013", "Dresses Ladies", "ADHI"),
        ("252", "Sweater", "Garment Upper body", "1003", "Knitwear", "ADFGHI"),
        ("255", "T-shirt", "Garment Upper body", "1002", "Jersey Basic", "ADFGHIS"),
        ("253", "Vest top", "Garment Upper body", "1002", "Jersey Basic", "ADS"),
        ("254", "Top", "Garment Upper body", "1005", "Jersey Fancy", "ADHI"),
        ("258", "Blouse", "Garment Upper body", "1010", "Blouses", "AD"),
        ("259", "Shirt", "Garment Upper body", "1011", "Shirts", "AF"),
        ("264", "Jacket", "Garment Upper body", "1007", "Outdoor", "ADFHIS"),
        ("274", "Shorts", "Garment Lower body", "1025", "Shorts", "ADFHIS"),
        ("275", "Skirt", "Garment Lower body", "1012", "Skirts", "ADHI"),
        ("306", "Bra", "Underwear", "1017", "Under-, Nightwear", "B"),
        ("286", "Underwear bottom", "Underwear", "1017", "Under-, Nightwear", "BF"),
        ("304", "Pyjama set", "Nightwear", "1017", "Under-, Nightwear", "BGH"),
        ("302", "Socks", "Socks & Tights", "1021", "Socks and Tights", "BFJ"),
        ("273", "Leggings/Tights", "Garment Lower body", "1021", "Socks and Tights", "BGHS"),
        ("59", "Swimwear bottom", "Swimwear", "1018", "Swimwear", "BJ"),
        ("298", "Bikini top", "Swimwear", "1018", "Swimwear", "BJ"),
        ("72", "Earring", "Accessories", "1019", "Accessories", "C"),
        ("87", "Hat/beanie", "Accessories", "1019", "Accessories", "CFJ"),
        ("66", "Bag", "Accessories", "1019", "Accessories", "CJ"),
        ("94", "Sneakers", "Shoes", "1020", "Shoes", "CFJ"),
        ("245", "Cardigan", "Garment Upper body", "1003", "Knitwear", "ADGH"),
        ("57", "Bodysuit", "Garment Full body", "1005", "Jersey Fancy", "G"),
    ]
    colours = [  # code, name, value id, value name, master id, master name, share
        ("09", "Black", "4", "Dark", "5", "Black", 0.21),
        ("10", "White", "3", "Light", "9", "White", 0.09),
        ("73", "Dark Blue", "4", "Dark", "2", "Blue", 0.08),
        ("07", "Grey", "2", "Medium Dusty", "12", "Grey", 0.04),
        ("13", "Beige", "3", "Light", "11", "Beige", 0.04),
        ("72", "Blue", "2", "Medium Dusty", "2", "Blue", 0.03),
        ("51", "Light Pink", "3", "Light", "4", "Pink", 0.04),
        ("08", "Dark Grey", "4", "Dark", "12", "Grey", 0.03),
        ("43", "Dark Red", "4", "Dark", "18", "Red", 0.02),
        ("62", "Dark Green", "4", "Dark", "19", "Green", 0.02),
        ("71", "Light Blue", "3", "Light", "2", "Blue", 0.04),
        ("06", "Light Grey", "3", "Light", "12", "Grey", 0.03),
        ("12", "Light Beige", "3", "Light", "11", "Beige", 0.04),
        ("19", "Greenish Khaki", "2", "Medium Dusty", "20", "Khaki green", 0.02),
        ("11", "Off White", "3", "Light", "9", "White", 0.03),
        ("42", "Red", "5", "Bright", "18", "Red", 0.03),
        ("52", "Pink", "2", "Medium Dusty", "4", "Pink", 0.03),
    ]
    graphics = [
        ("1010016", "Solid", 0.55),
        ("1010001", "All over pattern", 0.15),
        ("1010017", "Stripe", 0.1),
        ("1010010", "Melange", 0.08),
        ("1010014", "Check", 0.04),
        ("1010008", "Front print", 0.08),
    ]
    words = np.array(
        [
            "Slim",
            "Wide",
            "Basic",
            "Soft",
            "Relaxed",
            "Linen",
            "Denim",
            "Rib",
            "Cotton",
            "Lace",
            "Oversized",
            "Cropped",
            "Classic",
        ]
    )

    # departments: every index at least one, the rest by the index's share of articles
    n_dept = max(60, round(n * 299 / HM_ARTICLES))
    shares = np.array([i[4] for i in indexes])
    dept_index = np.concatenate(
        [
            np.arange(len(indexes)),
            rng.choice(len(indexes), n_dept - len(indexes), p=_normalised(shares)),
        ]
    )
    type_ok = np.array([[ix[0] in t[5] for ix in indexes] for t in types])  # (types, indexes)
    dept_type = np.array([rng.choice(np.flatnonzero(type_ok[:, i])) for i in dept_index])

    # products: sizes (colours per product, mean 2.2 as in Kaggle), department, type
    sizes = rng.geometric(1 / 2.235, size=n)
    sizes = sizes[: np.searchsorted(np.cumsum(sizes), n) + 1]
    sizes[-1] -= sizes.sum() - n
    n_prod = len(sizes)
    prod_dept = rng.choice(n_dept, n_prod, p=_normalised(rng.lognormal(0, 0.8, n_dept)))
    codes = 108775 + np.cumsum(rng.integers(1, 18, n_prod))
    prod = np.repeat(np.arange(n_prod), sizes)
    variant = np.arange(n) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    dept = prod_dept[prod]
    ix = dept_index[dept]
    ty = dept_type[dept]
    colour = rng.choice(len(colours), n, p=_normalised(np.array([c[6] for c in colours])))
    graphic = rng.choice(len(graphics), n, p=_normalised(np.array([g[2] for g in graphics])))
    word = words[rng.integers(0, len(words), n_prod)][prod]

    def col(table: list[tuple], field: int, idx: np.ndarray) -> np.ndarray:
        return np.array([row[field] for row in table], dtype=object)[idx]

    code_txt = np.char.zfill(codes.astype(str), 7)[prod]
    type_name = col(types, 1, ty)
    index_name = col(indexes, 1, ix)
    frame = pl.DataFrame(
        {
            "article_id": np.char.add(code_txt, np.char.zfill((variant + 1).astype(str), 3)),
            "product_code": code_txt,
            "prod_name": np.char.add(np.char.add(word.astype(str), " "), type_name.astype(str)),
            "product_type_no": col(types, 0, ty),
            "product_type_name": type_name,
            "product_group_name": col(types, 2, ty),
            "graphical_appearance_no": col(graphics, 0, graphic),
            "graphical_appearance_name": col(graphics, 1, graphic),
            "colour_group_code": col(colours, 0, colour),
            "colour_group_name": col(colours, 1, colour),
            "perceived_colour_value_id": col(colours, 2, colour),
            "perceived_colour_value_name": col(colours, 3, colour),
            "perceived_colour_master_id": col(colours, 4, colour),
            "perceived_colour_master_name": col(colours, 5, colour),
            "department_no": (1000 + 17 * dept).astype(str),
            "department_name": np.char.add(
                np.char.add(index_name.astype(str), " "), type_name.astype(str)
            ),
            "index_code": col(indexes, 0, ix),
            "index_name": index_name,
            "index_group_no": col(indexes, 2, ix),
            "index_group_name": col(indexes, 3, ix),
            "section_no": (10 + 2 * ix + dept % 2).astype(str),
            "section_name": np.char.add(
                index_name.astype(str), np.where(dept % 2 == 0, " Collection", " Basics")
            ),
            "garment_group_no": col(types, 3, ty),
            "garment_group_name": col(types, 4, ty),
            "detail_desc": np.char.add(
                np.char.add(word.astype(str), " "),
                np.char.add(np.char.lower(type_name.astype(str)), " in soft fabric."),
            ),
        },
        schema={c: pl.String for c in schema.HM_ARTICLE_COLUMNS},
    )
    return frame


def _normalised(x: np.ndarray) -> np.ndarray:
    return x / x.sum()


def _scan_table(path: Path) -> pl.LazyFrame:
    """A Kaggle table (CSV, CSV.gz or parquet) with every column as text, as in the CSV."""
    if path.name.endswith(".parquet"):
        return pl.scan_parquet(path).select(pl.all().cast(pl.String))
    return pl.scan_csv(path, infer_schema=False)


def load_articles_table(path: Path) -> pl.DataFrame:
    """The real articles table (CSV, CSV.gz or parquet) as text columns, as it is in the file:
    first checked as `ingest` will check it (so that the generated tables ingest), and for the
    fields the generator needs."""
    if not path.is_file():
        raise DataError("not a file" if path.exists() else "file does not exist", file=path)
    read_articles(path, ",", "auto")
    frame = _scan_table(path).collect()
    need = ("article_id", "product_code", "department_no", "index_name")
    for column in need:
        if column not in frame.columns:
            raise DataError("the generator needs this articles column", file=path, column=column)
    return frame


@dataclass
class Catalogue:
    """What the sampler needs per article, in sorted order (department, product, article)."""

    order: np.ndarray  # sorted position -> row of the articles table
    dept: np.ndarray  # department index per position
    dept_bounds: np.ndarray  # (n_dept + 1,) first position of each department
    prod_lo: np.ndarray  # product range [lo, hi) per position (its colours)
    prod_hi: np.ndarray
    launch: np.ndarray  # launch day (0 = START)
    base_sek: np.ndarray
    markdown_day: np.ndarray
    markdown: np.ndarray  # price factor after markdown_day
    cum: np.ndarray  # (N_WEEKS * (n + 1),) weekly cumulative mass, see `_draw`
    dept_cum: np.ndarray  # (len(SEGMENTS) * N_WEEKS * (n_dept + 1),) segment x week taste

    @property
    def n(self) -> int:
        return len(self.order)

    @property
    def n_dept(self) -> int:
        return len(self.dept_bounds) - 1


def catalogue(articles: pl.DataFrame, seed: int, cal: dict[str, np.ndarray]) -> Catalogue:
    """Life cycles, seasons, prices and segment tastes of every article (vectorised)."""
    rng = np.random.default_rng([seed, 2])
    kinds = [c for c in ("product_type_name", "product_group_name", "garment_group_name")
             if c in articles.columns]  # fmt: skip
    text = (
        pl.concat_str([pl.col(c).fill_null("") for c in kinds], separator=" ").str.to_lowercase()
        if kinds
        else pl.lit("")
    )

    def text_col(name: str, alias: str) -> pl.Expr:
        expr = pl.col(name) if name in articles.columns else pl.lit("")
        return expr.cast(pl.String).fill_null("").alias(alias)

    frame = (
        articles.select(
            pl.col("article_id").cast(pl.String),
            pl.col("product_code").cast(pl.String),
            pl.col("department_no").cast(pl.String).alias("dept_key"),
            pl.col("index_name").cast(pl.String).fill_null(""),
            text_col("garment_group_name", "garment"),
            text_col("index_group_name", "index_group"),
            text_col("colour_group_name", "colour"),
            text.alias("text"),
        )
        .with_row_index("row")
        .with_columns(
            pl.col("dept_key").rank("dense").cast(pl.Int32).alias("dept") - 1,
            pl.col("product_code").rank("dense").cast(pl.Int32).alias("prod") - 1,
        )
        .sort("dept", "product_code", "article_id")
    )
    n = frame.height
    dept = frame["dept"].to_numpy()
    n_dept = int(dept.max()) + 1
    dept_bounds = np.searchsorted(dept, np.arange(n_dept + 1)).astype(np.int64)
    # product ranges: runs of one product_code within a department
    code = frame["product_code"].to_numpy()
    new = np.ones(n, bool)
    new[1:] = (code[1:] != code[:-1]) | (dept[1:] != dept[:-1])
    run_start = np.flatnonzero(new)
    run = np.cumsum(new) - 1
    run_end = np.append(run_start[1:], n)
    prod_lo, prod_hi = run_start[run], run_end[run]

    # life cycle: launch in product-code order, rise over ~1-2 weeks, decay over ~2 months
    prod = frame["prod"].to_numpy()
    n_prod = int(prod.max()) + 1
    p = prod / max(n_prod - 1, 1)
    launch = -LAUNCH_LEAD + p * (N_DAYS + LAUNCH_LEAD) + rng.normal(0, 12, n)
    rise = 2 + rng.lognormal(np.log(6), 0.5, n)
    decay = np.where(rng.random(n) < BASIC_SHARE, BASIC_DECAY, rng.lognormal(np.log(45), 0.6, n))
    base = rng.lognormal(0, BASE_SIGMA[0], n_prod)[prod] * rng.lognormal(0, BASE_SIGMA[1], n)
    base *= np.where(frame["colour"].to_numpy() == "Black", 1.6, 1.0)
    # seasons: summer and winter types swing with the day of the year, others barely
    summer = frame["text"].str.contains(SUMMER).to_numpy()
    winter = frame["text"].str.contains(WINTER).to_numpy()
    amp = np.where(summer | winter, 0.9, 0.12)
    amp = np.where(frame["text"].str.contains("swim|bikini").to_numpy(), 1.6, amp)
    peak = np.where(summer, 175.0, np.where(winter, 345.0, rng.uniform(0, 365, n)))
    # prices: SEK by garment group (children's cheaper), snapped to price points: x.99 below
    # 10 SEK, then every 5 SEK (14.99, 19.99, 24.99, ...)
    factor = frame["garment"].replace_strict(PRICE_FACTOR, default=1.0, return_dtype=pl.Float64)
    kids = frame["index_group"].to_numpy() == "Baby/Children"
    sek = 26.99 * factor.to_numpy() * np.where(kids, 0.65, 1.0) * rng.lognormal(0, 0.4, n)
    base_sek = np.where(sek < 10, np.round(sek) - 0.01, np.round(sek / 5) * 5 - 0.01)
    base_sek = np.maximum(base_sek, 1.99)
    markdown_day = (launch + rng.lognormal(np.log(120), 0.4, n)).astype(np.int64)
    markdown = rng.choice([0.5, 0.6, 0.7], n)

    # weekly mass of each article: base x life cycle x season x markdown demand
    mid = np.arange(N_WEEKS) * 7 + 3.0
    mass = np.empty((N_WEEKS, n))
    for w in range(N_WEEKS):  # one vector op per week (105), not per article
        age = mid[w] - launch
        life = np.where(age >= 0, -np.expm1(-(np.maximum(age, 0) + 1) / rise), 0.0)
        life *= np.exp(-np.maximum(age, 0) / decay)
        doy = (START + timedelta(days=int(mid[w]))).timetuple().tm_yday
        season = np.exp(amp * (np.cos(2 * np.pi * (doy - peak) / 365.25) - 1))
        boost = np.where(mid[w] >= markdown_day, 1.4, 1.0)
        if cal["sale"][min(int(mid[w]), N_DAYS - 1)]:
            boost = boost * np.where(age > 60, 1.2, 1.0)
        mass[w] = base * life * season * boost
    dept_mass = np.add.reduceat(mass, dept_bounds[:-1], axis=1)  # (weeks, depts)
    cum = _cumulative(mass)
    del mass

    # segment taste over departments: the index's taste x a per-segment department tilt
    dept_index = (
        frame.group_by("dept").agg(pl.col("index_name").mode().sort().first()).sort("dept")
    )["index_name"].to_list()
    taste = np.array(
        [[INDEX_TASTE[s].get(name, 0.15) for name in dept_index] for s in SEGMENTS]
    ) * rng.lognormal(0, 0.6, (len(SEGMENTS), n_dept))
    seg_mass = taste[:, None, :] * dept_mass[None, :, :]  # (segments, weeks, depts)
    dept_cum = _cumulative(seg_mass.reshape(-1, n_dept))
    return Catalogue(
        order=frame["row"].to_numpy().astype(np.int64),
        dept=dept.astype(np.int64),
        dept_bounds=dept_bounds,
        prod_lo=prod_lo.astype(np.int64),
        prod_hi=prod_hi.astype(np.int64),
        launch=launch,
        base_sek=base_sek,
        markdown_day=markdown_day,
        markdown=markdown,
        cum=cum,
        dept_cum=dept_cum,
    )


# ---------------------------------------------------------------------------------------------
# Customers


@dataclass
class Customers:
    """The customers table and the hidden behaviour of each customer."""

    table: pl.DataFrame  # Kaggle columns, in index order (written sorted by customer_id)
    rank: np.ndarray  # rank of customer_id (the written order)
    segment: np.ndarray
    start: np.ndarray  # first and last day of the customer's active window
    end: np.ndarray
    visits: np.ndarray  # expected number of visits (Poisson mean), 0 for never-buyers
    volume: np.ndarray  # (N_DAYS,) weights of the days for sampling visits
    basket: np.ndarray  # mean basket size
    online: np.ndarray  # logit of the online share
    repeat: np.ndarray  # chance that an article is a repeat purchase
    favourite: np.ndarray  # (n, 2) favourite departments


def make_customers(
    n: int, n_tx: int, n_postal: int, seed: int, cat: Catalogue, cal: dict[str, np.ndarray]
) -> Customers:
    """Customers with Kaggle-like marginals; visit rates scaled so the expected rows are `n_tx`."""
    rng = np.random.default_rng([seed, 0])
    ids = hex_ids(rng, n)
    # age: two peaks (students and young workers near 23, parents near 51) and a broad base
    comp = rng.choice(3, n, p=[0.42, 0.38, 0.20])
    age = np.select(
        [comp == 0, comp == 1],
        [rng.normal(23.5, 3.5, n), rng.normal(51, 7, n)],
        rng.uniform(16, 90, n),
    )
    age = np.clip(np.round(age), 16, 99)
    no_age = rng.random(n) < 0.0116
    band = np.where(no_age, len(AGE_BANDS) + 1, np.searchsorted(AGE_BANDS, age, side="right"))
    band = np.minimum(band, len(SEGMENT_BY_AGE) - 1)
    segment = _choice_rows(rng, SEGMENT_BY_AGE[band])
    fn = rng.random(n) < 0.347
    active = np.where(fn, rng.random(n) < 0.96, rng.random(n) < 0.012)
    club = np.array(["ACTIVE", "PRE-CREATE", "LEFT CLUB", None], dtype=object)[
        rng.choice(4, n, p=[0.9283, 0.0676, 0.0003, 0.0038])
    ]
    news = np.where(
        fn,
        np.where(rng.random(n) < 0.998, "Regularly", "Monthly"),
        np.where(rng.random(n) < 0.982, "NONE", None),
    ).astype(object)
    # postal codes: one default code for ~9% of customers, then a heavy tail of sizes
    n_postal = max(n_postal, 2)
    codes = hex_ids(rng, n_postal)
    tail = np.cumsum(rng.lognormal(0, 1.6, n_postal - 1))
    postal = np.where(
        rng.random(n) < 0.0877,
        0,
        1 + np.searchsorted(tail, rng.random(n) * tail[-1], side="right").clip(0, n_postal - 2),
    )
    table = pl.DataFrame(
        {
            "customer_id": ids,
            "FN": np.where(fn, 1.0, np.nan),
            "Active": np.where(active, 1.0, np.nan),
            "club_member_status": club,
            "fashion_news_frequency": news,
            "age": np.where(no_age, -1, age).astype(np.int64),
            "postal_code": codes[postal],
        },
        schema_overrides={"club_member_status": pl.String, "fashion_news_frequency": pl.String},
    ).with_columns(
        pl.col("FN", "Active").fill_nan(None),
        pl.when(pl.col("age") >= 0).then(pl.col("age")).alias("age"),
    )

    # behaviour: heavy-tailed activity, late joiners and churners, baskets, channel, repeats
    activity = rng.lognormal(0, 1.15, n)
    activity *= np.where(club == "PRE-CREATE", 0.4, 1.0) * np.where(fn, 1.3, 1.0)
    start = np.where(rng.random(n) < 0.6, 0, rng.integers(0, N_DAYS, n))
    end = np.where(rng.random(n) < 0.6, N_DAYS - 1, rng.integers(start, N_DAYS))
    basket = 1 + 2.1 * rng.lognormal(-0.18, 0.6, n)
    online = rng.beta(0.85, 0.34, n).clip(1e-3, 1 - 1e-3)
    repeat = rng.beta(*REPEAT_BETA, n)
    never = rng.random(n) < 0.007  # Kaggle: ~0.7% of customers never buy
    # Day weights for sampling visits, such that the expected rows per day follow the calendar:
    # customers' windows cover the period unevenly (and each buys at least once), so divide the
    # calendar by the expected coverage and repeat until it settles (a fixed point, 4 rounds).
    target = cal["volume"] / cal["volume"].mean()
    volume = target.copy()
    for _ in range(4):
        cdf = np.concatenate([[0.0], np.cumsum(volume)])
        mass = cdf[end + 1] - cdf[start]
        rate = np.where(never, 0.0, activity * mass / cdf[-1])
        scale = _solve_rate(rate, basket, n_tx)
        mu = scale * rate
        rows = np.where(never, 0.0, (mu + np.exp(-mu)) * basket)
        cover = np.zeros(N_DAYS + 1)
        np.add.at(cover, start, rows / mass)
        np.add.at(cover, end + 1, -rows / mass)
        volume = target / np.maximum(np.cumsum(cover)[:N_DAYS], 1e-12)
        volume /= volume.mean()
    # two favourite departments drawn from the segment's taste in the middle of the window
    week = ((start + end) // 2) // 7
    rows = np.repeat(segment * N_WEEKS + week, 2)
    fav, _ = _draw(cat.dept_cum, cat.n_dept + 1, rows, np.zeros_like(rows),
                   np.full_like(rows, cat.n_dept), rng.random(len(rows)))  # fmt: skip
    return Customers(
        table=table,
        rank=np.argsort(np.argsort(ids, kind="stable"), kind="stable"),
        segment=segment,
        start=start,
        end=end,
        visits=rate * scale,
        volume=volume,
        basket=basket,
        online=np.log(online / (1 - online)),
        repeat=repeat,
        favourite=fav.reshape(n, 2),
    )


def _solve_rate(rate: np.ndarray, basket: np.ndarray, target: float) -> float:
    """The factor s such that E[rows] = sum over buyers of E[max(Poisson(s*rate), 1)] * basket
    equals `target` (bisection; the expectation is increasing in s)."""
    buyers = rate > 0

    def rows(s: float) -> float:
        mu = s * rate[buyers]
        return float(((mu + np.exp(-mu)) * basket[buyers]).sum())

    lo, hi = 0.0, 1.0
    while rows(hi) < target:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if rows(mid) < target else (lo, mid)
    return (lo + hi) / 2


# ---------------------------------------------------------------------------------------------
# Transactions of one chunk of customers

SEG, FAV, DEPT, COLOUR, DUP, REPEAT, SHORT = range(7)


def chunk_transactions(
    first: int, cust: Customers, cat: Catalogue, cal: dict[str, np.ndarray], seed: int, chunk: int
) -> pl.DataFrame:
    """Rows (day, user, pos, price, channel) of customers first..first+CHUNK, grouped by
    customer and ordered by visit; `pos` is the article's sorted catalogue position."""
    rng = np.random.default_rng([seed, 1, chunk])
    users = np.arange(first, min(first + CHUNK, len(cust.visits)))
    n_visits = rng.poisson(cust.visits[users])
    n_visits = np.where(cust.visits[users] > 0, np.maximum(n_visits, 1), 0)
    vu = np.repeat(users, n_visits)
    # visit days within each customer's window, in proportion to the daily volume
    cdf = np.concatenate([[0.0], np.cumsum(cust.volume)])
    lo, hi = cdf[cust.start[vu]], cdf[cust.end[vu] + 1]
    day = np.searchsorted(cdf, lo + rng.random(len(vu)) * (hi - lo), side="right") - 1
    day = np.clip(day, cust.start[vu], cust.end[vu])
    order = np.lexsort((day, vu))
    vu, day = vu[order], day[order]
    p_online = 1 / (1 + np.exp(-(cust.online[vu] + cal["online"][day])))
    channel = np.where(rng.random(len(vu)) < p_online, 2, 1).astype(np.int8)
    size = np.minimum(rng.geometric(1 / cust.basket[vu]), 80)

    # rows: one per article of each basket
    n = int(size.sum())
    visit = np.repeat(np.arange(len(vu)), size)
    first_row = np.cumsum(size) - size  # first row of each visit
    pos_in = np.arange(n) - first_row[visit]
    u = np.repeat(vu, size)
    d = day[visit]
    week = d // 7
    user_first = np.zeros(len(users) + 1, np.int64)  # first row of each customer
    np.cumsum(np.bincount(u - first, minlength=len(users)), out=user_first[1:])
    earlier = first_row[visit] - user_first[u - first]  # rows of this customer's earlier visits

    # what each row is
    r, rep = rng.random(n), cust.repeat[u]
    anchor = pos_in == 0
    later = np.select(
        [r < P_DUP, r < P_DUP + P_COLOUR, r < P_DUP + P_COLOUR + P_DEPT,
         r < P_DUP + P_COLOUR + P_DEPT + rep, r < P_DUP + P_COLOUR + P_DEPT + rep + P_FAVOURITE],
        [DUP, COLOUR, DEPT, REPEAT, FAV], SEG,
    )  # fmt: skip
    first_kind = np.select([r < rep, r < rep + P_FAVOURITE_ANCHOR], [REPEAT, FAV], SEG)
    kind = np.where(anchor, first_kind, later)
    kind[(kind == REPEAT) & (earlier == 0)] = SEG  # nothing bought before yet
    # a visit soon after another one re-buys some of its articles (another size, a gift...)
    gap = np.full(len(vu), N_DAYS)
    gap[1:] = np.where(vu[1:] == vu[:-1], day[1:] - day[:-1], N_DAYS)
    p_short = P_SHORT * SHORT_DECAY ** (gap.clip(1, SHORT_DAYS) - 1.0)
    kind[(gap[visit] <= SHORT_DAYS) & (rng.random(n) < p_short[visit])] = SHORT
    anchor_row = first_row[visit]
    anchor_repeats = np.isin(kind[anchor_row], (REPEAT, SHORT))  # its department is unknown
    kind[((kind == DEPT) | (kind == COLOUR)) & anchor_repeats] = FAV

    # departments of the fresh rows, then their articles (one vectorised draw for all)
    seg_row = cust.segment[u] * N_WEEKS + week
    zeros = np.zeros(n, np.int64)
    seg_dept, _ = _draw(cat.dept_cum, cat.n_dept + 1, seg_row, zeros,
                        np.full(n, cat.n_dept), rng.random(n))  # fmt: skip
    fav_dept = cust.favourite[u, (rng.random(n) < 0.5).astype(np.int64)]
    dept = np.where(kind == FAV, fav_dept, seg_dept)
    dept = np.where(kind == DEPT, dept[anchor_row], dept)
    lo, hi = cat.dept_bounds[dept], cat.dept_bounds[dept + 1]
    pos, mass = _draw(cat.cum, cat.n + 1, week, lo, hi, rng.random(n))
    empty = mass <= 0  # a department with nothing on sale yet: the segment's choice instead
    if empty.any():
        lo, hi = cat.dept_bounds[seg_dept[empty]], cat.dept_bounds[seg_dept[empty] + 1]
        pos[empty], _ = _draw(cat.cum, cat.n + 1, week[empty], lo, hi, rng.random(empty.sum()))

    # another colour of the anchor's product (by popularity that week), else its department
    colour = np.flatnonzero(kind == COLOUR)
    ref = pos[anchor_row[colour]]
    plo, phi = cat.prod_lo[ref], cat.prod_hi[ref]
    w = week[colour]
    before, _ = _draw(cat.cum, cat.n + 1, w, plo, ref, rng.random(len(colour)))
    after, _ = _draw(cat.cum, cat.n + 1, w, ref + 1, phi, rng.random(len(colour)))
    base = w.astype(np.int64) * (cat.n + 1)
    m_before = cat.cum[base + ref] - cat.cum[base + plo]
    m_after = cat.cum[base + phi] - cat.cum[base + ref + 1]
    total = m_before + m_after
    pick = np.where(rng.random(len(colour)) * total < m_before, before, after)
    none = total <= 0
    if none.any():
        dlo, dhi = cat.dept_bounds[cat.dept[ref[none]]], cat.dept_bounds[cat.dept[ref[none]] + 1]
        pick[none], _ = _draw(cat.cum, cat.n + 1, w[none], dlo, dhi, rng.random(none.sum()))
    pos[colour] = pick

    # copies: quantity > 1 copies the previous row, a repeat copies an earlier visit's row
    # (recent ones more likely); chains of copies are followed to the original row
    src = np.arange(n)
    dup = kind == DUP
    src[dup] -= 1
    rp = np.flatnonzero(kind == REPEAT)
    back = np.floor(earlier[rp] * rng.random(len(rp)) ** 3).astype(np.int64)
    src[rp] = first_row[visit[rp]] - 1 - back
    sh = np.flatnonzero(kind == SHORT)
    prev = visit[sh] - 1
    src[sh] = first_row[prev] + np.floor(size[prev] * rng.random(len(sh))).astype(np.int64)
    orig = _resolve(src)
    # customers rarely buy by chance what they already own: a fresh row whose article the
    # customer bought on an earlier day is drawn again from its department (REDRAWS rounds)
    fresh = np.flatnonzero(orig == np.arange(n))
    for _ in range(REDRAWS):
        again = fresh[_bought_before(u[fresh], pos[fresh], d[fresh], u, pos[orig], d, cat.n)]
        if not again.size:
            break
        dep = cat.dept[pos[again]]
        pos[again], _ = _draw(cat.cum, cat.n + 1, week[again], cat.dept_bounds[dep],
                              cat.dept_bounds[dep + 1], rng.random(len(again)))  # fmt: skip
    pos = pos[orig]

    # price: list price, markdown late in life and in sales, a discount on some rows; a
    # quantity > 1 row costs what the row it copies costs
    art_launch = cat.launch[pos]
    factor = np.where(d >= cat.markdown_day[pos], cat.markdown[pos], 1.0)
    factor *= np.where(cal["sale"][d] & (factor == 1.0) & (d - art_launch > 60), 0.8, 1.0)
    noise = rng.choice(PRICE_NOISE[0], n, p=PRICE_NOISE[1])
    dsrc = np.where(dup, np.arange(n) - 1, np.arange(n))
    noise = noise[_resolve(dsrc)]
    cents = np.round(cat.base_sek[pos] * factor * noise * 100)
    return pl.DataFrame(
        {
            "day": d.astype(np.int16),
            "user": u.astype(np.int32),
            "pos": pos.astype(np.int32),
            "price": cents / 100 / PRICE_UNIT,
            "sales_channel_id": channel[visit],
        }
    )


# ---------------------------------------------------------------------------------------------
# The whole generator


@dataclass
class World:
    """Everything the transactions are drawn from: the articles table, the calendar, the
    catalogue's life cycles and tastes, and the customers with their hidden behaviour."""

    articles: pl.DataFrame
    calendar: dict[str, np.ndarray]
    catalogue: Catalogue
    customers: Customers


def world(scale: float = 1.0, seed: int = 0, articles: Path | None = None) -> World:
    """The generator's state before any transaction is drawn (deterministic by `seed`), as
    `generate` builds it; `benchmarks/synthetic_ceiling.py` reads the hidden behaviour."""
    cal = _calendar()
    if articles is not None:
        art = load_articles_table(articles)
    else:
        art = synth_articles(max(1000, round(HM_ARTICLES * min(1.0, scale**0.5))), seed)
    n_customers = max(10, round(HM_CUSTOMERS * scale))
    n_tx = max(100, round(HM_TRANSACTIONS * scale))
    log.info("generate: %s customers, ~%s transactions, %s articles", f"{n_customers:,}",
             f"{n_tx:,}", f"{art.height:,}")  # fmt: skip
    cat = catalogue(art, seed, cal)
    cust = make_customers(n_customers, n_tx, round(HM_POSTAL_CODES * scale), seed, cat, cal)
    return World(art, cal, cat, cust)


def generate(
    out: str | Path,
    scale: float = 1.0,
    seed: int = 0,
    fmt: Format = "csv.gz",
    articles: str | Path | None = None,
) -> dict:
    """Write transactions_train, articles and customers (Kaggle format) to `out`.

    `articles`: the real articles table (all of it is used at every scale); without it an
    H&M-like table of 105,542 * sqrt(scale) articles is made up (at least 1,000, and 105,542
    for any scale >= 1). Returns (and writes to `out/generator.json`) the parameters and the
    row counts.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if not 0 < scale <= 10:
        raise ConfigError(f"--scale must be in (0, 10], not {scale}")
    if seed < 0:
        raise ConfigError(f"--seed must be 0 or more, not {seed}")
    out = Path(out)
    # the tables written here replace those of the same name: never a user's own data
    check_own_directory(out, "generator.json", "empty, nor generated data", "write into")
    if articles is not None:
        articles = Path(articles)
    w = world(scale, seed, articles)
    out.mkdir(parents=True, exist_ok=True)
    art, cal, cat, cust = w.articles, w.calendar, w.catalogue, w.customers
    n_customers = len(cust.visits)
    ext = "csv.gz" if fmt == "csv.gz" else "parquet"

    tmp = Path(tempfile.mkdtemp(prefix=".generate-", dir=out))
    try:
        # 1. transactions per customer chunk, split by month into small parquet parts
        n_chunks = -(-n_customers // CHUNK)
        months = int(cal["month"].max()) + 1
        for c in tqdm(range(n_chunks), desc="generate", unit="chunk", disable=n_chunks < 3):
            part = chunk_transactions(c * CHUNK, cust, cat, cal, seed, c)
            part = part.with_columns(pl.Series("month", cal["month"][part["day"].to_numpy()]))
            for (m,), frame in part.partition_by("month", as_dict=True).items():
                frame.drop("month").write_parquet(tmp / f"m{m:02d}-c{c:05d}.parquet")
        # 2. month by month: sort by (t_dat, customer_id) and append to the output
        ids = cust.table["customer_id"]
        article_ids = art["article_id"].cast(pl.String).gather(cat.order)
        rank = pl.Series(cust.rank.astype(np.int32))
        tx_path = out / f"transactions_train.{ext}"
        sink = _Sink(tx_path, fmt)
        total = 0
        for m in tqdm(range(months), desc="write", unit="month", disable=n_chunks < 3):
            parts = sorted(tmp.glob(f"m{m:02d}-c*.parquet"))
            if not parts:
                continue
            frame = pl.concat([pl.read_parquet(p) for p in parts])
            frame = frame.with_columns(rank.gather(frame["user"]).alias("_rank")).sort(
                "day", "_rank", maintain_order=True
            )
            frame = frame.select(
                (pl.lit(START) + pl.duration(days=pl.col("day").cast(pl.Int64))).alias("t_dat"),
                ids.gather(frame["user"]).alias("customer_id"),
                article_ids.gather(frame["pos"]).alias("article_id"),
                "price",
                "sales_channel_id",
            )
            total += frame.height
            sink.write(frame)
            for p in parts:
                p.unlink()
        sink.close()
        # 3. customers (sorted by id, as in Kaggle) and articles
        _write(cust.table.sort("customer_id"), out / f"customers.{ext}", fmt)
        art_out = out / f"articles.{ext}"
        if articles is not None and articles.name.endswith(f".{ext}"):
            shutil.copyfile(articles, art_out)  # the real file, byte for byte
        else:
            _write(art, art_out, fmt)
        for other in FORMATS:  # a table in two formats would be ambiguous for ingest
            if other != fmt:
                for table in schema.TABLES:
                    (out / f"{table}.{other}").unlink(missing_ok=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    info = {
        "generator": "fashionrec.data.synthetic",
        "scale": scale,
        "seed": seed,
        "format": fmt,
        "articles_source": str(articles) if articles is not None else "synthetic",
        "rows": {"transactions": total, "customers": n_customers, "articles": art.height},
        "date_range": [str(START), str(END)],
    }
    write_text(out / "generator.json", json.dumps(info, indent=2) + "\n")
    log.info("generate: %s transactions written to %s", f"{total:,}", out)
    return info


class _Sink:
    """Appends frames to one CSV.gz (a single gzip stream, mtime 0: same bytes every run) or
    one parquet file, written to a temporary name and renamed when complete."""

    def __init__(self, path: Path, fmt: str) -> None:
        self.path, self.fmt = path, fmt
        self.tmp = path.with_name(f".{path.name}.tmp")
        self.parts: list[Path] = []
        if fmt == "csv.gz":
            self.raw = self.tmp.open("wb")
            self.gz = gzip.GzipFile(filename="", mode="wb", fileobj=self.raw, mtime=0,
                                    compresslevel=GZIP_LEVEL)  # fmt: skip
            self.header = True

    def write(self, frame: pl.DataFrame) -> None:
        if self.fmt == "csv.gz":
            frame.write_csv(self.gz, include_header=self.header)
            self.header = False
        else:
            part = self.tmp.with_name(f"{self.tmp.name}.{len(self.parts):03d}")
            frame.write_parquet(part)
            self.parts.append(part)

    def close(self) -> None:
        if self.fmt == "csv.gz":
            self.gz.close()
            self.raw.close()
        else:
            pl.scan_parquet(self.parts).sink_parquet(self.tmp)
            for part in self.parts:
                part.unlink()
        os.replace(self.tmp, self.path)


def _write(frame: pl.DataFrame, path: Path, fmt: str) -> None:
    sink = _Sink(path, fmt)
    sink.write(frame)
    sink.close()


# ---------------------------------------------------------------------------------------------
# Calibration against the real final week


def week_stats(directory: str | Path, days: int = 7, scale: float = 1.0) -> dict[str, float]:
    """Distribution statistics of the last `days` days of the transactions in `directory`.

    Counts (rows, buyers) are divided by `scale` so that a generated sample compares with the
    full-size real data; the others are shares and quantiles.
    """
    directory = Path(directory)
    tx_path = find_table(directory, "transactions_train")
    art_path = find_table(directory, "articles")
    if tx_path is None or art_path is None:
        raise DataError("needs transactions_train and articles tables", file=directory)
    lf = _scan_table(tx_path).with_columns(pl.col("t_dat").str.to_date("%Y-%m-%d"))
    last = lf.select(pl.col("t_dat").max()).collect().item()
    tx = (
        lf.filter(pl.col("t_dat") > last - timedelta(days=days))
        .with_columns(
            pl.col("price").cast(pl.Float64),
            pl.col("sales_channel_id").cast(pl.Int8),
        )
        .collect(engine="streaming")
    )
    arts = (
        _scan_table(art_path)
        .select("article_id", "product_code", "department_no")
        .collect()
        .with_row_index("row")
        .with_columns((pl.col("row") / pl.len()).alias("catalogue_pos"))
    )
    tx = tx.join(arts, on="article_id", how="left")
    per_buyer = tx.group_by("customer_id").len()["len"]
    per_article = tx.group_by("article_id").len()["len"].sort(descending=True).to_numpy()
    n_sold = len(per_article)
    shares = np.cumsum(per_article) / per_article.sum()
    baskets = tx.group_by("customer_id", "t_dat").agg(
        pl.len().alias("rows"),
        pl.col("article_id").n_unique().alias("articles"),
        pl.col("product_code").n_unique().alias("products"),
        pl.col("department_no").n_unique().alias("departments"),
    )
    multi = baskets.filter(pl.col("articles") > 1)
    later = tx.with_columns(
        pl.col("t_dat").min().over("customer_id").alias("first_day"),
        pl.col("t_dat").min().over("customer_id", "article_id").alias("first_buy"),
    ).filter(pl.col("t_dat") > pl.col("first_day"))
    price = tx["price"]
    return {
        "transactions / scale": tx.height / scale,
        "buyers / scale": per_buyer.len() / scale,
        "articles sold": float(n_sold),
        "rows of the top 1% articles": float(shares[max(n_sold // 100, 1) - 1]),
        "rows of the top 10% articles": float(shares[max(n_sold // 10, 1) - 1]),
        "articles sold once (share)": float((per_article == 1).mean()),
        "median catalogue position of rows": float(tx["catalogue_pos"].median()),
        "purchases per buyer: mean": float(per_buyer.mean()),
        "purchases per buyer: p50": float(per_buyer.quantile(0.5)),
        "purchases per buyer: p90": float(per_buyer.quantile(0.9)),
        "purchases per buyer: p99": float(per_buyer.quantile(0.99)),
        "rows per basket (customer-day)": float(baskets["rows"].mean()),
        "repeat: duplicate (customer, article) rows": 1
        - tx.select("customer_id", "article_id").unique().height / max(tx.height, 1),
        "repeat: later-day rows of an article bought earlier in the week": float(
            (later["t_dat"] > later["first_buy"]).mean() if later.height else 0.0
        ),
        "baskets (>1 article) with 2 colours of a product": float(
            (multi["articles"] > multi["products"]).mean()
        ),
        "baskets (>1 article) with 2 articles of a department": float(
            (multi["articles"] > multi["departments"]).mean()
        ),
        "online share (sales_channel_id 2)": float((tx["sales_channel_id"] == 2).mean()),
        **{f"price p{int(q * 100)}": float(price.quantile(q)) for q in (0.01, 0.1, 0.5, 0.9, 0.99)},
        "price max": float(price.max()),
    }


# The whole real H&M history (2018-09-20..2020-09-22) cannot be measured on the one real week in
# ../shared; these come from a public analysis of the full Kaggle file (docs/scale.md): of its
# 27,306,439 (customer, article) pairs, 1,141,216 are bought on two days or more and 100,310 on
# three or more; of its 1,268,956 re-buys (a pair's next purchase day), 521,203 come 1-5 days
# after the previous one.
HM_HISTORY = {
    "whole history: (customer, article) pairs bought on more than one day": 1_141_216 / 27_306_439,
    "whole history: pairs bought on three days or more": 100_310 / 27_306_439,
    "whole history: re-buys 1-5 days after the previous purchase (share)": 521_203 / 1_268_956,
}


def history_stats(directory: str | Path) -> dict[str, float]:
    """How often and how soon customers buy an article again, over the whole transactions table
    in `directory` (the statistics of `HM_HISTORY`)."""
    tx_path = find_table(Path(directory), "transactions_train")
    if tx_path is None:
        raise DataError("needs a transactions_train table", file=directory)
    days = (
        _scan_table(tx_path)
        .select("customer_id", "article_id", pl.col("t_dat").str.to_date("%Y-%m-%d"))
        .unique()
        .sort("customer_id", "article_id", "t_dat")
        .with_columns(pl.col("t_dat").diff().over("customer_id", "article_id").alias("gap"))
    )
    pairs = (
        days.group_by("customer_id", "article_id")
        .len()
        .select(
            (pl.col("len") > 1).mean().alias("several"), (pl.col("len") > 2).mean().alias("three")
        )
    )
    gaps = days.select(
        (pl.col("gap").dt.total_days() <= 5).sum() / pl.col("gap").is_not_null().sum().clip(1)
    )
    pair_stats, gap_stats = pl.collect_all([pairs, gaps], engine="streaming")
    several, three = pair_stats.row(0)
    soon = gap_stats.item()
    return dict(zip(HM_HISTORY, (float(several), float(three), float(soon)), strict=True))


def calibrate(generated_dir: str | Path, real_dir: str | Path) -> pl.DataFrame:
    """The final week of generated vs real data: one row per statistic (`week_stats`), with the
    ratio generated / real. The generated counts are divided by the scale in generator.json."""
    generated_dir = Path(generated_dir)
    meta_path = generated_dir / "generator.json"
    scale = json.loads(meta_path.read_text())["scale"] if meta_path.exists() else 1.0
    real = week_stats(real_dir)
    gen = week_stats(generated_dir, scale=scale)
    return pl.DataFrame(
        {
            "statistic": list(real),
            "real": list(real.values()),
            "generated": [gen[k] for k in real],
        }
    ).with_columns((pl.col("generated") / pl.col("real")).alias("ratio"))


def calibration_markdown(table: pl.DataFrame) -> str:
    """A calibration table as markdown."""

    def fmt(x: float) -> str:
        return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.4g}"

    lines = ["| statistic | real | generated | ratio |", "|---|---:|---:|---:|"]
    for row in table.iter_rows(named=True):
        lines.append(
            f"| {row['statistic']} | {fmt(row['real'])} | {fmt(row['generated'])} | "
            f"{row['ratio']:.2f} |"
        )
    return "\n".join(lines)
