"""FIFO queues of detached pooled features: the drift's reference sets beyond the current batch
(TokenDrift Alg. 1 lines 6 and 11, App. F). They are training state: checkpointed and restored."""

from __future__ import annotations

import torch


class FeatureQueue:
    """Holds at most `size` features [G, n, F], oldest first; `push` appends and evicts the oldest."""

    def __init__(self, size: int, device: torch.device | str = "cpu"):
        self.size, self.device = size, torch.device(device)
        self.features: torch.Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.features is None else self.features.shape[-2]

    def push(self, features: torch.Tensor) -> None:
        if self.size == 0:
            return
        features = features.detach()
        joined = features if self.features is None else torch.cat([self.features, features], dim=-2)
        self.features = joined[..., -self.size :, :]

    def state_dict(self) -> dict:
        return {"size": self.size, "features": self.features}

    def load_state_dict(self, state: dict) -> None:
        if state["size"] != self.size:
            raise ValueError(f"checkpointed feature queue holds {state['size']} entries, this run's drift.queue_size is {self.size}")
        features = state["features"]
        self.features = None if features is None else features.to(self.device)
