"""A tiny synthetic language small enough to enumerate: every length-5 sequence with its probability,
the reference the automaton's exact statistics and the exact denoiser are tested against."""

import itertools

import pytest
import torch

from tokendrift_cli.data.synthetic import Edge, SyntheticLanguage

# Subject–verb agreement and verb–object restriction, 9 words.
TINY_CLASSES = {"sg": ["he", "she"], "pl": ["we"], "food": ["bread", "fish"], "game": ["chess"]}
TINY_EDGES = [
    Edge("doc", "sg", "v3", 1.0), Edge("doc", "pl", "vb", 1.0),
    Edge("v3", "=eats", "food", 1.0), Edge("v3", "=plays", "game", 0.5),
    Edge("vb", "=eat", "food", 1.0), Edge("vb", "=play", "game", 1.0),
    Edge("food", "food", "end", 1.0), Edge("game", "game", "end", 1.0),
    Edge("end", "=<eos>", "doc", 0.5), Edge("end", "sg", "v3", 0.3), Edge("end", "pl", "vb", 0.2),
]
LENGTH = 5


@pytest.fixture(scope="session")
def tiny():
    return SyntheticLanguage(TINY_EDGES, TINY_CLASSES)


@pytest.fixture(scope="session")
def everything(tiny):
    """Every length-5 sequence over the data tokens with its exact probability."""
    ids = torch.tensor(list(itertools.product(range(tiny.num_data_tokens), repeat=LENGTH)))
    return ids, tiny.log_prob(ids).exp()
