"""Finding and loading denoisers: our folders, train run dirs, released checkpoints, hub names."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Callable, TypeVar

import torch

from tokendrift_cli.errors import InputError, first_line
from tokendrift_cli.models.convert import config_from_reference, convert_reference_state_dict
from tokendrift_cli.models.dit import DiTConfig, DiTModel
from tokendrift_cli.spec.model import ModelSpec

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
T = TypeVar("T")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_model_dir(reference: str) -> Path | None:
    """A local folder holding a model: a train run dir's final model or latest checkpoint, or the folder itself."""
    path = Path(reference)
    if not path.exists():
        return None
    if (path / "model" / "config.json").is_file():
        return path / "model"
    checkpoints = sorted(path.glob("checkpoints/checkpoint-*/model"), key=lambda p: int(p.parent.name.split("-")[-1]))
    if checkpoints:
        return checkpoints[-1]
    return path


def load_denoiser(reference: str, backbone: str | None = None) -> DiTModel:
    """Load a DiTModel from a run dir, our save_pretrained folder, a reference-format folder,
    a Lightning .ckpt file, or a hub name (kuleshov-group/mdlm-owt, s-sahoo/duo)."""
    local = resolve_model_dir(reference)
    if local is None:
        local = _download(reference)
    if local.is_file() and local.suffix == ".ckpt":
        return _from_lightning(local, backbone)
    config_path = local / "config.json"
    if not config_path.is_file():
        raise InputError(f"model: {reference}: no config.json, checkpoint or train run found there")
    config = _read(config_path, lambda: json.loads(config_path.read_text(encoding="utf-8")))
    if config.get("model_type") == DiTConfig.model_type:
        model = _read(local, lambda: DiTModel.from_pretrained(local))
        if backbone is not None and model.config.backbone != backbone:
            raise InputError(f"model: {reference} is a {model.config.backbone} backbone, not {backbone}")
        return model
    return _from_reference_folder(local, config, backbone or _guess_backbone(reference))


def load_tokenizer_for(reference: str):
    """The tokenizer saved beside the model, else GPT-2's (what MDLM and DUO were trained with)."""
    from transformers import AutoTokenizer

    local = resolve_model_dir(reference)
    if local is not None and local.is_dir() and (local / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(local)
    return AutoTokenizer.from_pretrained("gpt2")


def build_denoiser(spec: ModelSpec, tokenizer, seq_len: int) -> DiTModel:
    """The model a train run starts from: `spec.init` if given, else a fresh one of `spec.size`."""
    if spec.init:
        return load_denoiser(spec.init, backbone=spec.backbone)
    data_vocab = data_vocab_size(tokenizer)
    overrides = {"max_position_embeddings": seq_len, "backbone": spec.backbone}
    if spec.backbone == "mdlm":  # the absorbing state is one extra id after the data tokens
        overrides.update(vocab_size=data_vocab + 1, mask_token_id=data_vocab)
    else:
        overrides.update(vocab_size=data_vocab, mask_token_id=None)
    overrides["time_conditioning"] = spec.time_conditioning if spec.time_conditioning is not None else spec.backbone == "duo"
    if spec.dropout is not None:
        overrides["dropout"] = spec.dropout
    return DiTModel(DiTConfig.from_size(spec.size, **overrides))


def data_vocab_size(tokenizer) -> int:
    """Ids real text uses: all of the tokenizer's, less a [MASK] that sits last (ours does)."""
    size = len(tokenizer)
    if tokenizer.mask_token_id is not None and tokenizer.mask_token_id == size - 1:
        return size - 1
    return size


def _read(path: Path, read: Callable[[], T]) -> T:
    """One file (or folder) of a checkpoint read: truncated or corrupt bytes are bad input naming it."""
    from safetensors import SafetensorError

    try:
        return read()
    except (SafetensorError, OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError, pickle.UnpicklingError) as err:
        raise InputError(f"model: {path}: cannot be read ({first_line(err)})") from None


def _guess_backbone(reference: str) -> str:
    return "duo" if "duo" in reference.lower() else "mdlm"


def _download(reference: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(reference))
    except Exception as err:  # offline, unknown repo, gated: all mean "not here"
        raise InputError(f"model: '{reference}' is not a local path and could not be fetched from the hub ({type(err).__name__})") from None


def _from_reference_folder(folder: Path, config: dict, backbone: str) -> DiTModel:
    """The HF wrapper of the released checkpoints (model_type 'mdlm'): weights under 'backbone.'."""
    weights = next((folder / name for name in WEIGHT_FILES if (folder / name).is_file()), None)
    if weights is None:
        raise InputError(f"model: {folder}: none of {', '.join(WEIGHT_FILES)} found")
    if weights.suffix == ".safetensors":
        from safetensors.torch import load_file

        state_dict = _read(weights, lambda: load_file(weights))
    else:
        state_dict = _read(weights, lambda: torch.load(weights, map_location="cpu", weights_only=True))
    return _assemble(state_dict, backbone, config.get("n_heads", 12), config.get("time_conditioning"), config.get("model_length", 1024))


def _from_lightning(path: Path, backbone: str | None) -> DiTModel:
    """A training checkpoint of the MDLM / DUO repositories (state_dict with 'backbone.' keys)."""
    checkpoint = _read(path, lambda: torch.load(path, map_location="cpu", weights_only=False))
    hyper = checkpoint.get("hyper_parameters", {}).get("config", {}) or {}
    model_cfg, algo_cfg = hyper.get("model", {}) or {}, hyper.get("algo", {}) or {}
    backbone = backbone or ("duo" if "duo" in str(algo_cfg.get("name", path.name)).lower() else "mdlm")
    return _assemble(
        checkpoint["state_dict"], backbone, model_cfg.get("n_heads", 12),
        algo_cfg.get("time_conditioning"), model_cfg.get("length", 1024),
    )


def _assemble(state_dict: dict, backbone: str, num_heads: int, time_conditioning: bool | None, length: int) -> DiTModel:
    config = config_from_reference(
        state_dict, num_attention_heads=num_heads, backbone=backbone, max_position_embeddings=length,
        time_conditioning=(backbone == "duo") if time_conditioning is None else bool(time_conditioning),
    )
    vocab = config.vocab_size
    config.mask_token_id = vocab - 1 if backbone == "mdlm" else None
    model = DiTModel(config)
    model.load_state_dict(convert_reference_state_dict(state_dict, model.state_dict()))
    return model
