"""Tiny stand-ins for Dream and LLaDA, loaded by the probe as remote code (`trust_remote_code`),
as the real ones are. Each is one bidirectional attention layer with rotary positions whose
forward treats `attention_mask` and positions as the real model's does (read in their code):

- Dream hands `attention_mask` to `scaled_dot_product_attention` as it is (a tensor, else no
  mask: its generation passes "full") and takes `position_ids` (default 0..L-1);
- LLaDA turns a 2-D padding mask into an additive attention bias itself; positions are 0..L-1.
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput


def _sizes(config, vocab_size, hidden_size, num_attention_heads):
    config.vocab_size, config.hidden_size, config.num_attention_heads = vocab_size, hidden_size, num_attention_heads


class FakeDreamConfig(PretrainedConfig):
    model_type = "Dream"

    def __init__(self, vocab_size=11, hidden_size=16, num_attention_heads=2, **kwargs):
        _sizes(self, vocab_size, hidden_size, num_attention_heads)
        super().__init__(**kwargs)


class FakeLLaDAConfig(PretrainedConfig):
    model_type = "llada"

    def __init__(self, vocab_size=11, hidden_size=16, num_attention_heads=2, **kwargs):
        _sizes(self, vocab_size, hidden_size, num_attention_heads)
        super().__init__(**kwargs)


class _Attention(PreTrainedModel):
    config_class = FakeDreamConfig

    def __init__(self, config):
        super().__init__(config)
        dim = config.hidden_size
        self.embed = nn.Embedding(config.vocab_size, dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, config.vocab_size)
        self.post_init()

    def _init_weights(self, module):
        pass  # the test sets the weights

    def attend(self, input_ids, attn_mask, position_ids):
        batch, length = input_ids.shape
        heads = self.config.num_attention_heads
        head_dim = self.config.hidden_size // heads
        x = self.embed(input_ids)
        q, k, v = self.qkv(x).view(batch, length, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
        inv_freq = 1.0 / 10000 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        angles = position_ids[:, None, :, None].float() * torch.cat([inv_freq, inv_freq])
        cos, sin = angles.cos(), angles.sin()
        rotate = lambda t: t * cos + torch.cat([-t[..., head_dim // 2:], t[..., : head_dim // 2]], -1) * sin  # noqa: E731
        attended = F.scaled_dot_product_attention(rotate(q), rotate(k), v, attn_mask=attn_mask, is_causal=False)
        x = x + self.out(attended.transpose(1, 2).reshape(batch, length, -1))
        return MaskedLMOutput(logits=self.head(x))


class FakeDreamModel(_Attention):
    def forward(self, input_ids, attention_mask=None, position_ids=None, **kwargs):
        if position_ids is None:
            position_ids = torch.arange(input_ids.shape[1]).expand(input_ids.shape[0], -1)
        return self.attend(input_ids, attention_mask if isinstance(attention_mask, torch.Tensor) else None, position_ids)


class FakeLLaDAModel(_Attention):
    config_class = FakeLLaDAConfig

    def forward(self, input_ids, attention_mask=None, **kwargs):
        bias = None
        if attention_mask is not None:
            bias = (1.0 - attention_mask.float())[:, None, None, :] * torch.finfo(torch.float32).min
        positions = torch.arange(input_ids.shape[1]).expand(input_ids.shape[0], -1)
        return self.attend(input_ids, bias, positions)
