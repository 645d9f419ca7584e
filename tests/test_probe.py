"""The probe: slot alignment for every adapter, injected collapse recovered, input errors, end to end."""

import json
import math

import pytest
import torch

from tokendrift_cli.jobs.probe import probe_prompts, prompts_from_lima
from tokendrift_cli.metrics.probe_stats import collapse_onset
from tokendrift_cli.models.adapters import MaskedLMAdapter
from tokendrift_cli.ui import UI

WORDS = ["<eos>", "the", ".", "cat", "dog", "runs", "sees", "bird", "fish", "tree", "[MASK]"]
MASK = len(WORDS) - 1


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<eos>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", mask_token="[MASK]")


def slot_index_model(shift: bool):
    """Predicts, at masked slot j (counted in the input), token 1 + (j mod 9); a Dream-like variant
    writes the prediction for position i at i - 1."""

    def forward(ids, attention):
        slot = (ids == MASK).long().cumsum(1) * (ids == MASK)
        target = torch.where(slot > 0, 1 + (slot - 1) % 9, 0)
        logits = torch.nn.functional.one_hot(target, len(WORDS)).float() * 10
        if shift:
            logits = torch.cat([logits[:, 1:], logits[:, -1:]], dim=1)
        return logits

    return forward


@pytest.mark.parametrize("shift", [False, True])
def test_slots_line_up_for_prompts_of_different_lengths(tokenizer, shift):
    adapter = MaskedLMAdapter(slot_index_model(shift), tokenizer, MASK, [0], shift, False, "fake")
    prompts = [{"id": i, "prompt": p} for i, p in enumerate(["the cat", "the dog runs . the bird sees the", "fish"])]
    rows, _ = probe_prompts(adapter, prompts, num_masks=12, top_k=2, batch_size=3, ui=UI(quiet=True))
    for row in rows:
        assert [slot["top_ids"][0] for slot in row["positions"]] == [1 + j % 9 for j in range(12)]


def test_an_unaligned_adapter_would_fail_the_same_check(tokenizer):
    """The shifted model read without undoing the shift predicts the wrong slots: the test can fail."""
    adapter = MaskedLMAdapter(slot_index_model(True), tokenizer, MASK, [0], False, False, "fake")
    rows, _ = probe_prompts(adapter, [{"id": 0, "prompt": "the cat"}], 6, 1, 1, UI(quiet=True))
    assert [s["top_ids"][0] for s in rows[0]["positions"]] != [1 + j for j in range(6)]


def drifting_model(num_masks: int, ramp: int):
    """Slot j mixes a content word with the stopword 'the' with weight min(1, j / ramp):
    the top-1 turns to 'the' once the weight passes 1/2 (ramp 21: from slot 11 on)."""

    def forward(ids, attention):
        slot = ((ids == MASK).long().cumsum(1) * (ids == MASK)).float()
        weight = (slot / ramp).clamp(max=1.0).unsqueeze(-1)
        content = torch.zeros(len(WORDS))
        content[WORDS.index("tree")] = 1
        prior = torch.zeros(len(WORDS))
        prior[WORDS.index("the")] = 1
        probs = (1 - weight) * content + weight * prior
        return (probs + 1e-6).log()

    return forward


def test_collapse_onset_recovers_the_injected_one(tokenizer):
    adapter = MaskedLMAdapter(drifting_model(40, ramp=21), tokenizer, MASK, [0], False, False, "fake")
    prompts = [{"id": i, "prompt": "the cat runs"} for i in range(4)]
    _, stats = probe_prompts(adapter, prompts, 40, 3, 2, UI(quiet=True))
    rows = stats.rows()
    assert collapse_onset(rows) == 11
    assert rows[0]["share_content"] == 1.0 and rows[-1]["share_stopword"] == 1.0
    # Entropy at slot 10 by hand: (1 - w, w) with w = 10/21, plus the fake's 1e-6 floor on the 10
    # words other than [MASK] (never a prediction). The probabilities come from float32 logits: each
    # is within ~(V + 4)u of its value, the entropy within (1 + H)·(V + 4)u ≈ 2e-6 relative.
    w = 10 / 21
    probs = [(p + 1e-6) / (1 + 10e-6) for p in [1 - w, w] + [0.0] * 8]
    assert rows[9]["mean_entropy"] == pytest.approx(-sum(p * math.log(p) for p in probs), rel=1e-5)
    # Every prompt gets the same distribution: the prompt no longer matters anywhere.
    assert all(r["prompt_divergence_bits"] < 1e-9 for r in rows)


def test_prompt_divergence_is_one_bit_for_two_disjoint_prompts(tokenizer):
    def forward(ids, attention):  # prompt "the ..." → 'cat'; anything else → 'dog', at every slot
        starts_the = (ids * attention == 1).any(1)
        target = torch.where(starts_the, WORDS.index("cat"), WORDS.index("dog"))
        return torch.nn.functional.one_hot(target, len(WORDS)).float()[:, None].expand(-1, ids.shape[1], -1).log().clamp(min=-50)

    adapter = MaskedLMAdapter(forward, tokenizer, MASK, [0], False, False, "fake")
    _, stats = probe_prompts(adapter, [{"id": 0, "prompt": "the cat"}, {"id": 1, "prompt": "fish runs"}], 3, 1, 2, UI(quiet=True))
    assert stats.rows()[0]["prompt_divergence_bits"] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("content, message", [
    ('{"prompt": "a"}\n{bad\n', "prompts.jsonl:2: not valid JSON"),
    ('{"prompt": "a"}\n{"text": "b"}\n', "prompts.jsonl:2: expected an object with a string field 'prompt'"),
    ("\n", "prompts.jsonl: no prompts"),
])
def test_malformed_prompts_exit_2_with_the_line(cli, tmp_path, content, message):
    path = tmp_path / "prompts.jsonl"
    path.write_text(content)
    code, _, err = cli("probe", "--prompts", str(path), "--model", "unused", "--out", str(tmp_path / "p"))
    assert code == 2 and message in err and "Traceback" not in err


def test_prompts_from_a_lima_shaped_file(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps({"conversations": [f"question {i}?", f"answer {i}"], "source": "x"}) for i in range(10)))
    drawn = prompts_from_lima(str(path), 4, seed=0)
    assert len(drawn) == 4 and len({p["id"] for p in drawn}) == 4
    assert all(p["prompt"] == f"question {p['id']}?" for p in drawn)
    assert drawn == prompts_from_lima(str(path), 4, seed=0)


def test_probe_end_to_end_on_a_trained_run(cli, trained_run, tmp_path):
    out = tmp_path / "probe"
    # The model was trained on 16 positions: prompts of 2-6 words and 8 masks fit in them.
    code, stdout, err = cli("probe", "--model", str(trained_run), "--num-masks", "8", "--num-prompts", "20", "--out", str(out), "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["num_prompts"] == 20 and summary["num_masks"] == 8
    positions = json.loads((out / "positions.json").read_text())
    assert len(positions) == 8
    shares = positions[0]
    assert shares["share_eos"] + shares["share_punctuation"] + shares["share_stopword"] + shares["share_content"] == pytest.approx(1.0)
    lines = (out / "per_prompt.jsonl").read_text().splitlines()
    assert len(lines) == 20 and len(json.loads(lines[0])["positions"][0]["top_ids"]) == 3
    for name in ("entropy_by_position.png", "categories_by_position.png", "top1_heatmap.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert (out / "positions.csv").read_text().startswith("position,")


def fake_dllm_folder(tmp_path, tokenizer, family: str):
    """A Dream- or LLaDA-like model saved as the hub folders are: weights, config.json whose auto_map
    points at the modeling file beside it, tokenizer files."""
    import os
    import shutil

    import fake_dllm

    config_class, model_class = {"dream": (fake_dllm.FakeDreamConfig, fake_dllm.FakeDreamModel),
                                 "llada": (fake_dllm.FakeLLaDAConfig, fake_dllm.FakeLLaDAModel)}[family]
    torch.manual_seed(0)
    model = model_class(config_class(vocab_size=len(WORDS)))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    # A name of its own: transformers copies remote code into a shared cache under the folder's name.
    folder = tmp_path / f"fake-{family}-{os.getpid()}"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    shutil.copy(fake_dllm.__file__, folder / "modeling_fake_dllm.py")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": f"modeling_fake_dllm.{config_class.__name__}", "AutoModel": f"modeling_fake_dllm.{model_class.__name__}"}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


PROMPTS = ["the cat", "the dog runs . the bird sees the", "fish"]


def test_dream_gets_the_mask_and_positions_of_its_own_generation_code(tokenizer, tmp_path):
    """Left-padded in one batch, each prompt's logits equal those of the prompt alone (nothing padded:
    Dream's "full" attention at positions 0..L-1)."""
    from tokendrift_cli.jobs.probe import _left_pad
    from tokendrift_cli.models.adapters import load_adapter
    from tokendrift_cli.spec.probe import ProbeSpec

    folder = fake_dllm_folder(tmp_path, tokenizer, "dream")
    adapter = load_adapter(ProbeSpec(mask_id=MASK, shift=True, chat_template="off", trust_remote_code=True), str(folder))
    encoded = [adapter.tokenize_prompt(p) for p in PROMPTS]
    batched = adapter.logits(*_left_pad(encoded, 4, MASK, adapter.pad_id))[:, -4:]
    for row, prompt in enumerate(encoded):
        alone = adapter.logits(*_left_pad([prompt], 4, MASK, adapter.pad_id))[0, -4:]
        torch.testing.assert_close(batched[row], alone, rtol=1e-5, atol=1e-5)
    rows, _ = probe_prompts(adapter, [{"id": i, "prompt": p} for i, p in enumerate(PROMPTS)], 4, 2, 3, UI(quiet=True))
    assert len(rows) == 3 and all(len(r["positions"]) == 4 for r in rows)


def test_llada_gets_the_padding_mask_and_masks_the_padding_itself(tokenizer, tmp_path):
    """What fills the padding does not reach any real position (LLaDA keeps positions 0..L-1, so the
    prompt alone is not the reference here)."""
    from tokendrift_cli.jobs.probe import _left_pad
    from tokendrift_cli.models.adapters import load_adapter
    from tokendrift_cli.spec.probe import ProbeSpec

    folder = fake_dllm_folder(tmp_path, tokenizer, "llada")
    adapter = load_adapter(ProbeSpec(mask_id=MASK, chat_template="off", trust_remote_code=True), str(folder))
    encoded = [adapter.tokenize_prompt(p) for p in PROMPTS]
    ids, attention = _left_pad(encoded, 4, MASK, adapter.pad_id)
    refilled = ids.masked_fill(attention == 0, WORDS.index("tree"))
    real = attention.bool()
    torch.testing.assert_close(adapter.logits(ids, attention)[real], adapter.logits(refilled, attention)[real])
    assert not torch.equal(adapter.logits(refilled, torch.ones_like(attention)), adapter.logits(ids, torch.ones_like(attention)))


def test_our_dit_goes_through_the_padding_mask_forward_of_any_masked_lm(tokenizer, tmp_path):
    """A folder of ours: the adapter's logits are what transformers' AutoModelForMaskedLM gives for
    the same ids and padding mask, the mask id is the model's own, and the padding reaches no real position."""
    import shutil
    from pathlib import Path

    from transformers import AutoModelForMaskedLM

    from tokendrift_cli.jobs.probe import _left_pad
    from tokendrift_cli.models.adapters import load_adapter
    from tokendrift_cli.spec.probe import ProbeSpec

    folder = tmp_path / "dit"
    shutil.copytree(Path(__file__).parent / "data" / "dit-1b051dc", folder)  # vocabulary of 11, [MASK] last, as WORDS
    tokenizer.save_pretrained(folder)
    adapter = load_adapter(ProbeSpec(chat_template="off"), str(folder))
    assert adapter.mask_id == MASK
    ids, attention = _left_pad([adapter.tokenize_prompt(p) for p in ["the cat", "dog runs .", "fish"]], 4, MASK, adapter.pad_id)
    expected = AutoModelForMaskedLM.from_pretrained(folder)(input_ids=ids, attention_mask=attention).logits
    torch.testing.assert_close(adapter.logits(ids, attention), expected)
    refilled = ids.masked_fill(attention == 0, WORDS.index("tree"))
    real = attention.bool()
    torch.testing.assert_close(adapter.logits(refilled, attention)[real], expected[real])
