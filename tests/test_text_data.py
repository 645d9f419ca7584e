"""Real-text path: local files, any AutoTokenizer, MDLM-style wrapping with EOS separators."""

import json

import pytest

from tokendrift_cli.data import load_data
from tokendrift_cli.data.text import wrap
from tokendrift_cli.errors import InputError
from tokendrift_cli.spec.data import DataSpec


@pytest.fixture
def tokenizer_dir(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<|endoftext|>", "<unk>", "a", "b", "c", "d", "e"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>", unk_token="<unk>")
    tokenizer.save_pretrained(tmp_path / "tok")
    return str(tmp_path / "tok")


def test_wrap_by_hand():
    assert wrap([[5, 6], [7], [8, 9, 10]], eos_id=0, seq_len=3) == [[5, 6, 0], [7, 0, 8], [9, 10, 0]]
    assert wrap([[5, 6, 7, 8]], eos_id=0, seq_len=3) == [[5, 6, 7]]  # the incomplete tail is dropped


def test_local_jsonl_with_a_built_tokenizer(tmp_path, tokenizer_dir):
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps({"text": t}) for t in ["a b", "c", "d e a b c"] * 10) + "\n")
    spec = DataSpec(source=str(path), tokenizer=tokenizer_dir, seq_len=4, valid_fraction=0.2)
    data, tokenizer = load_data(spec, seed=0)
    blocks = list(data["train"]["input_ids"]) + list(data["validation"]["input_ids"])
    # 10 × (3 + 2 + 6) = 110 tokens with separators → 27 full blocks of 4.
    assert len(blocks) == 27 and all(len(b) == 4 for b in blocks)
    assert len(data["validation"]) == 6
    stream = [t for b in sorted(blocks) for t in b]
    assert stream.count(tokenizer.eos_token_id) > 0
    first = wrap(tokenizer(["a b", "c", "d e a b c"], add_special_tokens=False)["input_ids"], 0, 4)[0]
    assert first in blocks and first == [2, 3, 0, 4]


def test_local_txt_one_document_per_line(tmp_path, tokenizer_dir):
    path = tmp_path / "docs.txt"
    path.write_text("a b c\n\nd e\n" * 20)
    data, _ = load_data(DataSpec(source=str(path), tokenizer=tokenizer_dir, seq_len=6), seed=0)
    assert len(data["train"]) + len(data["validation"]) == (20 * 7) // 6


def test_malformed_jsonl_names_the_line(tmp_path, tokenizer_dir):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a"}\n{"text": \n')
    with pytest.raises(InputError, match=r"bad.jsonl:2: not valid JSON"):
        load_data(DataSpec(source=str(path), tokenizer=tokenizer_dir), seed=0)
    path.write_text('{"text": "a"}\n{"body": "b"}\n')
    with pytest.raises(InputError, match=r"bad.jsonl:2: expected an object with a string field 'text'"):
        load_data(DataSpec(source=str(path), tokenizer=tokenizer_dir), seed=0)


def test_synthetic_source_returns_its_tokenizer(tmp_path):
    data, tokenizer = load_data(DataSpec(num_train=10, num_valid=4, seq_len=8, cache_dir=str(tmp_path)), seed=0)
    assert len(data["train"]) == 10 and len(data["validation"]) == 4
    assert tokenizer.mask_token == "[MASK]"
