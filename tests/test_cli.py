"""The command line's conventions: help, exit codes, one-line spec errors, --json."""

import json

import pytest
import yaml

COMMANDS = ["train", "sample", "eval", "probe", "marginal-trap", "presets"]


def test_help_lists_the_six_commands(cli):
    code, out, _ = cli("--help")
    assert code == 0
    for command in COMMANDS:
        assert command in out


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_help_documents_its_options(cli, command):
    code, out, _ = cli(command, "--help")
    assert code == 0
    if command != "presets":
        for option in ["--preset", "--spec", "--set", "--out", "--seed", "--json", "--quiet"]:
            assert option in out
        assert "Override a spec field" in out  # options carry help text, not just names


def _assert_one_line_errors(stderr: str, expected: list[str]):
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == len(expected), stderr
    for line, fragment in zip(lines, expected):
        assert line.startswith("error: ") and fragment in line, line
    assert "Traceback" not in stderr


def test_bad_value_names_the_dotted_field(cli):
    code, _, err = cli("train", "--set", "optim.lr=abc")
    assert code == 2
    _assert_one_line_errors(err, ["optim.lr: Input should be a valid number"])


def test_missing_spec_file(cli, tmp_path):
    code, _, err = cli("train", "--spec", str(tmp_path / "missing.yaml"))
    assert code == 2
    _assert_one_line_errors(err, ["missing.yaml: file not found"])


def test_unknown_keys_each_get_a_line(cli, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  lrr: 0.1\nbogus: 1\n")
    code, _, err = cli("train", "--spec", str(path))
    assert code == 2
    _assert_one_line_errors(err, ["optim.lrr: unknown field", "bogus: unknown field"])


def test_spec_for_another_command_is_rejected(cli, tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("command: probe\n")
    code, _, err = cli("train", "--spec", str(path))
    assert code == 2
    _assert_one_line_errors(err, ["is a spec for 'probe', not 'train'"])


def test_malformed_set_is_usage_error(cli):
    code, _, err = cli("train", "--set", "optim.lr")
    assert code == 2
    _assert_one_line_errors(err, ["--set optim.lr: expected dotted.key=value"])


def test_presets_json_lists_the_shipped_presets(cli):
    code, out, _ = cli("presets", "--json")
    assert code == 0
    listed = {p["name"]: p for p in json.loads(out)["presets"]}
    assert {"train-tiny-mdlm", "train-tiny-duo"} <= set(listed)
    assert listed["train-tiny-duo"]["command"] == "train"


def test_every_shipped_preset_validates():
    from tokendrift_cli.spec import load_spec, preset_names, read_preset

    for name in preset_names():
        command = read_preset(name)[0]["command"]
        assert load_spec(command, preset=name).command == command


def test_presets_show_unknown_name(cli):
    code, _, err = cli("presets", "no-such-preset")
    assert code == 2
    assert "no such preset" in err


def test_layers_later_wins(tmp_path):
    from tokendrift_cli.spec import load_spec

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"model": {"backbone": "mdlm"}, "optim": {"lr": 0.1, "max_steps": 7}}))
    spec = load_spec(
        "train", preset="train-tiny-duo", spec_file=path,
        options={"optim.lr": 0.2, "seed": None}, overrides=["optim.lr=0.3"],
    )
    assert spec.model.backbone == "mdlm"  # spec file over preset
    assert spec.optim.max_steps == 7  # untouched by later layers
    assert spec.optim.lr == 0.3  # --set over named option over spec file
    assert spec.seed == 0  # an option left unset does not override
