"""The built-in synthetic language: English-like sentences whose probabilities are known exactly.

It is a deterministic probabilistic finite automaton: each state has a distribution over the
next word, and the word fixes the next state. Agreement is built into the states: the subject's
person and number fix the verb form ("I like", "she likes"), determiners agree with nouns
("a cat", "some cats"), and each verb admits only some objects ("eat bread", not "eat chess").
A sentence ends with "."; then the document either goes on or ends with <eos>, after which a
new document starts. A sequence is the first L tokens of that stream, like OpenWebText blocks
wrapped with EOS separators, so the probabilities of all length-L sequences sum to exactly 1.

Because the automaton is deterministic, log-probabilities follow a single path, and the
conditional marginals of masked positions given the observed ones come from forward–backward.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

EOS, UNK, MASK = "<eos>", "[UNK]", "[MASK]"

# Word classes. Within a class, word i has Zipf weight 1/(i+1): some words are frequent.
WORD_CLASSES: dict[str, list[str]] = {
    "I": ["I"],
    "you": ["you"],
    "pron_3sg": ["he", "she", "it"],
    "pron_pl": ["we", "they"],
    "det_any": ["the", "my", "your", "our"],
    "det_sg": ["a", "one", "every"],
    "det_pl": ["some", "many", "two", "three"],
    "adj": ["big", "small", "old", "young", "happy", "quiet", "clever"],
    "noun_sg": ["cat", "dog", "teacher", "friend", "child", "bird", "farmer", "student", "doctor"],
    "noun_pl": ["cats", "dogs", "teachers", "friends", "children", "birds", "farmers", "students", "doctors"],
    "food": ["bread", "apples", "rice", "soup", "fish", "cake", "eggs"],
    "drink": ["water", "tea", "coffee", "milk", "juice"],
    "readable": ["books", "letters", "poems", "stories", "news"],
    "game": ["tennis", "chess", "football", "music", "cards"],
    "adverb": ["today", "often", "now", "again", "slowly"],
    "place_at": ["home", "school", "night", "work"],
    "place_in": ["park", "garden", "morning", "city"],
}

# Verbs: (base form, third-person singular form, what may follow).
VERBS: list[tuple[str, str, str]] = [
    ("like", "likes", "obj_like"),
    ("eat", "eats", "obj_food"),
    ("drink", "drinks", "obj_drink"),
    ("read", "reads", "obj_read"),
    ("play", "plays", "obj_game"),
    ("see", "sees", "obj_np"),
    ("want", "wants", "obj_want"),
    ("sleep", "sleeps", "after_vp"),
    ("run", "runs", "after_vp"),
    ("sing", "sings", "after_vp"),
    ("walk", "walks", "after_vp"),
]


@dataclass(frozen=True)
class Edge:
    state: str
    emits: str  # a word class, or a literal word written as "=word"
    next_state: str
    weight: float


def _noun_phrase(prefix: str, then_sg: str, then_pl: str) -> list[Edge]:
    """Determiner, optional adjective, noun — with determiner–noun number agreement."""
    edges = []
    for det, numbers in (("det_any", ("sg", "pl")), ("det_sg", ("sg",)), ("det_pl", ("pl",))):
        det_state = f"{prefix}_{det}"
        for adjective in (False, True):
            here = det_state + ("_adj" if adjective else "")
            if not adjective:
                edges.append(Edge(here, "adj", det_state + "_adj", 0.3))
            for number in numbers:
                edges.append(Edge(here, f"noun_{number}", then_sg if number == "sg" else then_pl, 1.0))
    return edges


def _subject(state: str, scale: float) -> list[Edge]:
    """How a sentence starts: a pronoun or a noun phrase, which fixes the verb form."""
    edges = [
        Edge(state, "I", "verb_base", 1.0 * scale),
        Edge(state, "you", "verb_base", 0.6 * scale),
        Edge(state, "pron_3sg", "verb_3sg", 1.6 * scale),
        Edge(state, "pron_pl", "verb_base", 1.0 * scale),
    ]
    for det, weight in (("det_any", 1.6), ("det_sg", 0.6), ("det_pl", 0.6)):
        edges.append(Edge(state, det, f"subj_{det}", weight * scale))
    return edges


def default_edges(p_eos: float = 0.25) -> list[Edge]:
    edges = _subject("doc", 1.0) + _noun_phrase("subj", "verb_3sg", "verb_base")
    for base, third, then in VERBS:
        edges += [Edge("verb_base", f"={base}", then, 1.0), Edge("verb_3sg", f"={third}", then, 1.0)]
    edges += [
        Edge("obj_food", "food", "after_vp", 1.0),
        Edge("obj_drink", "drink", "after_vp", 1.0),
        Edge("obj_read", "readable", "after_vp", 1.0),
        Edge("obj_game", "game", "after_vp", 1.0),
        Edge("obj_want", "food", "after_vp", 1.0),
        Edge("obj_want", "drink", "after_vp", 0.7),
        Edge("obj_want", "game", "after_vp", 0.5),
        Edge("obj_like", "food", "after_vp", 0.6),
        Edge("obj_like", "game", "after_vp", 1.0),
        Edge("obj_like", "det_any", "obj_det_any", 0.8),
        Edge("obj_np", "det_any", "obj_det_any", 1.0),
        Edge("obj_np", "det_sg", "obj_det_sg", 0.4),
        Edge("obj_np", "det_pl", "obj_det_pl", 0.4),
    ]
    edges += _noun_phrase("obj", "after_vp", "after_vp")
    edges += [
        Edge("after_vp", "=.", "end", 1.0),
        Edge("after_vp", "adverb", "after_adv", 0.5),
        Edge("after_vp", "=at", "at", 0.25),
        Edge("after_vp", "=in", "in", 0.25),
        Edge("at", "place_at", "after_adv", 1.0),
        Edge("in", "=the", "in_the", 1.0),
        Edge("in_the", "place_in", "after_adv", 1.0),
        Edge("after_adv", "=.", "end", 1.0),
        Edge("end", f"={EOS}", "doc", p_eos),
    ]
    edges += _subject("end", 1.0 - p_eos)
    return edges


class SyntheticLanguage:
    """The language as tensors: `emit[s, v]` = P(word v | state s), `next_state[s, v]`."""

    def __init__(self, edges: list[Edge] | None = None, classes: dict[str, list[str]] | None = None, p_eos: float = 0.25):
        edges = edges if edges is not None else default_edges(p_eos)
        classes = classes if classes is not None else WORD_CLASSES
        words = [w for e in edges for w in _expand(e.emits, classes)]
        self.vocab: list[str] = [EOS, UNK] + sorted(set(words) - {EOS}, key=words.index) + [MASK]
        index = {word: i for i, word in enumerate(self.vocab)}
        states = ["doc"] + sorted(({e.state for e in edges} | {e.next_state for e in edges}) - {"doc"})
        self.states = states
        state_index = {s: i for i, s in enumerate(states)}

        emit = torch.zeros(len(states), len(self.vocab), dtype=torch.float64)
        next_state = torch.zeros(len(states), len(self.vocab), dtype=torch.long)
        for edge in edges:
            members = _expand(edge.emits, classes)
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

    # ------------------------------------------------------------------ vocabulary

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

    def decode(self, ids: list[int]) -> str:
        return " ".join(self.vocab[i] for i in ids)

    def encode(self, text: str) -> list[int]:
        index = {w: i for i, w in enumerate(self.vocab)}
        return [index.get(w, 1) for w in text.split()]

    def owns(self, tokenizer) -> bool:
        """Whether a tokenizer is this language's (a model trained on it carries one)."""
        return tokenizer.get_vocab() == {word: i for i, word in enumerate(self.vocab)}

    def tokenizer(self):
        """A `transformers` fast tokenizer over the same ids (word level, whitespace split)."""
        from tokenizers import Tokenizer, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(self.vocab)}, unk_token=UNK))
        backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        return PreTrainedTokenizerFast(
            tokenizer_object=backend, eos_token=EOS, pad_token=EOS, unk_token=UNK, mask_token=MASK,
            clean_up_tokenization_spaces=False,
        )

    # ------------------------------------------------------------------ sampling and scoring

    def sample(self, n: int, seq_len: int, seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        state = torch.zeros(n, dtype=torch.long)
        out = torch.empty(n, seq_len, dtype=torch.long)
        for t in range(seq_len):
            word = torch.multinomial(self.emit[state], 1, generator=generator).squeeze(1)
            out[:, t] = word
            state = self.next_state[state, word]
        return out

    def log_prob(self, ids: torch.Tensor) -> torch.Tensor:
        """Exact log-probability (nats) of each length-L prefix; -inf where the language cannot produce it."""
        ids = torch.as_tensor(ids)
        flat = ids.reshape(-1, ids.shape[-1])
        state = torch.zeros(flat.shape[0], dtype=torch.long)
        total = torch.zeros(flat.shape[0], dtype=torch.float64)
        for t in range(flat.shape[1]):
            total += torch.log(self.emit[state, flat[:, t]])
            state = self.next_state[state, flat[:, t]]
        return total.reshape(ids.shape[:-1])

    def noisy_log_prob(self, ids: torch.Tensor, epsilon: float) -> torch.Tensor:
        """log p(ids) when each token is the language's word with probability 1 - epsilon, or a
        uniformly random data token otherwise (a noisy channel, marginalised by the forward
        algorithm). Finite for every sequence; a wrong token costs about log(1/epsilon) and the
        automaton keeps tracking the sentence behind it."""
        ids = torch.as_tensor(ids)
        flat = ids.reshape(-1, ids.shape[-1])
        any_word = self.transition[:, : self.num_data_tokens].sum(1) * (epsilon / self.num_data_tokens)  # [S, S]
        alpha = torch.zeros(flat.shape[0], len(self.states), dtype=torch.float64)
        alpha[:, 0] = 1.0
        total = torch.zeros(flat.shape[0], dtype=torch.float64)
        for t in range(flat.shape[1]):
            step = (1 - epsilon) * self.transition[:, flat[:, t], :].permute(1, 0, 2) + any_word
            alpha = torch.bmm(alpha.unsqueeze(1), step).squeeze(1)
            norm = alpha.sum(1)
            total += norm.log()
            alpha = alpha / norm.unsqueeze(1)
        return total.reshape(ids.shape[:-1])

    def accepts(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.isfinite(self.log_prob(ids))

    def next_word_probs(self, ids: torch.Tensor) -> torch.Tensor:
        """P(x_t = v | x_<t) for every position: [..., L, V]. Rows after an impossible prefix are zero."""
        ids = torch.as_tensor(ids)
        flat = ids.reshape(-1, ids.shape[-1])
        state = torch.zeros(flat.shape[0], dtype=torch.long)
        alive = torch.ones(flat.shape[0], dtype=torch.bool)
        rows = []
        for t in range(flat.shape[1]):
            rows.append(self.emit[state] * alive.unsqueeze(1))
            alive &= self.emit[state, flat[:, t]] > 0
            state = self.next_state[state, flat[:, t]]
        return torch.stack(rows, 1).reshape(*ids.shape, self.vocab_size)

    def marginals(self, ids: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """Exact P(x_t = v | observed positions) for every position: [..., L, V] (float64).

        Observed rows are one-hot. Forward–backward over the automaton's states, rescaled at
        every step so long sequences do not underflow.
        """
        ids, masked = torch.as_tensor(ids), torch.as_tensor(masked, dtype=torch.bool)
        shape = ids.shape
        ids, masked = ids.reshape(-1, shape[-1]), masked.reshape(-1, shape[-1])
        batch, length = ids.shape
        any_word = self.transition.sum(1)  # [S, S]: a masked position may be any word

        def step_matrix(t: int) -> torch.Tensor:  # [B, S, S]
            observed = self.transition[:, ids[:, t], :].permute(1, 0, 2)
            return torch.where(masked[:, t, None, None], any_word, observed)

        num_states = len(self.states)
        alpha = torch.zeros(batch, length + 1, num_states, dtype=torch.float64)
        alpha[:, 0, 0] = 1.0
        for t in range(length):
            a = torch.bmm(alpha[:, t : t + 1], step_matrix(t)).squeeze(1)
            total = a.sum(1, keepdim=True)
            if (total == 0).any():
                bad = int(torch.nonzero(total.squeeze(1) == 0)[0])
                raise ValueError(f"sequence {bad}: the observed tokens have probability 0 under the language")
            alpha[:, t + 1] = a / total
        beta = torch.ones(batch, length + 1, num_states, dtype=torch.float64)
        for t in range(length - 1, -1, -1):
            b = torch.bmm(step_matrix(t), beta[:, t + 1].unsqueeze(2)).squeeze(2)
            beta[:, t] = b / b.sum(1, keepdim=True)

        # P(x_t = v, obs) ∝ Σ_s alpha_{t-1}(s) emit[s, v] beta_t(next[s, v]).
        after = beta[:, 1:, :][:, :, self.next_state]  # [B, L, S, V]
        joint = torch.einsum("bls,sv,blsv->blv", alpha[:, :-1], self.emit, after)
        probs = joint / joint.sum(-1, keepdim=True)
        one_hot = torch.nn.functional.one_hot(ids, self.vocab_size).to(torch.float64)
        probs = torch.where(masked.unsqueeze(-1), probs, one_hot)
        return probs.reshape(*shape, self.vocab_size)

    # ------------------------------------------------------------------ entropy

    def entropy(self, seq_len: int) -> float:
        """Exact entropy per token of length-L sequences, H(X_1..L) / L, in nats.

        Deterministic automaton: the state after a prefix is a function of the prefix, so
        H(X_1..L) = Σ_t E[H(next word | state at t)].
        """
        state_probs = torch.zeros(len(self.states), dtype=torch.float64)
        state_probs[0] = 1.0
        per_state = self._word_entropy_per_state()
        moves = self.transition.sum(1)
        total = 0.0
        for _ in range(seq_len):
            total += float(state_probs @ per_state)
            state_probs = state_probs @ moves
        return total / seq_len

    def entropy_rate(self) -> float:
        """lim H(X_1..L) / L: word entropy averaged under the state chain's stationary distribution."""
        moves = self.transition.sum(1)
        eye = torch.eye(len(self.states), dtype=torch.float64)
        # Solve pi (P - I) = 0 with sum(pi) = 1 as one least-squares system.
        system = torch.cat([(moves - eye).T, torch.ones(1, len(self.states), dtype=torch.float64)])
        target = torch.zeros(len(self.states) + 1, 1, dtype=torch.float64)
        target[-1] = 1.0
        stationary = torch.linalg.lstsq(system, target).solution.squeeze(1)
        return float(stationary @ self._word_entropy_per_state())

    def _word_entropy_per_state(self) -> torch.Tensor:
        p = self.emit
        return -(torch.where(p > 0, p * torch.log(p), torch.zeros_like(p))).sum(1)

    # ------------------------------------------------------------------ datasets

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        digest.update(json.dumps(self.vocab).encode())
        digest.update(self.emit.numpy().tobytes())
        digest.update(self.next_state.numpy().tobytes())
        return digest.hexdigest()[:16]

    def build_dataset(self, num_train: int, num_valid: int, seq_len: int, seed: int, cache_dir: str | os.PathLike | None = None):
        """Train / validation splits generated from the seed (validation from a derived seed), cached on disk."""
        from datasets import Dataset, DatasetDict, load_from_disk

        key = f"synthetic-{self.fingerprint()}-L{seq_len}-n{num_train}-v{num_valid}-s{seed}"
        target = Path(cache_dir or default_cache_dir()) / key
        if target.is_dir():
            return load_from_disk(str(target))
        data = DatasetDict({
            "train": Dataset.from_dict({"input_ids": self.sample(num_train, seq_len, seed).tolist()}),
            "validation": Dataset.from_dict({"input_ids": self.sample(num_valid, seq_len, seed + 7_919_000).tolist()}),
        })
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{key}."))
        try:
            data.save_to_disk(str(tmp))
            os.replace(tmp, target)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not target.is_dir():  # another process may have won the race; anything else is real
                raise
        return load_from_disk(str(target))


def default_cache_dir() -> Path:
    return Path(os.environ.get("TOKENDRIFT_CACHE", Path.home() / ".cache" / "tokendrift"))


def _expand(emits: str, classes: dict[str, list[str]]) -> list[str]:
    return [emits[1:]] if emits.startswith("=") else classes[emits]
