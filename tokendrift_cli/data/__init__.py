"""Training and evaluation data: the built-in synthetic language or real text corpora."""

from __future__ import annotations

from tokendrift_cli.spec.data import DataSpec


def load_data(spec: DataSpec, seed: int):
    """(DatasetDict with train/validation `input_ids` blocks of spec.seq_len, tokenizer)."""
    if spec.source == "synthetic":
        from tokendrift_cli.data.synthetic import SyntheticLanguage

        language = SyntheticLanguage(p_eos=spec.p_eos)
        data = language.build_dataset(spec.num_train, spec.num_valid, spec.seq_len, seed, spec.cache_dir)
        return data, language.tokenizer()
    from tokendrift_cli.data.text import load_text_dataset

    return load_text_dataset(spec, seed)
