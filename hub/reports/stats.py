"""The statistics of the reports, as plain functions (docs/reports.md has the formulas).

- satisfied levels per scale (DESIGN.md 4.5: level 1 is the most satisfied on every scale);
- the Wilson score interval of a proportion;
- sample adequacy: the seed-003 table and n = N / (1 + N·e²);
- shrinkage of small units toward the office mean (beta-binomial empirical Bayes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# Which levels count as "hài lòng" on each scale. Level 1 is "Rất hài lòng" everywhere; on the
# 5-level SIPAS questionnaire level 3 is "Bình thường" (neutral), which is not satisfied.
SATISFIED_LEVELS: dict[int, frozenset[int]] = {
    3: frozenset({1, 2}),  # Rất hài lòng / Hài lòng / Không hài lòng
    4: frozenset({1, 2}),  # Rất hài lòng / Hài lòng / Không hài lòng / Rất không hài lòng
    5: frozenset({1, 2}),  # ... / Bình thường / Không hài lòng / Rất không hài lòng
}
Z95 = 1.959963984540054  # the 97.5 % quantile of the standard normal distribution
MARGIN = 0.05  # e in n = N / (1 + N·e²): ±5 points at 95 % confidence
PRIOR_DEFAULT = 10.0  # prior worth 10 ratings when the units are too few to estimate it
PRIOR_MAX = 1000.0  # no unit is pulled by more than 1,000 ratings' worth of office mean


def is_satisfied(level: int, scale: int) -> bool:
    return level in SATISFIED_LEVELS.get(scale, frozenset())


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float | None, float | None]:
    """The Wilson score interval of successes/n; (None, None) for n = 0."""
    if n <= 0:
        return None, None
    p = successes / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def required_by_table(cases: int) -> int:
    """Seed 003: minimum ratings for a unit by its number of cases (under 100: every case;
    100-999: 100; 1,000-4,999: 200; 5,000 and more: 500)."""
    if cases < 100:
        return cases
    if cases < 1000:
        return 100
    if cases < 5000:
        return 200
    return 500


def required_by_formula(cases: int, margin: float = MARGIN) -> int:
    """n = N / (1 + N·e²), rounded up (Yamane's sample size for a finite population)."""
    if cases <= 0:
        return 0
    if margin == MARGIN:  # exact integer arithmetic: N / (1 + N/400) = 400 N / (400 + N)
        return -(-400 * cases // (400 + cases))
    return math.ceil(cases / (1 + cases * margin * margin) - 1e-9)


def adequacy(sample: int, cases: int) -> dict[str, object]:
    """The sample (valid ratings) against both rules; unknown when no case was recorded."""
    if cases <= 0:
        return {
            "population": cases,
            "required": None,
            "ok": None,
            "required_formula": None,
            "ok_formula": None,
        }
    table, formula = required_by_table(cases), required_by_formula(cases)
    return {
        "population": cases,
        "required": table,
        "ok": sample >= table,
        "required_formula": formula,
        "ok_formula": sample >= formula,
    }


@dataclass(frozen=True)
class Prior:
    """Beta prior of the units' satisfaction rates: mean ``mean``, worth ``strength`` ratings."""

    mean: float
    strength: float


def estimate_prior(units: Sequence[tuple[int, int]]) -> Prior | None:
    """Method-of-moments beta-binomial prior from (satisfied, valid) per unit.

    p0 = Σs / Σn; Q = Σ n_i (p_i − p0)²; the spread between units beyond chance is
    τ² = (Q − (k − 1)·p0(1 − p0)) / (N − Σn_i²/N); the prior's strength is
    m = p0(1 − p0)/τ² − 1, kept within [1, PRIOR_MAX] (PRIOR_MAX when τ² ≤ 0: the units do not
    differ more than chance would make them). Fewer than 3 units, or p0 of 0 or 1: m = PRIOR_DEFAULT.
    """
    units = [(s, n) for s, n in units if n > 0]
    if not units:
        return None
    total = sum(n for _, n in units)
    p0 = sum(s for s, _ in units) / total
    k = len(units)
    if k < 3 or p0 <= 0.0 or p0 >= 1.0:
        return Prior(p0, PRIOR_DEFAULT)
    q = sum(n * (s / n - p0) ** 2 for s, n in units)
    denom = total - sum(n * n for _, n in units) / total
    tau2 = (q - (k - 1) * p0 * (1 - p0)) / denom if denom > 0 else 0.0
    if tau2 <= 0:
        return Prior(p0, PRIOR_MAX)
    return Prior(p0, min(max(p0 * (1 - p0) / tau2 - 1, 1.0), PRIOR_MAX))


def shrink(satisfied: int, n: int, prior: Prior) -> float:
    """The posterior mean (s + m·p0) / (n + m): a unit with few ratings stays near the mean."""
    return (satisfied + prior.strength * prior.mean) / (n + prior.strength)
