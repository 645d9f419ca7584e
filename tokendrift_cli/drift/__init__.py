"""TokenDrift: lift predictions to soft tokens, drift their frozen features, pull logits along."""

from tokendrift_cli.drift.encoders import FeatureEncoder, build_encoder
from tokendrift_cli.drift.field import drift_field
from tokendrift_cli.drift.loss import drift_loss

__all__ = ["FeatureEncoder", "build_encoder", "drift_field", "drift_loss"]
