"""Sample statistics beside Gen.-PPL: per-sample unigram entropy and n-gram Jensen–Shannon divergence."""

from __future__ import annotations

import math
from collections import Counter
from typing import Hashable, Sequence


def sample_entropy(samples: Sequence[Sequence[Hashable]]) -> float:
    """Mean over samples of the entropy (nats) of each sample's own token counts, as the DUO
    repository's `record_entropy` computes it. Repetitive samples score low."""
    entropies = []
    for sample in samples:
        counts = Counter(sample)
        total = sum(counts.values())
        entropies.append(-sum(c / total * math.log(c / total) for c in counts.values()))
    return sum(entropies) / len(entropies) if entropies else float("nan")


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
