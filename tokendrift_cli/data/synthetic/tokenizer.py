"""The language's word-level tokenizer: ids are the automaton's vocabulary, split on whitespace."""

from __future__ import annotations

from tokendrift_cli.data.synthetic.automaton import Automaton
from tokendrift_cli.data.synthetic.grammar import EOS, MASK, UNK


class WordTokenizer(Automaton):
    """Text ↔ ids, and the same mapping as a `transformers` tokenizer a trained model carries."""

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
