"""The diffusion transformer (DiT) denoiser of MDLM and DUO, as a `transformers` PreTrainedModel.

Architecture (Peebles & Xie's DiT as adapted by MDLM, Sahoo et al. 2024): token embedding,
rotary self-attention blocks without causal mask, each block modulated (shift, scale, gate)
by a conditioning vector computed from the noise level σ, and a final adaLN layer producing
logits over the vocabulary. Parameter names mirror the reference `DIT` module, so released
checkpoints load with a prefix strip (see models/convert.py and docs/checkpoints.md).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput

# name → (hidden_size, layers, heads, cond_dim, max length, dropout)
SIZES: dict[str, dict] = {
    "tiny": dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, cond_dim=64, max_position_embeddings=128, dropout=0.0),
    # About 6x tiny's compute: the larger CPU model of the init study (benchmarks/init_study.py).
    "mini": dict(hidden_size=256, num_hidden_layers=6, num_attention_heads=4, cond_dim=128, max_position_embeddings=128, dropout=0.0),
    "small": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, cond_dim=128, max_position_embeddings=1024, dropout=0.1),
}


class DiTConfig(PretrainedConfig):
    model_type = "tokendrift-dit"

    def __init__(
        self,
        vocab_size: int = 50258,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        cond_dim: int = 128,
        max_position_embeddings: int = 1024,
        mlp_ratio: int = 4,
        dropout: float = 0.1,
        time_conditioning: bool = False,
        mask_token_id: int | None = 50257,
        backbone: str = "mdlm",
        rotary_base: float = 10_000.0,
        frequency_embedding_size: int = 256,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.cond_dim = cond_dim
        self.max_position_embeddings = max_position_embeddings
        self.mlp_ratio = mlp_ratio
        self.dropout = dropout
        self.time_conditioning = time_conditioning
        self.mask_token_id = mask_token_id
        self.backbone = backbone
        self.rotary_base = rotary_base
        self.frequency_embedding_size = frequency_embedding_size
        super().__init__(**kwargs)

    @classmethod
    def from_size(cls, size: str, **overrides) -> "DiTConfig":
        return cls(**{**SIZES[size], **overrides})


class LayerNorm(nn.Module):
    """LayerNorm with a weight and no bias, computed in float32 (as the reference does)."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (F.layer_norm(x.float(), (x.shape[-1],)) * self.weight).to(x.dtype)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


class TokenEmbedding(nn.Module):
    """The embedding table; takes token ids [B, L] or probability vectors [B, L, V] (soft tokens)."""

    def __init__(self, vocab_size: int, dim: int):
        super().__init__()
        self.embedding = nn.Parameter(torch.empty(vocab_size, dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.is_floating_point():
            return tokens.to(self.embedding.dtype) @ self.embedding
        # F.embedding, not self.embedding[tokens]: indexing's backward accumulates with
        # threads on CPU in a varying order, so seeded runs would not repeat bit for bit.
        return F.embedding(tokens, self.embedding)


class TimestepEmbedder(nn.Module):
    """σ → sinusoidal features → MLP, the conditioning vector of the adaLN layers."""

    def __init__(self, cond_dim: int, frequency_embedding_size: int):
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(nn.Linear(frequency_embedding_size, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim))

    def forward(self, sigma: torch.Tensor) -> torch.Tensor:
        half = self.frequency_embedding_size // 2
        freqs = torch.exp(-math.log(10_000) * torch.arange(half, dtype=torch.float32, device=sigma.device) / half)
        args = sigma.float()[:, None] * freqs[None]
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1).to(self.mlp[0].weight.dtype))  # type: ignore[arg-type]  # nn.Sequential items are typed Module


class DiTBlock(nn.Module):
    def __init__(self, config: DiTConfig):
        super().__init__()
        dim = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.norm1 = LayerNorm(dim)
        self.attn_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.attn_out = nn.Linear(dim, dim, bias=False)
        self.norm2 = LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, config.mlp_ratio * dim), nn.GELU(approximate="tanh"), nn.Linear(config.mlp_ratio * dim, dim)
        )
        self.adaLN_modulation = nn.Linear(config.cond_dim, 6 * dim)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor], c: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c)[:, None].chunk(6, dim=2)
        batch, length, dim = x.shape
        qkv = self.attn_qkv(modulate(self.norm1(x), shift_msa, scale_msa))
        q, k, v = qkv.view(batch, length, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        cos, sin = rotary
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        attended = attended.transpose(1, 2).reshape(batch, length, dim)
        x = x + gate_msa * self.dropout(self.attn_out(attended))
        return x + gate_mlp * self.dropout(self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp)))


class FinalLayer(nn.Module):
    def __init__(self, config: DiTConfig):
        super().__init__()
        self.norm_final = LayerNorm(config.hidden_size)
        self.linear = nn.Linear(config.hidden_size, config.vocab_size)
        self.adaLN_modulation = nn.Linear(config.cond_dim, 2 * config.hidden_size)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c)[:, None].chunk(2, dim=2)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class DiTModel(PreTrainedModel):
    config_class = DiTConfig
    base_model_prefix = "dit"
    _no_split_modules = ["DiTBlock"]
    main_input_name = "input_ids"

    def __init__(self, config: DiTConfig):
        super().__init__(config)
        self.vocab_embed = TokenEmbedding(config.vocab_size, config.hidden_size)
        self.sigma_map = TimestepEmbedder(config.cond_dim, config.frequency_embedding_size)
        self.blocks = nn.ModuleList(DiTBlock(config) for _ in range(config.num_hidden_layers))
        self.output_layer = FinalLayer(config)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        # The reference's initialisation: kaiming-uniform embeddings, zero-initialised adaLN
        # modulations and output layer (so an untrained model predicts uniform logits).
        if isinstance(module, TokenEmbedding):
            nn.init.kaiming_uniform_(module.embedding, a=math.sqrt(5))
        elif isinstance(module, (DiTBlock, FinalLayer)):
            nn.init.zeros_(module.adaLN_modulation.weight)
            nn.init.zeros_(module.adaLN_modulation.bias)
            if isinstance(module, FinalLayer):
                nn.init.zeros_(module.linear.weight)
                nn.init.zeros_(module.linear.bias)
        elif isinstance(module, LayerNorm):
            nn.init.ones_(module.weight)

    def get_input_embeddings(self) -> TokenEmbedding:
        return self.vocab_embed

    def rotary(self, length: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin of the rotary angles, [L, head_dim]; computed per call (cheap, and no
        buffer to go stale when transformers initialises the model on the meta device)."""
        head_dim = self.config.hidden_size // self.config.num_attention_heads
        inv_freq = 1.0 / self.config.rotary_base ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim)
        freqs = torch.outer(torch.arange(length, device=device, dtype=torch.float32), inv_freq)
        angles = torch.cat([freqs, freqs], dim=-1)
        return angles.cos().to(dtype), angles.sin().to(dtype)

    def conditioning(self, sigma: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
        """c = SiLU(sigma_map(σ)); σ is zeroed when time conditioning is off (as MDLM does)."""
        if sigma is None or not self.config.time_conditioning:
            sigma = torch.zeros(batch, device=device)
        return F.silu(self.sigma_map(sigma.reshape(batch)))

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        sigma: torch.Tensor | None = None,
        inputs_probs: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
    ) -> MaskedLMOutput:
        """Logits [B, L, V] in float32, from token ids or per-position probability vectors; with
        `output_hidden_states`, also (embeddings, output of block 1, ..., of block N), each [B, L, D]."""
        if (input_ids is None) == (inputs_probs is None):
            raise ValueError("pass exactly one of input_ids and inputs_probs")
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        x = self.vocab_embed(input_ids if input_ids is not None else inputs_probs)
        batch, length, _ = x.shape
        c = self.conditioning(sigma, batch, x.device)
        rotary = self.rotary(length, x.device, x.dtype)
        attn_mask = None if attention_mask is None else attention_mask[:, None, None, :].bool()
        hidden_states: tuple[torch.Tensor, ...] = (x,)
        for block in self.blocks:
            x = block(x, rotary, c, attn_mask)
            if output_hidden_states:
                hidden_states += (x,)
        return MaskedLMOutput(logits=self.output_layer(x, c).float(), hidden_states=hidden_states if output_hidden_states else None)


def token_inputs(tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """The forward's keyword for tokens given as ids [B, L] or as probability vectors [B, L, V] (soft tokens)."""
    return {"inputs_probs": tokens} if tokens.is_floating_point() else {"input_ids": tokens}


def as_denoiser(model: nn.Module):
    """The callable the diffusion processes take, `denoiser(x, sigma)`, for a DiTModel or its
    DDP wrapper: x holds token ids, or per-position probability vectors (soft tokens)."""

    def denoiser(x: torch.Tensor, sigma: torch.Tensor | None) -> torch.Tensor:
        return model(**token_inputs(x), sigma=sigma).logits

    return denoiser


# A folder of ours loads with the Auto classes like any transformers model (its config.json names
# the type). exist_ok: a re-import (importlib.reload) points the Auto classes at its new classes.
AutoConfig.register(DiTConfig.model_type, DiTConfig, exist_ok=True)
AutoModel.register(DiTConfig, DiTModel, exist_ok=True)
AutoModelForMaskedLM.register(DiTConfig, DiTModel, exist_ok=True)
