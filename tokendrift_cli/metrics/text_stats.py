"""Sample statistics beside Gen.-PPL: per-sample unigram entropy and n-gram Jensen–Shannon divergence."""

from __future__ import annotations

import math
from collections import Counter
from typing import Hashable, Sequence

from tokendrift_cli.metrics.uncertainty import mean_se


def sample_entropy(samples: Sequence[Sequence[Hashable]]) -> float:
    """Mean over samples of the entropy (nats) of each sample's own token counts, as the DUO
    repository's `record_entropy` computes it. Repetitive samples score low."""
    return sample_entropy_with_se(samples)["entropy"]


def sample_entropy_with_se(samples: Sequence[Sequence[Hashable]]) -> dict:
    """{entropy, entropy_se}: sample_entropy and its standard error over samples, as every report gives them."""
    entropies = sample_entropies(samples)
    return {"entropy": sum(entropies) / len(entropies) if entropies else float("nan"), "entropy_se": mean_se(entropies)}


def sample_entropies(samples: Sequence[Sequence[Hashable]]) -> list[float]:
    """The entropy (nats) of each sample's own token counts."""
    entropies = []
    for sample in samples:
        counts = Counter(sample)
        total = sum(counts.values())
        entropies.append(-sum(c / total * math.log(c / total) for c in counts.values()))
    return entropies


def ngram_counts(texts: Sequence[Sequence[str]], n: int) -> Counter:
    return Counter(tuple(words[i : i + n]) for words in texts for i in range(len(words) - n + 1))


def jensen_shannon(p: Counter, q: Counter) -> float:
    """JSD in bits between two count tables (normalised here): 0 for equal, 1 for disjoint."""
    p_total, q_total = sum(p.values()), sum(q.values())
    if not p_total or not q_total:
        return float("nan")
    divergence = 0.0
    for key in sorted(p.keys() | q.keys()):  # a fixed order: a set's follows the per-process string hash, and so would the sum's last bits
        a, b = p.get(key, 0) / p_total, q.get(key, 0) / q_total
        m = (a + b) / 2
        divergence += (a * math.log2(a / m) if a else 0.0) + (b * math.log2(b / m) if b else 0.0)
    return divergence / 2


def ngram_jsd(samples: Sequence[str], reference: Sequence[str], n_max: int = 4) -> dict[str, float]:
    """JSD between the word n-gram distributions (n = 1..n_max) of samples and held-out reference
    text, and their mean: a collapsed sampler that games Gen.-PPL shows up here."""
    sample_words = [text.split() for text in samples]
    reference_words = [text.split() for text in reference]
    result = {f"jsd_{n}": jensen_shannon(ngram_counts(sample_words, n), ngram_counts(reference_words, n)) for n in range(1, n_max + 1)}
    result["mean"] = sum(result.values()) / n_max
    return result


def ngram_jsd_se(samples: Sequence[str], reference: Sequence[str], n_max: int = 4, resamples: int = 200, seed: int = 0) -> float | None:
    """SE of ngram_jsd's mean: the SD of its value over `resamples` bootstrap resamples of the
    samples (drawn with replacement, seeded; the reference is held fixed). Each resample's counts
    are the per-sample counts weighted by how often the sample was drawn."""
    import numpy as np

    count = len(samples)
    if count < 2:
        return None
    draws = np.random.default_rng(seed).integers(0, count, size=(resamples, count))
    weights = np.stack([np.bincount(row, minlength=count) for row in draws]).astype(np.float64)  # [resamples, samples]
    sample_words = [text.split() for text in samples]
    reference_words = [text.split() for text in reference]
    replicates = np.zeros(resamples)
    for n in range(1, n_max + 1):
        reference_counts = ngram_counts(reference_words, n)
        index: dict = {key: i for i, key in enumerate(sorted(reference_counts))}
        rows, columns, values = [], [], []
        for row, words in enumerate(sample_words):
            for key, value in ngram_counts([words], n).items():
                rows.append(row)
                columns.append(index.setdefault(key, len(index)))
                values.append(value)
        q = np.zeros(len(index))
        q[[index[key] for key in reference_counts]] = list(reference_counts.values())
        if not q.sum() or not values:
            return None  # the JSD itself is undefined (no n-grams)
        q /= q.sum()
        rows_a, columns_a, values_a = np.array(rows), np.array(columns), np.array(values, dtype=np.float64)
        for b in range(resamples):
            p = np.bincount(columns_a, weights=weights[b, rows_a] * values_a, minlength=len(index))
            if not p.sum():
                return None  # a resample of samples too short for n-grams: ngram_jsd is undefined there
            replicates[b] += _jsd_bits(p / p.sum(), q) / n_max
    return float(np.std(replicates, ddof=1))


def _jsd_bits(p, q) -> float:
    """jensen_shannon of two normalised numpy vectors."""
    import numpy as np

    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log2(p / m), 0.0) + np.where(q > 0, q * np.log2(q / m), 0.0)
    return float(terms.sum() / 2)
