"""The marginal trap: what sampling k masked tokens from their marginals loses against the joint.

A `JointTable` holds the exact joint distribution of k masked slots (given everything observed)
as {(token_1, ..., token_k): probability}. From it: the product of marginals, the invalid mass
(product mass on combinations the joint gives zero), total correlation Σ H(x_i) - H(X_S) in bits
(ParallelBench's lower bound on one-step error), total variation, and Monte-Carlo validity of
decoding s slots per step from current marginals (s = k: fully parallel; s = 1: sequential).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch

Combo = tuple


@dataclass
class Validity:
    valid: int
    total: int

    @property
    def rate(self) -> float:
        return self.valid / self.total

    def wilson(self, z: float = 1.959964) -> tuple[float, float]:
        """Wilson score interval (95 % by default)."""
        n, p = self.total, self.rate
        center = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        # The interval always holds p; min/max only guard against rounding at p = 0 or 1.
        return max(0.0, min(p, center - half)), min(1.0, max(p, center + half))


class JointTable:
    def __init__(self, probs: dict[Combo, float]):
        total = sum(probs.values())
        self.probs = {combo: p / total for combo, p in probs.items() if p > 0}
        self.k = len(next(iter(self.probs)))
        self.marginals = [self._marginal(i, self.probs) for i in range(self.k)]

    @staticmethod
    def _marginal(slot: int, probs: dict[Combo, float]) -> dict:
        out: dict = {}
        for combo, p in probs.items():
            out[combo[slot]] = out.get(combo[slot], 0.0) + p
        return out

    def product(self, combo: Combo) -> float:
        return math.prod(self.marginals[i].get(token, 0.0) for i, token in enumerate(combo))

    def invalid_mass(self) -> float:
        return max(0.0, 1.0 - sum(self.product(combo) for combo in self.probs))

    def total_correlation_bits(self) -> float:
        joint_entropy = -sum(p * math.log2(p) for p in self.probs.values())
        marginal_entropy = sum(-sum(p * math.log2(p) for p in m.values() if p > 0) for m in self.marginals)
        return max(0.0, marginal_entropy - joint_entropy)

    def total_variation(self) -> float:
        on_support = sum(abs(p - self.product(combo)) for combo, p in self.probs.items())
        return 0.5 * (on_support + self.invalid_mass())

    def product_table(self) -> dict[Combo, float]:
        """The product of marginals over every combination of the slots' supports."""
        supports = [list(m) for m in self.marginals]
        return {combo: self.product(combo) for combo in itertools.product(*supports)}

    def decode(self, tokens_per_step: int, num_samples: int, rng: np.random.Generator) -> tuple[Validity, dict[Combo, int]]:
        """Monte-Carlo: each step draws `tokens_per_step` of the remaining slots (left to right)
        independently from their marginals given the slots decided so far. Returns the validity
        and the counts of invalid combinations drawn."""
        valid = 0
        invalid: dict[Combo, int] = {}
        for _ in range(num_samples):
            decided: dict[int, object] = {}
            remaining = list(range(self.k))
            while remaining:
                step, remaining = remaining[:tokens_per_step], remaining[tokens_per_step:]
                consistent = {c: p for c, p in self.probs.items() if all(c[i] == t for i, t in decided.items())}
                for slot in step:
                    marginal = self._marginal(slot, consistent) if consistent else self.marginals[slot]
                    tokens, weights = zip(*marginal.items())
                    decided[slot] = tokens[rng.choice(len(tokens), p=np.array(weights) / sum(weights))]
            combo = tuple(decided[i] for i in range(self.k))
            if combo in self.probs:
                valid += 1
            else:
                invalid[combo] = invalid.get(combo, 0) + 1
        return Validity(valid, num_samples), invalid


def joint_from_language(language, ids: torch.Tensor, slots: list[int]) -> JointTable:
    """The exact joint of `slots` given every other position of `ids`, by the chain rule over the
    language's exact conditional marginals (branches of probability 0 are pruned)."""
    masked = torch.zeros_like(ids, dtype=torch.bool)
    masked[slots] = True
    partial: list[tuple[Combo, float, torch.Tensor]] = [((), 1.0, ids.clone())]
    for depth, slot in enumerate(slots):
        batch = torch.stack([row for _, _, row in partial])
        still = masked.clone()
        still[slots[:depth]] = False
        marginals = language.marginals(batch, still.expand_as(batch))[:, slot]
        grown = []
        for (prefix, p, row), marginal in zip(partial, marginals):
            for token in torch.nonzero(marginal > 0).flatten().tolist():
                child = row.clone()
                child[slot] = token
                grown.append(((*prefix, token), p * float(marginal[token]), child))
        partial = grown
    return JointTable({combo: p for combo, p, _ in partial})


def parse_joint(data: object, source: str) -> JointTable:
    """{"I like": 0.5, "he likes": 0.5}: space-separated combinations of one arity, probabilities summing to 1."""
    from tokendrift_cli.errors import InputError

    if not isinstance(data, dict) or not data:
        raise InputError(f"{source}: expected a non-empty JSON object of combination → probability")
    table: dict[Combo, float] = {}
    keys: dict[Combo, str] = {}
    arity = None
    for key, value in data.items():
        combo = tuple(str(key).split())
        if arity is None:
            arity = len(combo)
        if len(combo) != arity or arity < 2:
            raise InputError(f"{source}: '{key}': every combination must have the same number of tokens (at least 2)")
        if combo in table:  # keys are split on whitespace: "I like" and "I  like" are one combination
            raise InputError(f"{source}: '{key}' and '{keys[combo]}' are the same combination")
        # JSON's NaN and Infinity parse as floats, and NaN slips through every comparison.
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < math.inf:
            raise InputError(f"{source}: '{key}': probability must be a finite non-negative number")
        table[combo], keys[combo] = float(value), key
    if abs(sum(table.values()) - 1.0) > 1e-6:
        raise InputError(f"{source}: probabilities sum to {sum(table.values()):.6g}, not 1")
    return JointTable(table)
