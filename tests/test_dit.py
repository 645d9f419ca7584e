"""The DiT denoiser: reference-layout conversion checked against a from-scratch recomputation."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tokendrift_cli.errors import InputError
from tokendrift_cli.models.convert import convert_reference_state_dict
from tokendrift_cli.models.dit import DiTConfig, DiTModel, TokenEmbedding
from tokendrift_cli.models.loading import load_denoiser

V, D, H, LAYERS, COND, FREQ = 11, 16, 2, 2, 8, 256

# Logits of this DiT in float32 against the float64 recomputation (or against float32 logits saved
# from other kernels): the σ map sums 256 products, each block a handful of ≤ 64-term matmuls, layer
# norms and a softmax, so a logit (of size ≈ 1–5) carries a few hundred roundings of u = 6e-8 at
# most, ~1e-5; 1e-4 (absolute plus relative) leaves ten times that.
FORWARD_TOLERANCE = {"rtol": 1e-4, "atol": 1e-4}


def reference_state_dict(seed=0, vocab=V) -> dict:
    """Random tensors with the released checkpoints' names and shapes, in the order the reference
    DIT registers them (embedding, σ map, rotary buffer, blocks, output layer: the order of its
    state dict and of its `parameters()`), under the wrappers' 'backbone.' prefix."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=g) * 0.3  # noqa: E731
    sd = {
        "vocab_embed.embedding": r(vocab, D),
        "sigma_map.mlp.0.weight": r(COND, FREQ), "sigma_map.mlp.0.bias": r(COND),
        "sigma_map.mlp.2.weight": r(COND, COND), "sigma_map.mlp.2.bias": r(COND),
        "rotary_emb.inv_freq": torch.zeros(D // H // 2),
    }
    for i in range(LAYERS):
        sd |= {
            f"blocks.{i}.norm1.weight": 1 + r(D), f"blocks.{i}.attn_qkv.weight": r(3 * D, D),
            f"blocks.{i}.attn_out.weight": r(D, D), f"blocks.{i}.norm2.weight": 1 + r(D),
            f"blocks.{i}.mlp.0.weight": r(4 * D, D), f"blocks.{i}.mlp.0.bias": r(4 * D),
            f"blocks.{i}.mlp.2.weight": r(D, 4 * D), f"blocks.{i}.mlp.2.bias": r(D),
            f"blocks.{i}.adaLN_modulation.weight": r(6 * D, COND), f"blocks.{i}.adaLN_modulation.bias": r(6 * D),
        }
    sd |= {
        "output_layer.norm_final.weight": 1 + r(D),
        "output_layer.linear.weight": r(vocab, D), "output_layer.linear.bias": r(vocab),
        "output_layer.adaLN_modulation.weight": r(2 * D, COND), "output_layer.adaLN_modulation.bias": r(2 * D),
    }
    return {f"backbone.{k}": v for k, v in sd.items()}


def recompute_logits(sd: dict, ids: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The reference DIT forward written out with plain tensor ops, one position at a time where clearer."""
    sd = {k.removeprefix("backbone."): v.double() for k, v in sd.items()}
    x = sd["vocab_embed.embedding"][ids]
    half = FREQ // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float64) / half)
    t = torch.cat([torch.cos(sigma[:, None] * freqs), torch.sin(sigma[:, None] * freqs)], -1)
    h = t @ sd["sigma_map.mlp.0.weight"].T + sd["sigma_map.mlp.0.bias"]
    h = h * torch.sigmoid(h)
    c = h @ sd["sigma_map.mlp.2.weight"].T + sd["sigma_map.mlp.2.bias"]
    c = c * torch.sigmoid(c)

    def norm(v, w):
        mu = v.mean(-1, keepdim=True)
        var = ((v - mu) ** 2).mean(-1, keepdim=True)
        return (v - mu) / torch.sqrt(var + 1e-5) * w

    L, hd = ids.shape[1], D // H
    inv = 1.0 / 10000 ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd)

    def rotate(vec, pos):  # vec [hd] at position pos: pairs (i, i + hd/2) rotated by pos·inv_freq[i]
        out = vec.clone()
        for i in range(hd // 2):
            a, b = vec[i], vec[i + hd // 2]
            ang = pos * inv[i]
            out[i] = a * math.cos(ang) - b * math.sin(ang)
            out[i + hd // 2] = b * math.cos(ang) + a * math.sin(ang)
        return out

    for i in range(LAYERS):
        p = f"blocks.{i}."
        mod = c @ sd[p + "adaLN_modulation.weight"].T + sd[p + "adaLN_modulation.bias"]
        sh1, sc1, g1, sh2, sc2, g2 = mod[:, None].chunk(6, -1)
        y = norm(x, sd[p + "norm1.weight"]) * (1 + sc1) + sh1
        qkv = y @ sd[p + "attn_qkv.weight"].T
        out = torch.zeros_like(x)
        for b in range(ids.shape[0]):
            for head in range(H):
                q = torch.stack([rotate(qkv[b, l, head * hd:(head + 1) * hd], l) for l in range(L)])
                k = torch.stack([rotate(qkv[b, l, D + head * hd:D + (head + 1) * hd], l) for l in range(L)])
                v = qkv[b, :, 2 * D + head * hd:2 * D + (head + 1) * hd]
                att = torch.softmax(q @ k.T / math.sqrt(hd), -1)
                out[b, :, head * hd:(head + 1) * hd] = att @ v
        x = x + g1 * (out @ sd[p + "attn_out.weight"].T)
        y = norm(x, sd[p + "norm2.weight"]) * (1 + sc2) + sh2
        y = F.gelu(y @ sd[p + "mlp.0.weight"].T + sd[p + "mlp.0.bias"], approximate="tanh")
        x = x + g2 * (y @ sd[p + "mlp.2.weight"].T + sd[p + "mlp.2.bias"])
    mod = c @ sd["output_layer.adaLN_modulation.weight"].T + sd["output_layer.adaLN_modulation.bias"]
    shift, scale = mod[:, None].chunk(2, -1)
    y = norm(x, sd["output_layer.norm_final.weight"]) * (1 + scale) + shift
    return y @ sd["output_layer.linear.weight"].T + sd["output_layer.linear.bias"]


def converted_model(time_conditioning=True) -> tuple[DiTModel, dict]:
    sd = reference_state_dict()
    config = DiTConfig(vocab_size=V, hidden_size=D, num_hidden_layers=LAYERS, num_attention_heads=H, cond_dim=COND,
                       dropout=0.0, time_conditioning=time_conditioning, mask_token_id=V - 1, max_position_embeddings=8)
    model = DiTModel(config).eval()
    model.load_state_dict(convert_reference_state_dict(sd, model.state_dict(), source="test"))
    return model, sd


def test_converted_logits_equal_a_straightforward_recomputation():
    model, sd = converted_model()
    ids = torch.tensor([[1, 4, 10, 2, 7], [3, 3, 0, 9, 10]])
    sigma = torch.tensor([0.3, 2.0])
    expected = recompute_logits(sd, ids, sigma)
    torch.testing.assert_close(model(input_ids=ids, sigma=sigma).logits.double(), expected, **FORWARD_TOLERANCE)


def test_time_conditioning_off_feeds_zero_sigma():
    on, sd = converted_model(time_conditioning=True)
    off, _ = converted_model(time_conditioning=False)
    ids = torch.tensor([[1, 2, 3]])
    logits = lambda model, sigma: model(input_ids=ids, sigma=torch.tensor([sigma])).logits  # noqa: E731
    assert not torch.allclose(logits(on, 0.5), logits(on, 2.0))
    torch.testing.assert_close(logits(off, 2.0), logits(on, 0.0))


def test_one_hot_soft_tokens_equal_ids_and_carry_gradient():
    model, _ = converted_model()
    ids = torch.tensor([[1, 4, 10, 2]])
    probs = F.one_hot(ids, V).float().requires_grad_(True)
    sigma = torch.tensor([1.0])
    torch.testing.assert_close(model(inputs_probs=probs, sigma=sigma).logits, model(input_ids=ids, sigma=sigma).logits)
    model(inputs_probs=probs, sigma=sigma).logits.logsumexp(-1).sum().backward()
    assert probs.grad is not None and probs.grad.abs().sum() > 0


def test_token_embedding_gradient_is_the_count_weighted_sum_and_repeats_bit_for_bit():
    """Seeded runs must repeat exactly: the gradient of an id lookup, with two threads, is the
    same tensor every time and equals the one-hot product computed another way."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        g = torch.Generator().manual_seed(0)
        embedding = TokenEmbedding(107, 64)
        torch.nn.init.normal_(embedding.embedding, generator=g)
        ids = torch.randint(0, 107, (64, 32), generator=g)
        upstream = torch.randn(64, 32, 64, generator=g)
        grads = []
        for _ in range(20):
            embedding.zero_grad(set_to_none=True)
            (embedding(ids) * upstream).sum().backward()
            grads.append(embedding.embedding.grad.clone())
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(grad, grads[0]) for grad in grads)
    one_hot = F.one_hot(ids, 107).float()
    # Each entry sums the upstream rows of its id's n occurrences, in whatever order a kernel takes
    # (adding the one-hot's zeros is exact): each side within (n − 1)·u·Σ|terms| of the exact sum.
    count = one_hot.sum((0, 1))[:, None]
    bound = 2 * (count - 1).clamp_min(0) * 2.0**-24 * torch.einsum("blv,bld->vd", one_hot, upstream.abs())
    assert bool(((grads[0] - torch.einsum("blv,bld->vd", one_hot, upstream)).abs() <= bound).all())


def test_save_pretrained_round_trip(tmp_path):
    model, _ = converted_model()
    model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").is_file()
    again = DiTModel.from_pretrained(tmp_path / "m").eval()
    ids = torch.tensor([[5, 6, 7]])
    sigma = torch.tensor([0.7])
    torch.testing.assert_close(again(input_ids=ids, sigma=sigma).logits, model(input_ids=ids, sigma=sigma).logits)
    assert again.config.mask_token_id == V - 1


# A folder saved by the DiT of commit 1b051dc (before forward returned a ModelOutput and the Auto
# classes knew the type): converted_model()'s weights, and that code's outputs beside it.
SAVED = Path(__file__).parent / "data" / "dit-1b051dc"


def test_a_folder_saved_by_the_earlier_code_loads_with_its_outputs_by_every_route():
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM

    old = load_file(f"{SAVED}.outputs.safetensors")
    ids, sigma, mask = old["input_ids"], old["sigma"], old["attention_mask"]
    assert type(AutoConfig.from_pretrained(SAVED)) is DiTConfig
    assert type(AutoModel.from_pretrained(SAVED)) is DiTModel
    for model in (AutoModelForMaskedLM.from_pretrained(SAVED), load_denoiser(str(SAVED))):
        assert type(model) is DiTModel and not model.training
        out = model(input_ids=ids, sigma=sigma, output_hidden_states=True)
        # Saved by another machine's kernels: equal up to float32 rounding of the forward pass.
        torch.testing.assert_close(out.logits, old["logits"], **FORWARD_TOLERANCE)
        torch.testing.assert_close(model(input_ids=ids, sigma=sigma, attention_mask=mask).logits, old["masked_logits"], **FORWARD_TOLERANCE)
        # (embeddings, block 1, ..., block N): the states the earlier hidden_states() gave the encoder
        assert len(out.hidden_states) == LAYERS + 1
        for i, state in enumerate(out.hidden_states):
            torch.testing.assert_close(state, old[f"hidden_states.{i}"], **FORWARD_TOLERANCE)
    assert model(input_ids=ids).hidden_states is None  # only when asked for, as in transformers


def test_saving_keeps_the_checkpoint_layout(tmp_path):
    """Same config.json keys and safetensors names as the earlier code wrote: old and new folders are interchangeable."""
    from safetensors import safe_open

    DiTModel(DiTConfig.from_pretrained(SAVED)).save_pretrained(tmp_path)
    names = {}
    for folder in (SAVED, tmp_path):
        with safe_open(folder / "model.safetensors", "pt") as f:
            names[folder] = set(f.keys())
    assert names[tmp_path] == names[SAVED]
    config = {folder: json.loads((folder / "config.json").read_text()) for folder in (SAVED, tmp_path)}
    assert config[tmp_path].keys() == config[SAVED].keys()
    assert config[tmp_path]["model_type"] == config[SAVED]["model_type"] == DiTConfig.model_type


def test_reimporting_the_model_module_registers_its_new_classes_without_error():
    code = (
        "import importlib, sys; from transformers import AutoModelForMaskedLM; import tokendrift_cli.models.dit as dit; "
        "dit = importlib.reload(dit); assert type(AutoModelForMaskedLM.from_pretrained(sys.argv[1])) is dit.DiTModel"
    )
    subprocess.run([sys.executable, "-c", code, str(SAVED)], check=True)


def test_conversion_names_the_missing_and_unknown_key():
    model, sd = converted_model()
    broken = dict(sd)
    del broken["backbone.blocks.1.attn_out.weight"]
    with pytest.raises(InputError, match="x.ckpt: checkpoint lacks blocks.1.attn_out.weight"):
        convert_reference_state_dict(broken, model.state_dict(), source="x.ckpt")
    extra = dict(sd, **{"backbone.blocks.0.extra.weight": torch.zeros(1)})
    with pytest.raises(InputError, match="x.ckpt: checkpoint has unknown parameter blocks.0.extra.weight"):
        convert_reference_state_dict(extra, model.state_dict(), source="x.ckpt")


def test_load_from_a_train_run_dir_prefers_the_final_model(tmp_path):
    model, _ = converted_model()
    model.save_pretrained(tmp_path / "run" / "checkpoints" / "checkpoint-10" / "model")
    assert load_denoiser(str(tmp_path / "run")).config.vocab_size == V
    with pytest.raises(InputError, match="model.backbone: duo, but .* is a mdlm checkpoint"):
        load_denoiser(str(tmp_path / "run"), backbone="duo")


def test_unreachable_hub_name_is_a_one_line_input_error_that_says_how_to_run_offline():
    # conftest sets HF_HUB_OFFLINE before the hub client is imported: it fails at once here; the
    # message tells a user without it how not to wait for the client's retries.
    with pytest.raises(InputError, match="could not be fetched from the hub .*set HF_HUB_OFFLINE=1") as err:
        load_denoiser("kuleshov-group/mdlm-owt")
    assert "\n" not in str(err.value)


def test_backbone_copy_encoder_reads_every_block_and_stays_frozen():
    from tokendrift_cli.drift.encoders import BackboneCopyEncoder

    model, _ = converted_model(time_conditioning=False)
    ids = torch.tensor([[1, 4, 10, 2]])
    probs = F.one_hot(ids, V).float()
    encoder = BackboneCopyEncoder(model, features="layers")
    states = encoder.hidden_states(probs)
    assert len(states) == LAYERS + 1
    # the last block's output is what the model's head reads: the same logits as the model
    c = model.conditioning(None, 1, ids.device)
    torch.testing.assert_close(model.output_layer(states[-1], c).float(), model(input_ids=ids).logits)
    assert encoder.model(input_ids=ids).logits.numel() == 0  # the copy never projects onto the vocabulary
    torch.testing.assert_close(encoder(probs), torch.stack([h.mean(1) for h in states[1:]]))  # every block, pooled
    chosen = BackboneCopyEncoder(model, features="layers", layers=(0, -1))(probs)
    torch.testing.assert_close(chosen[0], (probs @ model.get_input_embeddings().embedding).mean(1))
    torch.testing.assert_close(chosen[1], states[-1].mean(1))
    with torch.no_grad():
        model.get_input_embeddings().embedding.add_(1.0)  # training the denoiser leaves the copy alone
    assert all(not p.requires_grad for p in encoder.parameters())
    torch.testing.assert_close(encoder.hidden_states(probs)[-1], states[-1])


def test_transformers_encoder_reads_a_local_gpt2_by_layer(tmp_path):
    from transformers import GPT2Config, GPT2Model

    from tokendrift_cli.drift.encoders import TransformersEncoder

    reference = GPT2Model(GPT2Config(vocab_size=V - 1, n_positions=8, n_embd=16, n_layer=3, n_head=2)).eval()
    reference.save_pretrained(tmp_path)
    ids = torch.tensor([[1, 4, 9, 2]])
    probs = F.one_hot(ids, V).float()  # one column more than GPT-2 has: MDLM's [MASK], dropped
    encoder = TransformersEncoder(str(tmp_path), features="layers")
    assert encoder(probs).shape == (3, 1, 16)
    torch.testing.assert_close(encoder.hidden_states(probs)[-1], reference(input_ids=ids).last_hidden_state)
    torch.testing.assert_close(encoder(ids[:, :4].clamp_max(V - 2)), encoder(F.one_hot(ids.clamp_max(V - 2), V - 1).float()))
