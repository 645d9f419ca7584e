"""Finding and loading denoisers: our folders, train run dirs, released checkpoints, hub names.

Every command finds a model with `locate` (a local path, else a hub snapshot) and reads a
denoiser with `load_denoiser`, which decides MDLM or DUO from the checkpoint itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from tokendrift_cli.errors import InputError, first_line
from tokendrift_cli.models.convert import DROPPED, config_from_reference, convert_reference_state_dict, strip_prefix
from tokendrift_cli.models.dit import DiTConfig, DiTModel
from tokendrift_cli.models.exact import is_exact
from tokendrift_cli.runs import model_folder
from tokendrift_cli.spec.model import ModelSpec

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Without network the hub client retries for about a minute before it gives up; this says how not to wait.
OFFLINE_HINT = "offline? set HF_HUB_OFFLINE=1 so a missing model fails at once, and give a local folder"


def default_device() -> torch.device:
    """Where a command runs a model outside Accelerate's training loop: the GPU when there is one."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def locate(reference: str) -> Path:
    """Where a model's files are: a local path (see runs.model_folder), else a hub snapshot."""
    return model_folder(reference) or _download(reference)


def is_denoiser(path: Path) -> bool:
    """Whether `load_denoiser` reads this path: a Lightning .ckpt, one of our DiT folders, or a folder
    of released MDLM / DUO weights (known by the reference DiT's parameter names, whatever its config says)."""
    if path.is_file():
        return path.suffix == ".ckpt"
    if _read_config(path).get("model_type") == DiTConfig.model_type:
        return True
    weights = _weights_file(path)
    return weights is not None and "vocab_embed.embedding" in strip_prefix(dict.fromkeys(_weight_names(weights)))


def load_denoiser(reference: str, backbone: str | None = None, weights: str = "ema") -> DiTModel:
    """Load a DiTModel from a run dir, our save_pretrained folder, a reference-format folder,
    a Lightning .ckpt file, or a hub name (kuleshov-group/mdlm-owt, s-sahoo/duo).

    MDLM or DUO is read off the checkpoint; `backbone`, when given, must agree with it (it decides
    only for a checkpoint that does not say). `weights`: "ema" loads a .ckpt's EMA weights (what
    the reference repositories evaluate and sample with) when it has them, "raw" its training weights.
    """
    if is_exact(reference):
        raise InputError(f"model: {reference} is the synthetic language's exact posterior, not weights to load or train; sample, eval and probe read it")
    path = locate(reference)
    if path.is_file():
        if path.suffix != ".ckpt":
            raise InputError(f"model: {reference}: not a Lightning .ckpt, a model folder or a train run")
        return _from_lightning(path, backbone, weights)
    config = _read_config(path)
    if not config:
        raise InputError(f"model: {reference}: no config.json, checkpoint or train run found there")
    if config.get("model_type") == DiTConfig.model_type:
        model = _from_ours(path)
        _agree(model.config.backbone, backbone, path)
        return model
    return _from_reference_folder(path, config, backbone)


def load_tokenizer_for(reference: str):
    """The tokenizer saved beside the model, else GPT-2's (what MDLM and DUO were trained with)."""
    from transformers import AutoTokenizer

    path = locate(reference)
    if path.is_dir() and (path / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(path)
    try:
        return AutoTokenizer.from_pretrained("gpt2")
    except (OSError, ValueError) as err:
        raise InputError(
            f"model: {path}: no tokenizer files beside the model, and GPT-2's (the MDLM and DUO default) "
            f"could not be fetched ({type(err).__name__}); save the tokenizer into that folder, or {OFFLINE_HINT}"
        ) from None


def build_denoiser(spec: ModelSpec, tokenizer, seq_len: int) -> DiTModel:
    """The model a train run starts from: `spec.init` if given, else a fresh one of `spec.size`."""
    if spec.init:
        return load_denoiser(spec.init, backbone=spec.backbone, weights=spec.init_weights)
    backbone = spec.backbone or "mdlm"
    data_vocab = data_vocab_size(tokenizer)
    overrides: dict[str, Any] = {"max_position_embeddings": seq_len, "backbone": backbone}
    if backbone == "mdlm":  # the absorbing state is one extra id after the data tokens
        overrides.update(vocab_size=data_vocab + 1, mask_token_id=data_vocab)
    else:
        overrides.update(vocab_size=data_vocab, mask_token_id=None)
    overrides["time_conditioning"] = spec.time_conditioning if spec.time_conditioning is not None else backbone == "duo"
    if spec.dropout is not None:
        overrides["dropout"] = spec.dropout
    return DiTModel(DiTConfig.from_size(spec.size, **overrides))


def data_vocab_size(tokenizer) -> int:
    """Ids real text uses: all of the tokenizer's, less a [MASK] that sits last (ours does)."""
    size = len(tokenizer)
    if tokenizer.mask_token_id is not None and tokenizer.mask_token_id == size - 1:
        return size - 1
    return size


def _download(reference: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(reference))
    except Exception as err:  # offline, unknown repo, gated: all mean "not here"
        raise InputError(f"model: '{reference}' is not a local path and could not be fetched from the hub ({type(err).__name__}); {OFFLINE_HINT}") from None


def _read_config(folder: Path) -> dict:
    """config.json as a dict; {} when there is none."""
    path = folder / "config.json"
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InputError(f"model: {path}: not valid JSON") from None
    if not isinstance(config, dict):
        raise InputError(f"model: {path}: expected a JSON object")
    return config


def _weights_file(folder: Path) -> Path | None:
    return next((folder / name for name in WEIGHT_FILES if (folder / name).is_file()), None)


def _weight_names(weights: Path) -> list[str]:
    if weights.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(weights, "pt") as f:
            return list(f.keys())
    return list(_read_weights(weights))


def _read_weights(weights: Path) -> dict:
    try:
        if weights.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(weights)
        return torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt or foreign file: what went wrong is in the message
        raise InputError(f"model: {weights}: cannot be read ({first_line(err)})") from None


def _agree(found: str | None, requested: str | None, source: Path) -> str:
    """The backbone: the checkpoint's, which a requested one must match; the request only where the checkpoint is silent."""
    if found is not None and requested is not None and found != requested:
        raise InputError(f"model.backbone: {requested}, but {source} is a {found} checkpoint")
    if found is None:
        if requested is None:
            raise InputError(f"model: {source}: the checkpoint does not record whether it is MDLM or DUO; set model.backbone (train --backbone)")
        return requested
    return found


def _from_ours(folder: Path) -> DiTModel:
    from safetensors import SafetensorError

    model: DiTModel
    info: dict[str, list]
    try:
        # With output_loading_info it returns (model, info); transformers' hints give only the model.
        model, info = DiTModel.from_pretrained(folder, output_loading_info=True)  # type: ignore[misc]
    except (OSError, ValueError, RuntimeError, SafetensorError) as err:  # truncated or corrupt files
        raise InputError(f"model: {folder}: cannot be read ({first_line(err)})") from None
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        if info.get(kind):  # transformers would only warn and keep random weights
            raise InputError(f"model: {folder}: {kind.replace('_', ' ')}: {info[kind][0]}")
    return model


def _from_reference_folder(folder: Path, config: dict, requested: str | None) -> DiTModel:
    """The HF wrapper of the released checkpoints: weights under 'backbone.'. MDLM's config
    (kuleshov-group/mdlm-owt) has a `time_conditioning` key, DUO's has none (and conditions on time)."""
    weights = _weights_file(folder)
    if weights is None:
        raise InputError(f"model: {folder}: none of {', '.join(WEIGHT_FILES)} found")
    state_dict = _read_weights(weights)
    found = "mdlm" if "time_conditioning" in config else "duo"
    backbone = _agree(found, requested, folder)
    return _assemble(state_dict, backbone, config.get("n_heads", 12), config.get("time_conditioning", True), config.get("model_length", 1024), weights)


def _from_lightning(path: Path, requested: str | None, weights: str) -> DiTModel:
    """A training checkpoint of the MDLM / DUO repositories: `state_dict` with 'backbone.' keys,
    `ema.shadow_params`, and the Hydra config under `hyper_parameters.config`."""
    from tokendrift_cli.models.lightning import plain, read_checkpoint

    try:
        checkpoint = read_checkpoint(path)
    except Exception as err:  # truncated, not a torch file, not a dict: all mean "not a checkpoint"
        raise InputError(f"model: {path}: not a readable Lightning checkpoint ({first_line(err)})") from None
    state_dict = checkpoint.get("state_dict")
    if not isinstance(state_dict, dict):
        raise InputError(f"model: {path}: no 'state_dict' in the checkpoint")
    hyper = plain(checkpoint.get("hyper_parameters")) or {}
    config = hyper.get("config") if isinstance(hyper, dict) else None
    config = config if isinstance(config, dict) else {}
    found, time_conditioning = _lightning_process(config, path)
    backbone = _agree(found, requested, path)
    if weights == "ema" and checkpoint.get("ema") is not None:
        state_dict = _ema_weights(state_dict, checkpoint["ema"], path)
    model_config = config.get("model") or {}
    if time_conditioning is None:
        time_conditioning = backbone == "duo"
    return _assemble(state_dict, backbone, model_config.get("n_heads", 12), time_conditioning, model_config.get("length", 1024), path)


def _lightning_process(config: dict, path: Path) -> tuple[str | None, bool | None]:
    """(backbone, time conditioning) from an MDLM or DUO run's Hydra config: DUO's repository
    nests them under `algo`, MDLM's has them at the top level; the parameterization tells the
    process (subs: MDLM, mean: DUO). (None, None) when the checkpoint has no such config."""
    algo = config.get("algo")
    if not isinstance(algo, dict):
        algo = config
    parameterization = algo.get("parameterization")
    if parameterization is None:
        return None, None
    backbone = {"subs": "mdlm", "mean": "duo"}.get(parameterization)
    if backbone is None:
        raise InputError(f"model: {path}: a '{parameterization}' checkpoint (hyper_parameters.config); only MDLM (subs) and DUO (mean) load")
    time_conditioning = algo.get("time_conditioning")
    return backbone, None if time_conditioning is None else bool(time_conditioning)


def _ema_weights(state_dict: dict, ema, path: Path) -> dict:
    """The reference's EMA keeps `shadow_params`, a list in the order of the backbone's parameters
    (then the noise schedule's, which we do not use): the state dict's backbone entries less its buffers."""
    shadows = ema.get("shadow_params") if isinstance(ema, dict) else None
    if not isinstance(shadows, list):
        raise InputError(f"model: {path}: ema: no shadow_params list (load the raw weights with weights=raw)")
    names = [name for name in strip_prefix(state_dict) if not DROPPED.match(name)]
    if len(shadows) < len(names):
        raise InputError(f"model: {path}: ema.shadow_params holds {len(shadows)} tensors for {len(names)} parameters")
    raw = strip_prefix(state_dict)
    for index, (name, shadow) in enumerate(zip(names, shadows)):
        if not isinstance(shadow, torch.Tensor) or shadow.shape != raw[name].shape:
            raise InputError(f"model: {path}: ema.shadow_params[{index}] does not fit {name} {tuple(raw[name].shape)}")
    return dict(zip(names, shadows))


def _assemble(state_dict: dict, backbone: str, num_heads: int, time_conditioning: bool, length: int, source: Path) -> DiTModel:
    config = config_from_reference(
        state_dict, num_attention_heads=num_heads, backbone=backbone, source=f"model: {source}",
        max_position_embeddings=length, time_conditioning=bool(time_conditioning),
    )
    model = DiTModel(config)
    model.load_state_dict(convert_reference_state_dict(state_dict, model.state_dict(), source=f"model: {source}"))
    return model
