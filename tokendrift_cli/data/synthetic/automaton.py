"""The grammar compiled into tensors: the automaton every statistic and the sampler read."""

from __future__ import annotations

import torch

from tokendrift_cli.data.synthetic.grammar import EOS, MASK, UNK, WORD_CLASSES, Edge, default_edges, expand


class Automaton:
    """The language as tensors: `emit[s, v]` = P(word v | state s), `next_state[s, v]`.

    Ids: <eos> is 0, [UNK] 1, then the words in order of first appearance, and [MASK] last.
    """

    def __init__(self, edges: list[Edge] | None = None, classes: dict[str, list[str]] | None = None, p_eos: float = 0.25):
        edges = edges if edges is not None else default_edges(p_eos)
        classes = classes if classes is not None else WORD_CLASSES
        words = [w for e in edges for w in expand(e.emits, classes)]
        self.vocab: list[str] = [EOS, UNK] + sorted(set(words) - {EOS}, key=words.index) + [MASK]
        index = {word: i for i, word in enumerate(self.vocab)}
        states = ["doc"] + sorted(({e.state for e in edges} | {e.next_state for e in edges}) - {"doc"})
        self.states = states
        state_index = {s: i for i, s in enumerate(states)}

        emit = torch.zeros(len(states), len(self.vocab), dtype=torch.float64)
        next_state = torch.zeros(len(states), len(self.vocab), dtype=torch.long)
        for edge in edges:
            members = expand(edge.emits, classes)
            zipf = torch.tensor([1.0 / (i + 1) for i in range(len(members))], dtype=torch.float64)
            for word, share in zip(members, zipf / zipf.sum()):
                s, v, t = state_index[edge.state], index[word], state_index[edge.next_state]
                if emit[s, v] > 0 and next_state[s, v] != t:
                    raise ValueError(f"state {edge.state!r}: word {word!r} leads to two states; the automaton must be deterministic")
                emit[s, v] += edge.weight * share
                next_state[s, v] = t
        totals = emit.sum(1, keepdim=True)
        if (totals == 0).any():
            dead = [states[i] for i in torch.nonzero(totals.squeeze(1) == 0).flatten().tolist()]
            raise ValueError(f"states with no outgoing words: {dead}")
        self.emit = emit / totals
        self.next_state = next_state
        # transition[s, v, t] = P(emit v and move to t | s): the dense form forward–backward uses.
        self.transition = torch.zeros(len(states), len(self.vocab), len(states), dtype=torch.float64)
        self.transition.scatter_(2, next_state.unsqueeze(2), self.emit.unsqueeze(2))

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def eos_id(self) -> int:
        return 0

    @property
    def mask_id(self) -> int:
        return len(self.vocab) - 1

    @property
    def num_data_tokens(self) -> int:
        """Ids real text can use: everything but [MASK]."""
        return len(self.vocab) - 1
