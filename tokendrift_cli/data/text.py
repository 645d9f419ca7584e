"""Real text corpora: a datasets hub name or local .txt / .jsonl files, tokenized and wrapped.

Documents are tokenized, joined with an EOS after each one, and cut into fixed-length blocks,
as MDLM's "wrap" mode does for OpenWebText: no padding, and a block may start mid-document.
"""

from __future__ import annotations

from pathlib import Path

from tokendrift_cli.data.jsonl import read_jsonl
from tokendrift_cli.errors import InputError
from tokendrift_cli.spec.data import DataSpec


def read_documents(path: str | Path, text_field: str = "text") -> list[str]:
    """A .txt file holds one document per non-empty line; a .jsonl file one {text_field: ...} object per line."""
    path = Path(path)
    if path.suffix == ".jsonl":
        return [row[text_field] for _, row in read_jsonl(path, text_field, "documents", "data.source")]
    if not path.is_file():
        raise InputError(f"data.source: {path}: file not found")
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def wrap(token_lists: list[list[int]], eos_id: int, seq_len: int) -> list[list[int]]:
    """Concatenate documents with an EOS after each, then cut into full blocks of seq_len (the tail is dropped)."""
    stream = [token for tokens in token_lists for token in (*tokens, eos_id)]
    return [stream[i : i + seq_len] for i in range(0, len(stream) - seq_len + 1, seq_len)]


def load_text_dataset(spec: DataSpec, seed: int):
    from datasets import Dataset, DatasetDict, load_dataset
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(spec.tokenizer or "gpt2")
    if tokenizer.eos_token_id is None:
        raise InputError(f"data.tokenizer: {spec.tokenizer} has no EOS token to separate documents")
    paths = [p.strip() for p in spec.source.split(",")]
    if all(p.endswith((".txt", ".jsonl")) for p in paths):
        documents = [doc for p in paths for doc in read_documents(p, spec.text_field)]
        raw = DatasetDict({"train": Dataset.from_dict({spec.text_field: documents})})
    else:
        raw = load_dataset(spec.source)

    def tokenize_and_wrap(batch: dict) -> dict:
        ids = tokenizer(batch[spec.text_field], add_special_tokens=False)["input_ids"]
        return {"input_ids": wrap(ids, tokenizer.eos_token_id, spec.seq_len)}

    # Batched map: scales to hub corpora (wrapping happens within each batch of 1000 documents).
    data = DatasetDict({
        name: split.map(tokenize_and_wrap, batched=True, remove_columns=split.column_names)
        for name, split in raw.items() if name in ("train", "validation")
    })
    if len(data["train"]) == 0:
        raise InputError(f"data.source: {spec.source}: fewer than {spec.seq_len} tokens; no training block fits")
    if "validation" not in data:
        held_out = data["train"].train_test_split(test_size=spec.valid_fraction, seed=seed)
        data = DatasetDict({"train": held_out["train"], "validation": held_out["test"]})
    return data, tokenizer
