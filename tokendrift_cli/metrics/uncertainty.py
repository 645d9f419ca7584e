"""How sure a quality number is: its standard error over samples, and mean ± SD over seeds.

Standard error (SE) over the samples of one set, the spread the number would have were the
samples drawn again (docs/metrics.md):
- a mean over samples (sample entropy, acceptance): SD / √n, with the n − 1 SD;
- Gen.-PPL = exp(R), R = Σ NLLᵢ / Σ tokensᵢ, a ratio of sums over samples: the delta method,
  SE(R) = √(Σ (NLLᵢ − R·tokensᵢ)² / (n(n − 1))) / mean(tokens), and SE(Gen.-PPL) = Gen.-PPL · SE(R);
- n-gram JSD, a divergence of pooled counts and no mean over samples: the SD of its value over
  bootstrap resamples of the samples (text_stats.ngram_jsd_se).

Over seeds (runs whose specs differ only in their seed): mean and the n − 1 SD of each metric.
"""

from __future__ import annotations

import math
import statistics
from typing import Sequence


def mean_se(values: Sequence[float]) -> float | None:
    """SE of the mean of `values`; None for fewer than two (no spread to measure)."""
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None


def ratio_se(numerators: Sequence[float], denominators: Sequence[float]) -> float | None:
    """Delta-method SE of R = Σ aᵢ / Σ bᵢ over pairs (aᵢ, bᵢ) drawn independently."""
    n = len(numerators)
    if n < 2 or sum(denominators) <= 0:
        return None
    ratio = sum(numerators) / sum(denominators)
    residual = sum((a - ratio * b) ** 2 for a, b in zip(numerators, denominators))
    return math.sqrt(residual / (n * (n - 1))) / (sum(denominators) / n)


def gen_ppl_se(nll_per_sample: Sequence[float], tokens_per_sample: Sequence[float]) -> float | None:
    """SE of exp(Σ NLL / Σ tokens): the delta method through the ratio and the exponential."""
    se = ratio_se(nll_per_sample, tokens_per_sample)
    return None if se is None else math.exp(sum(nll_per_sample) / sum(tokens_per_sample)) * se


def mean_sd(rows: Sequence[dict], metrics: Sequence[str]) -> dict:
    """{metric: mean, metric_sd: SD} over `rows` (one per seed) for each metric they all carry;
    the SD is None for a single row."""
    out: dict = {}
    for metric in metrics:
        values = [row[metric] for row in rows if row.get(metric) is not None]
        if len(values) == len(rows) and values:
            out[metric] = statistics.mean(values)
            out[f"{metric}_sd"] = statistics.stdev(values) if len(values) > 1 else None
    return out
