"""The TokenDrift objective (Oba, Furuta, Okazaki 2026, arXiv 2605.19470).

Every default is the paper's; docs/tokendrift.md cites the section beside each one.
"""

from typing import Literal, Optional

from pydantic import Field, model_validator

from tokendrift_cli.spec.base import StrictModel


class DriftSpec(StrictModel):
    variant: Literal["feature", "mirror-kl", "mirror-mse"] = Field(
        "feature",
        description="the loss: feature-space fixed point ||h - sg(h + alpha V)||^2 (paper §3.3), or the mirror teacher "
        "p* = softmax(l + eta g) matched by KL(p*||p) or ||l* - l||^2 on predicted positions (§3.4)",
    )
    base_loss: bool = Field(False, description="add the diffusion loss to the drift loss (paper: drift alone; Table 4 lower block)")
    weight: float = Field(1.0, ge=0, description="weight of the drift loss (the diffusion loss, when on, has weight 1)")
    alpha: float = Field(1.0, gt=0, description="drift scale: the target is h + alpha V (paper App. F: 1)")
    mirror_step: float = Field(
        0.5, gt=0, description="eta of the mirror teacher; 0.5 = alpha/2 gives mirror-mse the feature loss's logit gradient exactly"
    )
    lift: Literal["soft", "hard-st", "sampled-st"] = Field(
        "soft",
        description="encoder input at predicted positions: p E (soft, paper §3.1), the argmax token's embedding with the "
        "probabilities' gradient (hard-st, Table 3), or a sampled token's (sampled-st)",
    )
    lift_temperature: float = Field(1.0, gt=0, description="softmax temperature when lifting predictions to soft tokens")
    encoder: str = Field(
        "backbone-copy",
        description="frozen feature space: 'backbone-copy' (frozen copy of the starting checkpoint, paper §4.1) or a transformers model name/path",
    )
    features: Literal["paper", "layers"] = Field(
        "paper",
        description="paper: mean-pool the penultimate and final hidden states, concatenate, L2-normalise (App. F); "
        "layers: each of feature_layers pooled (over feature_window positions) is its own drift set",
    )
    feature_layers: Optional[list[int]] = Field(
        None, min_length=1, description="features=layers: hidden states drifted (0: embeddings, -1: last block); default: every block"
    )
    feature_window: Optional[int] = Field(None, ge=1, description="features=layers: pool over windows of this many positions; default: the whole sequence")
    kernel: Literal["paper", "drifting-code"] = Field(
        "paper",
        description="paper: -||h-y||^2/tau, each temperature's V over its batch RMS ||V||, averaged (§3.2); drifting-code: "
        "-||h-y||/(tau mean distance), per-element RMS, summed (lambertae/drifting)",
    )
    temperatures: list[float] = Field([0.02, 0.05, 0.2], min_length=1, description="kernel temperatures T (paper §4.1)")
    attraction: float = Field(1.0, ge=0, description="weight of the displacement toward the positives' barycentre (paper Table 6)")
    repulsion: float = Field(1.0, ge=0, description="weight of the displacement from the negatives' barycentre; 1:1 is anti-symmetric")
    queue_size: int = Field(1024, ge=0, description="FIFO queues of detached real and generated features, each this long (paper App. F, Table 5); 0: batch only")
    negatives: Literal["denoise", "rollout"] = Field(
        "denoise",
        description="generated features from the prediction on the noised real batch (paper App. F), or from a roll-out "
        "of the sampler at the run's nfe (each position from the call that decided it)",
    )

    @model_validator(mode="after")
    def _consistent(self) -> "DriftSpec":
        if self.features == "paper" and (self.feature_layers is not None or self.feature_window is not None):
            raise ValueError("feature_layers and feature_window need features=layers (the paper map pools the last two blocks)")
        if self.attraction == 0 and self.repulsion == 0:
            raise ValueError("attraction and repulsion are both 0: there is no drift")
        if any(tau <= 0 for tau in self.temperatures):
            raise ValueError("temperatures must be > 0")
        return self
