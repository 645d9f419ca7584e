"""The TokenDrift objective: soft-token lifting, frozen feature space, drift field."""

from typing import Literal, Optional

from pydantic import Field

from tokendrift_cli.spec.base import StrictModel


class DriftSpec(StrictModel):
    weight: float = Field(1.0, ge=0, description="weight of the drift loss in the total loss")
    keep_diffusion: bool = Field(True, description="add the drift loss to the diffusion loss (false: drift loss alone)")
    variant: Literal["feature", "logit", "both"] = Field(
        "feature", description="where the drift acts: frozen-encoder features, the logit/probability space (mirroring), or both"
    )
    lift: Literal["soft", "straight-through"] = Field(
        "soft", description="generated sequence: lifted probabilities, or the sampled tokens with the probabilities' gradient (needs negatives=rollout)"
    )
    lift_temperature: float = Field(1.0, gt=0, description="softmax temperature when lifting predictions to soft tokens")
    encoder: str = Field("backbone-copy", description="frozen feature space: 'backbone-copy' (the denoiser's frozen initial copy) or a transformers model name/path")
    feature_layers: Optional[list[int]] = Field(
        None, min_length=1, description="encoder layers whose hidden states are drifted, each its own feature space (0: embeddings, -1: last block); default: every block"
    )
    feature_window: Optional[int] = Field(None, ge=1, description="pool features over windows of this many positions (each window its own drift set); default: whole sequence")
    temperatures: list[float] = Field([0.02, 0.05, 0.2], min_length=1, description="kernel temperatures, multiplied by sqrt(feature dim) (drifting paper's values)")
    scale: float = Field(1.0, gt=0, description="fixed drift scale: the target is h + scale * V")
    normalize_features: bool = Field(True, description="rescale features so their mean pairwise distance is sqrt(feature dim)")
    normalize_drift: bool = Field(True, description="scale each temperature's drift to unit RMS before summing")
    negatives: Literal["denoise", "rollout"] = Field(
        "denoise", description="generated features from the prediction on the noised real batch, or from a fixed-NFE roll-out (each position from the call that decided it)"
    )
    rollout_nfe: int = Field(4, ge=1, description="NFE of the roll-out when negatives=rollout (train --nfe)")
