"""Sampling the language: walking the automaton from the document start."""

from __future__ import annotations

import torch

from tokendrift_cli.data.synthetic.automaton import Automaton


class Sampling(Automaton):
    """Sequences of the language: the first `seq_len` tokens of its document stream."""

    def sample(self, n: int, seq_len: int, seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        state = torch.zeros(n, dtype=torch.long)
        out = torch.empty(n, seq_len, dtype=torch.long)
        for t in range(seq_len):
            word = torch.multinomial(self.emit[state], 1, generator=generator).squeeze(1)
            out[:, t] = word
            state = self.next_state[state, word]
        return out
