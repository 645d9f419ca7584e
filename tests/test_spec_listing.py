"""`tokendrift spec COMMAND`: every field of every command with its type, default and help; the YAML
is a spec file that resolves to the same spec."""

import json
import re

import pytest

from tokendrift_cli.spec import COMMAND_SPECS, load_spec, spec_to_dict
from tokendrift_cli.spec.listing import spec_fields

# Each command resolved from something besides its defaults: a preset where one is shipped, and
# overrides of numbers, lists and text (one that YAML reads as text only when quoted).
RESOLVED = {
    "train": ["--preset", "train-tiny-duo", "--set", "optim.lr=1e-3", "--set", "drift.temperatures=[0.1, 0.3]", "--set", 'data.cache_dir="on #1"'],
    "sample": ["--set", "sampling.nfe=8", "--set", "sampling.seq_len=16", "--set", "model=runs/x"],
    "eval": ["--set", "evaluation.nfe=[4, 8]", "--set", "models=[runs/a, runs/b]"],
    "probe": ["--preset", "probe-llada-instruct", "--set", "probe.num_masks=64"],
    "marginal-trap": ["--set", "trap.mode=model", "--set", "trap.tau=0.05"],
}


def _load(command, args):
    """The spec `tokendrift <command> args` resolves to, read off the same options."""
    preset = args[args.index("--preset") + 1] if "--preset" in args else None
    overrides = [args[i + 1] for i, arg in enumerate(args) if arg == "--set"]
    return load_spec(command, preset=preset, overrides=overrides)


def _leaves(command):
    return [(key, field) for key, field, section in spec_fields(COMMAND_SPECS[command]) if not section]


@pytest.mark.parametrize("command", list(COMMAND_SPECS))
def test_every_field_of_every_command_has_help(command):
    fields = list(spec_fields(COMMAND_SPECS[command]))
    assert len(fields) > 5
    missing = [key for key, field, _ in fields if not (field.description or "").strip()]
    assert not missing, f"{command}: no description for {missing}"


@pytest.mark.parametrize("command", list(COMMAND_SPECS))
def test_yaml_is_a_spec_file_that_resolves_to_the_same_spec(cli, tmp_path, command):
    code, out, err = cli("spec", command, *RESOLVED[command])
    assert code == 0, err
    path = tmp_path / "spec.yaml"
    path.write_text(out)
    expected = _load(command, RESOLVED[command])
    assert load_spec(command, spec_file=path) == expected
    assert expected != type(expected)()  # the options did change something
    # Each field's line sits under its help (wrapped over comment lines), then its type and default.
    lines = out.splitlines()
    for key, field in _leaves(command):
        name, depth = key.rsplit(".", 1)[-1], key.count(".")
        row = next(i for i, line in enumerate(lines) if line.startswith("  " * depth + name + ":") and _under(lines, i, key))
        comments = []
        for line in reversed(lines[:row]):
            if not line.strip().startswith("#"):
                break
            comments.insert(0, line.strip()[2:])
        assert comments[-1].split(" · default ")[0] and " · default " in comments[-1], key
        assert " ".join(comments[:-1]) == " ".join(field.description.split()), key


def _under(lines, row, key):
    """Whether line `row` is inside the sections that `key` names."""
    sections = key.split(".")[:-1]
    for depth in range(len(sections) - 1, -1, -1):
        header = next(line for line in reversed(lines[:row]) if re.match(r"^\s*[a-z_]+:\s*$", line) and len(line) - len(line.lstrip()) == 2 * depth)
        if header.strip() != sections[depth] + ":":
            return False
    return True


@pytest.mark.parametrize("command", list(COMMAND_SPECS))
def test_json_lists_every_field_with_value_default_type_and_help(cli, command):
    code, out, err = cli("spec", command, "--format", "json", *RESOLVED[command])
    assert code == 0, err
    listing = json.loads(out)
    resolved, default = _load(command, RESOLVED[command]), type(_load(command, []))()
    assert listing["spec"] == spec_to_dict(resolved)
    rows = {row["key"]: row for row in listing["fields"]}
    assert list(rows) == [key for key, _ in _leaves(command)]
    for key, field in _leaves(command):
        value, fallback = spec_to_dict(resolved), spec_to_dict(default)
        for part in key.split("."):
            value, fallback = value[part], fallback[part]
        assert (rows[key]["value"], rows[key]["default"], rows[key]["help"]) == (value, fallback, field.description), key
        assert rows[key]["type"], key


def test_types_are_written_as_the_spec_checks_them(cli):
    code, out, _ = cli("spec", "train", "--format", "json")
    types = {row["key"]: row["type"] for row in json.loads(out)["fields"]}
    assert types["optim.lr"] == "float > 0"
    assert types["optim.betas"] == "pair of float ≥ 0, < 1"
    assert types["model.backbone"] == "mdlm | duo | null"
    assert types["drift.temperatures"] == "list of float (at least 1)"
    assert types["logging.trackers"] == "list of tensorboard | wandb"
    assert types["diffusion.antithetic"] == "bool"


def test_table_shows_every_key(cli):
    code, out, err = cli("spec", "probe", "--format", "table", "--preset", "probe-llada-instruct")
    assert code == 0, err
    for key, _ in _leaves("probe"):
        assert re.search(rf"│ {re.escape(key)} +│", out), key
    assert "126336" in out  # the preset's mask id


@pytest.mark.parametrize("args, message", [
    (["nope"], "error: COMMAND: no command 'nope' has a spec (one of train, sample, eval, probe, marginal-trap)"),
    (["train", "--format", "xml"], "error: --format: expected one of yaml, table, json, got 'xml'"),
    (["train", "--set", "optim.lrr=1"], "error: optim.lrr: unknown field (did you mean optim.lr?)"),
    (["probe", "--preset", "train-tiny-duo"], "error: --preset train-tiny-duo: is a spec for 'train', not 'probe'"),
])
def test_bad_input_is_one_line(cli, args, message):
    code, out, err = cli("spec", *args)
    assert code == 2 and out == "" and err.strip() == message, err


def test_help_names_the_listing(cli):
    assert "spec" in cli("--help")[1]
    assert "tokendrift spec COMMAND" in " ".join(cli("train", "--help")[1].split())
