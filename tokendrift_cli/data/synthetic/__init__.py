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

One module per job: grammar (the edges) is compiled by automaton (the tensors); exact
(statistics), sampling, tokenizer and cache (datasets on disk) each add their methods over those
tensors as a class, and `SyntheticLanguage` is all of them.
"""

from __future__ import annotations

from tokendrift_cli.data.synthetic.cache import DatasetCache, default_cache_dir
from tokendrift_cli.data.synthetic.exact import ExactStatistics
from tokendrift_cli.data.synthetic.grammar import EOS, MASK, UNK, VERBS, WORD_CLASSES, Edge, default_edges
from tokendrift_cli.data.synthetic.tokenizer import WordTokenizer

__all__ = ["EOS", "MASK", "UNK", "VERBS", "WORD_CLASSES", "Edge", "SyntheticLanguage", "default_cache_dir", "default_edges"]


class SyntheticLanguage(ExactStatistics, WordTokenizer, DatasetCache):
    """The language as tensors: `emit[s, v]` = P(word v | state s), `next_state[s, v]`; with its
    exact statistics, tokenizer, sampler and cached datasets."""
