"""Real text corpora: a datasets hub name or local .txt / .jsonl files, tokenized and wrapped.

Documents are tokenized, joined with an EOS after each one, and cut into fixed-length blocks,
as MDLM's "wrap" mode does for OpenWebText: no padding, and a block may start mid-document.
"""

from __future__ import annotations

from pathlib import Path

from tokendrift_cli.data.jsonl import read_jsonl
from tokendrift_cli.errors import InputError, first_line
from tokendrift_cli.files import read_user_text
from tokendrift_cli.spec.data import DataSpec


def read_documents(path: str | Path, option: str, text_field: str = "text") -> list[str]:
    """A .txt file holds one document per non-empty line; a .jsonl file one {text_field: ...} object per line.
    `option` is the spec field that named the file."""
    if Path(path).suffix == ".jsonl":
        return [row[text_field] for _, row in read_jsonl(path, text_field, "documents", option)]
    documents = [line for line in read_user_text(path, option).splitlines() if line.strip()]
    if not documents:
        raise InputError(f"{path}: no documents")
    return documents


def wrap(token_lists: list[list[int]], eos_id: int, seq_len: int) -> list[list[int]]:
    """Concatenate documents with an EOS after each, then cut into full blocks of seq_len (the tail is dropped)."""
    stream = [token for tokens in token_lists for token in (*tokens, eos_id)]
    return [stream[i : i + seq_len] for i in range(0, len(stream) - seq_len + 1, seq_len)]


def load_text_dataset(spec: DataSpec, seed: int):
    from datasets import Dataset, DatasetDict, load_dataset
    from transformers import AutoTokenizer

    name = spec.tokenizer or "gpt2"
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as err:  # neither a local folder nor on the hub (or offline)
        raise InputError(f"data.tokenizer: cannot load '{name}' ({first_line(err)})") from None
    if tokenizer.eos_token_id is None:
        raise InputError(f"data.tokenizer: {name} has no EOS token to separate documents")
    paths = [p.strip() for p in spec.source.split(",")]
    if all(p.endswith((".txt", ".jsonl")) for p in paths):
        documents = [doc for p in paths for doc in read_documents(p, "data.source", spec.text_field)]
        raw = DatasetDict({"train": Dataset.from_dict({spec.text_field: documents})})
    else:
        try:
            raw = load_dataset(spec.source)
        except (OSError, ValueError) as err:  # an empty or unknown folder, an unknown hub name, offline
            raise InputError(f"data.source: cannot load '{spec.source}' ({first_line(err)})") from None
        for split_name, split in raw.items():
            if spec.text_field not in split.column_names:
                raise InputError(f"data.text_field: '{spec.text_field}' is not a column of {spec.source} {split_name} ({', '.join(split.column_names)})")

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
