"""TokenDrift: lift predictions to soft tokens, drift their frozen features, pull logits along."""

from tokendrift_cli.drift.encoders import FeatureEncoder, build_encoder
from tokendrift_cli.drift.field import Drift, drift_field
from tokendrift_cli.drift.objective import TokenDrift, diffusion_objective, lift
from tokendrift_cli.drift.queue import FeatureQueue

__all__ = ["Drift", "FeatureEncoder", "FeatureQueue", "TokenDrift", "build_encoder", "diffusion_objective", "drift_field", "lift"]
