"""A/B tests and multi-armed bandits over models, with the statistics to read them."""

from __future__ import annotations

import hashlib
import math

import numpy as np
from scipy import stats

KINDS = ("ab", "epsilon", "thompson")


def ab_arm(customer_id: str, experiment: str, arms: list[str]) -> str:
    """Deterministic assignment: the same customer always sees the same arm of an experiment."""
    digest = hashlib.sha256(f"{experiment}:{customer_id}".encode()).digest()
    return arms[int.from_bytes(digest[:8], "big") % len(arms)]


def epsilon_greedy(
    arm_stats: dict[str, dict[str, int]], arms: list[str], epsilon: float, rng: np.random.Generator
) -> str:
    """Explore a random arm with probability epsilon, else the arm with the best CTR so far."""
    if rng.random() < epsilon:
        return arms[int(rng.integers(len(arms)))]
    ctr = [_ctr(arm_stats.get(a)) for a in arms]
    return arms[int(np.argmax(ctr))]


def thompson(
    arm_stats: dict[str, dict[str, int]], arms: list[str], rng: np.random.Generator
) -> str:
    """Sample each arm's CTR from Beta(1 + clicks, 1 + misses) and play the best sample."""
    draws = []
    for a in arms:
        s = arm_stats.get(a, {"impressions": 0, "clicks": 0})
        clicks = min(s["clicks"], s["impressions"])
        draws.append(rng.beta(1 + clicks, 1 + s["impressions"] - clicks))
    return arms[int(np.argmax(draws))]


def choose(
    experiment: dict,
    customer_id: str,
    arm_stats: dict[str, dict[str, int]],
    rng: np.random.Generator,
) -> str:
    """The arm that serves this request."""
    arms, kind = experiment["arms"], experiment["kind"]
    if kind == "ab":
        return ab_arm(customer_id, experiment["name"], arms)
    if kind == "epsilon":
        return epsilon_greedy(arm_stats, arms, float(experiment["params"].get("epsilon", 0.1)), rng)
    return thompson(arm_stats, arms, rng)


def _ctr(s: dict[str, int] | None) -> float:
    return s["clicks"] / s["impressions"] if s and s["impressions"] else 0.0


def wilson(clicks: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score 95% interval of a click-through rate (sound for small counts).

    >>> [round(x, 4) for x in wilson(10, 100)]
    [0.0552, 0.1744]
    """
    if n == 0:
        return (0.0, 1.0)
    p = min(clicks / n, 1.0)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def two_proportion_test(c1: int, n1: int, c2: int, n2: int) -> tuple[float, float]:
    """z statistic and two-sided p-value for CTR1 == CTR2 (pooled two-proportion z-test).

    >>> # pooled 0.065, se = sqrt(0.065 * 0.935 * 2 / 1000) = 0.011025, z = -0.03 / se
    >>> z, p = two_proportion_test(50, 1000, 80, 1000)
    >>> round(z, 3), round(p, 4)
    (-2.721, 0.0065)
    """
    if n1 == 0 or n2 == 0:
        return (0.0, 1.0)
    pooled = (c1 + c2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return (0.0, 1.0)
    z = (c1 / n1 - c2 / n2) / se
    return (z, float(2 * stats.norm.sf(abs(z))))


def report(experiment: dict, arm_stats: dict[str, dict[str, int]]) -> dict:
    """Arms with impressions, clicks, CTR and its interval; for two arms, the significance test."""
    rows = []
    for arm in experiment["arms"]:
        s = arm_stats.get(arm, {"impressions": 0, "clicks": 0})
        lo, hi = wilson(s["clicks"], s["impressions"])
        rows.append({"arm": arm, **s, "ctr": _ctr(s), "ctr_low": lo, "ctr_high": hi})
    out = {**experiment, "rows": rows}
    if len(rows) == 2:
        a, b = rows
        z, p = two_proportion_test(a["clicks"], a["impressions"], b["clicks"], b["impressions"])
        out |= {"z": z, "p_value": p, "significant": p < 0.05}
    return out
