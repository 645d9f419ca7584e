"""Statistics of the probe: per-position predictions aggregated over prompts.

Accumulated batch by batch, so 100 prompts × 128 positions × a 150k vocabulary never sit in
memory at once: per position we keep the running mean distribution and running mean entropy,
whose difference H(mean) - mean(H) is the generalised Jensen–Shannon divergence of the prompts'
predictive distributions (how much the prompt still matters at that distance).
"""

from __future__ import annotations

import math
import re
from collections import Counter

import torch

STOPWORDS = frozenset(
    """a about above after again all also am an and any are as at be because been before being below between both
    but by can could did do does doing down during each few for from further had has have having he her here hers
    herself him himself his how i if in into is it its itself just me more most my myself no nor not now of off on
    once only or other our ours ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were what when where which
    while who whom why will with would you your yours yourself yourselves""".split()
)
PUNCTUATION = re.compile(r"^[\W_]*$")  # nothing alphanumeric (whitespace-only tokens included)
CATEGORIES = ("eos", "punctuation", "stopword", "content")


def categorize(token: str, token_id: int, eos_ids: set[int]) -> str:
    if token_id in eos_ids:
        return "eos"
    word = token.strip()
    if PUNCTUATION.match(word):
        return "punctuation"
    return "stopword" if word.lower() in STOPWORDS else "content"


class PositionStats:
    """Running aggregates over prompts for each of N masked positions."""

    def __init__(self, num_positions: int, vocab_size: int):
        self.count = 0
        self.mean_probs = torch.zeros(num_positions, vocab_size, dtype=torch.float64)
        self.entropy_sum = torch.zeros(num_positions, dtype=torch.float64)
        self.top1_prob_sum = torch.zeros(num_positions, dtype=torch.float64)
        self.top1_tokens: list[Counter] = [Counter() for _ in range(num_positions)]
        self.categories: list[Counter] = [Counter() for _ in range(num_positions)]

    def update(self, probs: torch.Tensor, top1_tokens: list[list[str]], top1_categories: list[list[str]]) -> None:
        """probs [B, N, V] float; top-1 strings and categories [B][N]."""
        probs = probs.double().cpu()
        batch = probs.shape[0]
        self.mean_probs += (probs.sum(0) - batch * self.mean_probs) / (self.count + batch)
        self.entropy_sum += entropy(probs).sum(0)
        self.top1_prob_sum += probs.max(-1).values.sum(0)
        self.count += batch
        for row_tokens, row_categories in zip(top1_tokens, top1_categories):
            for position, (token, category) in enumerate(zip(row_tokens, row_categories)):
                self.top1_tokens[position][token] += 1
                self.categories[position][category] += 1

    def rows(self) -> list[dict]:
        mean_entropy = self.entropy_sum / self.count
        divergence = (entropy(self.mean_probs) - mean_entropy) / math.log(2)
        rows = []
        for position in range(len(self.top1_tokens)):
            shares = {f"share_{c}": self.categories[position][c] / self.count for c in CATEGORIES}
            rows.append({
                "position": position + 1,
                "mean_entropy": float(mean_entropy[position]),
                "mean_top1_prob": float(self.top1_prob_sum[position] / self.count),
                **shares,
                "prompt_divergence_bits": max(0.0, float(divergence[position])),
                "top1_tokens": self.top1_tokens[position].most_common(5),
            })
        return rows


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy in nats along the last axis; 0 · log 0 = 0."""
    return -(probs * torch.where(probs > 0, probs.log(), torch.zeros_like(probs))).sum(-1)


def collapse_onset(rows: list[dict], threshold: float = 0.5) -> int | None:
    """First position whose top-1 is EOS, a stopword or punctuation for at least `threshold` of prompts."""
    for row in rows:
        if row["share_eos"] + row["share_stopword"] + row["share_punctuation"] >= threshold:
            return row["position"]
    return None
