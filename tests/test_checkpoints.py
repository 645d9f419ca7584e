"""Released MDLM / DUO checkpoints in their own layouts, built here with random weights: the HF
folder (kuleshov-group/mdlm-owt's) and the Lightning `.ckpt` of both repositories (state dict,
EMA shadows, Hydra config as OmegaConf objects). Logits are checked against the plain
re-computation of the reference forward pass in test_dit.py."""

import json
import sys
from collections import OrderedDict

import pytest
import torch
from test_dit import COND, FORWARD_TOLERANCE, LAYERS, D, H, V, recompute_logits, reference_state_dict
from test_train import SHORT

from tokendrift_cli.errors import InputError
from tokendrift_cli.models.loading import load_denoiser

WORDS = ["<eos>", "the", ".", "cat", "dog", "runs", "sees", "bird", "fish", "tree", "[MASK]"]  # V words, mask last
IDS = torch.tensor([[1, 4, 10, 2, 7], [3, 3, 0, 9, 10]])
SIGMA = torch.tensor([0.3, 2.0])

# The Hydra configs as the repositories write them: the keys the loader reads and some neighbours.
MODEL = {"name": "tiny", "hidden_size": D, "cond_dim": COND, "n_blocks": LAYERS, "n_heads": H, "length": 8, "dropout": 0.1}
DUO = {"algo": {"name": "duo", "backbone": "dit", "parameterization": "mean", "time_conditioning": True, "T": 0}, "model": MODEL}
DUO_DISTILLED = {"algo": {"name": "distillation", "backbone": "dit", "parameterization": "mean", "time_conditioning": True, "T": 64}, "model": MODEL}
DUO_REPO_MDLM = {"algo": {"name": "mdlm", "backbone": "dit", "parameterization": "subs", "time_conditioning": False, "T": 0}, "model": MODEL}
MDLM = {"diffusion": "absorbing_state", "backbone": "dit", "parameterization": "subs", "time_conditioning": False, "T": 0, "model": MODEL}
# The HF wrapper's config.json: MDLM's (kuleshov-group/mdlm-owt) has `time_conditioning`, DUO's does not.
MDLM_HF = {"model_type": "mdlm", "vocab_size": V, "model_length": 8, "hidden_dim": D, "cond_dim": COND, "n_blocks": LAYERS, "n_heads": H,
           "dropout": 0.1, "time_conditioning": False}
DUO_HF = {key: value for key, value in MDLM_HF.items() if key != "time_conditioning"}


def word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<eos>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", mask_token="[MASK]")


def lightning_ckpt(path, config: dict, raw: dict, ema: dict | None = None):
    """What the MDLM and DUO trainers save: the module's state dict (the backbone under 'backbone.',
    in module order), the EMA's `shadow_params` in the order of the backbone's parameters (its
    state dict less the rotary buffer), and `hyper_parameters` holding the Hydra config as an
    OmegaConf object and (MDLM) the tokenizer object."""
    from omegaconf import OmegaConf

    shadows = [value for key, value in (ema or raw).items() if not key.endswith("rotary_emb.inv_freq")]
    torch.save({
        "epoch": 3, "global_step": 1000, "pytorch-lightning_version": "2.2.1",
        "state_dict": OrderedDict(raw),
        "ema": {"decay": 0.9999, "num_updates": 1000, "shadow_params": shadows},
        "hyper_parameters": {"config": OmegaConf.create(config), "tokenizer": word_tokenizer()},
        "loops": {"fit_loop": {"epoch_progress": {"current": {"completed": 3}}}},
    }, path)
    return path


def hf_folder(path, config: dict, sd: dict, tokenizer: bool = True):
    from safetensors.torch import save_file

    path.mkdir(parents=True)
    save_file(sd, path / "model.safetensors")
    (path / "config.json").write_text(json.dumps(config))
    if tokenizer:
        word_tokenizer().save_pretrained(path)
    return path


def error_lines(stderr: str) -> list[str]:
    """What the CLI reported (library progress bars also write to stderr)."""
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def logits(model, sigma=SIGMA):
    with torch.no_grad():
        return model.eval()(input_ids=IDS, sigma=sigma).logits.double()


def test_lightning_ckpt_loads_its_ema_weights_by_default_and_raw_on_request(tmp_path):
    raw, ema = reference_state_dict(seed=0), reference_state_dict(seed=1)
    ckpt = lightning_ckpt(tmp_path / "last.ckpt", DUO, raw, ema)
    torch.testing.assert_close(logits(load_denoiser(str(ckpt))), recompute_logits(ema, IDS, SIGMA), **FORWARD_TOLERANCE)
    torch.testing.assert_close(logits(load_denoiser(str(ckpt), weights="raw")), recompute_logits(raw, IDS, SIGMA), **FORWARD_TOLERANCE)


def test_lightning_ckpt_reads_without_omegaconf_or_the_pickled_tokenizer_class(tmp_path, monkeypatch):
    ckpt = lightning_ckpt(tmp_path / "last.ckpt", DUO, reference_state_dict())
    for name in [m for m in sys.modules if m.split(".")[0] in ("omegaconf", "antlr4")] + ["omegaconf"]:
        monkeypatch.setitem(sys.modules, name, None)  # `import omegaconf` now fails, as where it is not installed
    model = load_denoiser(str(ckpt))
    assert model.config.backbone == "duo" and model.config.num_attention_heads == H


@pytest.mark.parametrize("layout, config, backbone, time_conditioning", [
    ("ckpt", DUO, "duo", True),
    ("ckpt", DUO_DISTILLED, "duo", True),
    ("ckpt", DUO_REPO_MDLM, "mdlm", False),
    ("ckpt", MDLM, "mdlm", False),
    ("hf", DUO_HF, "duo", True),
    ("hf", MDLM_HF, "mdlm", False),
])
def test_the_process_comes_from_the_checkpoints_own_config(tmp_path, layout, config, backbone, time_conditioning):
    """Folder and file names say nothing here ('model', 'last.ckpt')."""
    sd = reference_state_dict()
    path = lightning_ckpt(tmp_path / "last.ckpt", config, sd) if layout == "ckpt" else hf_folder(tmp_path / "model", config, sd)
    model = load_denoiser(str(path))
    assert (model.config.backbone, model.config.time_conditioning) == (backbone, time_conditioning)
    assert model.config.mask_token_id == (V - 1 if backbone == "mdlm" else None)
    sigma = SIGMA if time_conditioning else torch.zeros(2)  # time conditioning off: σ is fed as zeros
    torch.testing.assert_close(logits(model), recompute_logits(sd, IDS, sigma), **FORWARD_TOLERANCE)
    other = "mdlm" if backbone == "duo" else "duo"
    with pytest.raises(InputError, match=f"model.backbone: {other}, but .* is a {backbone} checkpoint"):
        load_denoiser(str(path), backbone=other)


def test_train_init_takes_the_backbone_from_the_checkpoint(cli, tmp_path):
    from tokendrift_cli.data.synthetic import SyntheticLanguage

    data_vocab = len(SyntheticLanguage().tokenizer()) - 1  # DUO has no [MASK]
    folder = hf_folder(tmp_path / "model", DUO_HF, reference_state_dict(vocab=data_vocab), tokenizer=False)
    out = tmp_path / "run"
    code, stdout, err = cli("train", "--init", str(folder), "--objective", "diffusion", "--max-steps", "1", "--out", str(out), "--json",
                            *SHORT, "--set", "data.seq_len=8", "--set", f"data.cache_dir={tmp_path / 'cache'}")
    assert code == 0, err
    assert json.loads(stdout)["backbone"] == "duo"
    code, _, err = cli("train", "--init", str(folder), "--backbone", "mdlm", "--out", str(tmp_path / "r2"), *SHORT,
                       "--set", "data.seq_len=8", "--set", f"data.cache_dir={tmp_path / 'cache'}")
    assert code == 2 and error_lines(err) == [f"error: model.backbone: mdlm, but {folder} is a duo checkpoint"], err


def _without(sd: dict, key: str) -> dict:
    return {k: v for k, v in sd.items() if k != key}


BROKEN = {
    "missing": (lambda sd: _without(sd, "backbone.blocks.1.attn_out.weight"), "checkpoint lacks blocks.1.attn_out.weight"),
    "unknown": (lambda sd: sd | {"backbone.blocks.0.extra.weight": torch.zeros(2)}, "checkpoint has unknown parameter blocks.0.extra.weight"),
    "shape": (lambda sd: sd | {"backbone.blocks.0.attn_out.weight": torch.zeros(D, D + 1)},
              "blocks.0.attn_out.weight: checkpoint shape (16, 17) != model shape (16, 16)"),
    "no embedding": (lambda sd: _without(sd, "backbone.vocab_embed.embedding"), "checkpoint lacks vocab_embed.embedding"),
}


@pytest.mark.parametrize("layout", ["ckpt", "hf"])
@pytest.mark.parametrize("fault", list(BROKEN))
def test_a_broken_checkpoint_is_one_line_naming_the_file_and_key(cli, tmp_path, layout, fault):
    damage, message = BROKEN[fault]
    sd = damage(reference_state_dict())
    path = lightning_ckpt(tmp_path / "last.ckpt", MDLM, sd) if layout == "ckpt" else hf_folder(tmp_path / "model", MDLM_HF, sd)
    code, _, err = cli("sample", "--model", str(path), "--nfe", "2", "--num-samples", "2", "--out", str(tmp_path / "s"))
    [line] = error_lines(err)
    assert code == 2 and "Traceback" not in err and path.name in line and message in line, err


@pytest.mark.parametrize("case, message", [
    ("ema", "ema.shadow_params holds 2 tensors for 30 parameters"),  # 5 embedding and σ map, 2 × 10 blocks, 5 output
    ("garbage", "not a readable Lightning checkpoint"),
    ("no tokenizer", "no tokenizer files beside the model"),
])
def test_other_unusable_checkpoints_are_one_line_errors(cli, tmp_path, case, message):
    sd = reference_state_dict()
    if case == "ema":
        path = lightning_ckpt(tmp_path / "last.ckpt", MDLM, sd)
        checkpoint = torch.load(path, weights_only=False)
        checkpoint["ema"]["shadow_params"] = checkpoint["ema"]["shadow_params"][:2]
        torch.save(checkpoint, path)
    elif case == "garbage":
        path = tmp_path / "last.ckpt"
        path.write_bytes(b"not a zip, not a pickle")
    else:  # offline (conftest), the GPT-2 tokenizer cannot be fetched
        path = hf_folder(tmp_path / "model", MDLM_HF, sd, tokenizer=False)
    code, _, err = cli("sample", "--model", str(path), "--nfe", "2", "--num-samples", "2", "--out", str(tmp_path / "s"))
    [line] = error_lines(err)
    assert code == 2 and "Traceback" not in err and path.name in line and message in line, err


def test_probe_and_sample_read_a_local_copy_of_mdlm_owt_with_the_same_loader(cli, tmp_path):
    sd = reference_state_dict()
    folder = hf_folder(tmp_path / "mdlm-owt", MDLM_HF, sd)
    out = tmp_path / "probe"
    code, _, err = cli("probe", "--model", str(folder), "--prompt", "the cat", "--num-masks", "3", "--top-k", "1", "--out", str(out), "--quiet")
    assert code == 0, err
    # The probe's top-1 at each masked slot is the re-computed reference's argmax, [MASK] excluded.
    ids = torch.tensor([[1, 3, 10, 10, 10]])
    expected = recompute_logits(sd, ids, torch.zeros(1))[0, 2:]
    expected[:, V - 1] = float("-inf")
    row = json.loads((out / "per_prompt.jsonl").read_text().splitlines()[0])
    assert [slot["top_ids"][0] for slot in row["positions"]] == expected.argmax(-1).tolist()
    code, _, err = cli("sample", "--model", str(folder), "--nfe", "2", "--num-samples", "2", "--out", str(tmp_path / "s"), "--quiet")
    assert code == 0, err
