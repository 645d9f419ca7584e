"""The base of every run-spec model: strict, so a typo in a spec is an error, not a silent default."""

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())
