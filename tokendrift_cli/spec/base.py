"""The base of every run-spec model: strict, so a typo in a spec is an error, not a silent default."""

from typing import Annotated, Any, Literal, Union, get_args

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator


class StrictModel(BaseModel):
    # inf and NaN pass every range check (nan < 0 is false) and then wreck the job: no field takes them.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=(), allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _bool_only_where_bool(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic reads true as 1 in a number field, so `--set seed=true` would pass as seed 1.
        assert info.field_name is not None  # always set for a field validator
        if isinstance(value, bool) and not _admits_bool(cls.model_fields[info.field_name].annotation):
            raise ValueError("not a true/false field")
        return value


def _admits_bool(annotation: Any) -> bool:
    return annotation is bool or any(_admits_bool(arg) for arg in get_args(annotation))


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


# A name, path or text the user gives: empty would silently fall back to the default.
NonEmpty = Annotated[str, AfterValidator(_not_blank)]

# Every seeded generator (torch, numpy, accelerate's set_seed) takes seeds in [0, 2^32).
Seed = Annotated[int, Field(ge=0, lt=2**32, description="random seed of the run, in [0, 2^32)")]

# CPU threads of torch's kernels. One by default: on a shared or small machine more threads than
# free cores run several times slower (README, "Threads"), and a thread count changes the last
# digits of every sum, so runs compare bit for bit only at one count.
Threads = Annotated[int, Field(ge=0, description="CPU threads for torch (0: torch's default, one per core); 1 by default, see README")]


def _switch_or_auto(value: Any) -> Any:
    if not (isinstance(value, bool) or value == "auto"):
        raise ValueError("expected true, false or auto")  # one line, not one per member of the union
    return value


# torch.compile of a job's networks: true, false, or auto (what the benchmark found faster on the
# device; models/compiling.py). A bare YAML on/off/yes/no is a boolean, so each spelling works.
Compile = Annotated[Union[bool, Literal["auto"]], BeforeValidator(_switch_or_auto)]
