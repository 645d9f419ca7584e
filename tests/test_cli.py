"""The command line's conventions: help, exit codes, one-line spec errors, --json."""

import json
from pathlib import Path

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


def test_digits_are_decimal_in_set_and_spec_files_as_in_named_options(tmp_path):
    """YAML 1.1 reads 010 as octal 8; a spec means 10, as --seed 010 does."""
    from tokendrift_cli.spec import load_spec

    (tmp_path / "s.yaml").write_text("seed: 010\noptim:\n  max_steps: 0_012\n")
    assert load_spec("train", options={"seed": int("010")}).seed == 10
    assert load_spec("train", overrides=["seed=010"]).seed == 10
    spec = load_spec("train", spec_file=tmp_path / "s.yaml")
    assert (spec.seed, spec.optim.max_steps) == (10, 12)
    assert load_spec("train", overrides=["seed=0x10"]).seed == 16  # other YAML integers read as before


def test_presets_live_at_the_top_level_and_every_package_is_in_the_wheel():
    """presets/ sits beside tokendrift_cli/ and is what `tokendrift presets` lists; the wheel's
    hand-kept package list (pyproject.toml) holds every package under tokendrift_cli/ and the presets."""
    tomllib = pytest.importorskip("tomllib")
    from setuptools import find_packages

    from tokendrift_cli.spec import preset_names

    root = Path(__file__).resolve().parents[1]
    assert preset_names() == sorted(p.stem for p in (root / "presets").glob("*.yaml")) and preset_names()
    assert not (root / "tokendrift_cli" / "presets").exists()
    setuptools = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert sorted(setuptools["packages"]) == sorted([*find_packages(str(root), include=["tokendrift_cli*"]), "tokendrift_cli.presets"])
    assert setuptools["package-dir"] == {"tokendrift_cli.presets": "presets"}


def test_presets_show_unknown_name(cli):
    code, _, err = cli("presets", "no-such-preset")
    assert code == 2
    _assert_one_line_errors(err, ["tokendrift presets no-such-preset: no such preset"])
    assert "--preset" not in err  # the command's argument, not a flag never typed


def test_version(cli):
    from importlib.metadata import version

    code, out, _ = cli("--version")
    assert code == 0 and out == f"tokendrift {version('tokendrift')}\n"


def test_shell_completion_is_offered(cli):
    code, out, _ = cli("--help")
    assert code == 0 and "--install-completion" in out


@pytest.mark.parametrize("key, suggestion", [
    ("drift.temprature", "did you mean drift.temperatures or drift.lift_temperature?"),
    ("temperatures", "did you mean drift.temperatures?"),
])
def test_an_unknown_set_key_suggests_the_nearest_fields(cli, key, suggestion):
    code, _, err = cli("train", "--set", f"{key}=1")
    assert code == 2
    _assert_one_line_errors(err, [f"{key}: unknown field ({suggestion})"])


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


# Every named option of a command given once, and what the resolved spec must hold: each flag sets
# its documented field (a probe or trap takes one source at a time, hence three and two cases).
NAMED_OPTIONS = [
    ("train", "--backbone duo --init none --objective diffusion --nfe 8 --max-steps 5 --batch-size 4 --lr 0.01 --seed 3 --threads 2",
     {"model.backbone": "duo", "model.init": None, "objective": "diffusion", "nfe": 8, "optim.max_steps": 5,
      "optim.batch_size": 4, "optim.lr": 0.01, "seed": 3, "threads": 2}),
    ("sample", "--model m --nfe 8 --num-samples 5 --batch-size 2 --seq-len 16 --temperature 0.5 --top-p 0.9 --seed 3 --threads 2",
     {"threads": 2, "model": "m", "sampling.nfe": 8, "sampling.num_samples": 5, "sampling.batch_size": 2, "sampling.seq_len": 16,
      "sampling.temperature": 0.5, "sampling.top_p": 0.9, "seed": 3}),
    ("eval", "--samples s.jsonl --model a --runs b --model c --nfe 4,8 --genppl-model oracle --metrics genppl,entropy --num-samples 5 --seed 3 --threads 2",
     {"threads": 2, "samples": "s.jsonl", "models": ["a", "b", "c"], "evaluation.nfe": [4, 8], "evaluation.genppl_model": "oracle",
      "evaluation.metrics": ["genppl", "entropy"], "sampling.num_samples": 5, "seed": 3}),
    ("probe", "--prompt hi --model m --num-masks 4 --top-k 2 --num-prompts 1 --chat-template off --batch-size 2 --dtype bfloat16 --seed 3 --threads 2",
     {"threads": 2, "probe.prompt": "hi", "probe.model": "m", "probe.num_masks": 4, "probe.top_k": 2, "probe.num_prompts": 1,
      "probe.chat_template": "off", "probe.batch_size": 2, "probe.dtype": "bfloat16", "seed": 3}),
    ("probe", "--prompts p.jsonl", {"probe.prompts": "p.jsonl"}),
    ("probe", "--from-lima lima.jsonl", {"probe.from_lima": "lima.jsonl"}),
    ("marginal-trap", "--mode model --model m --seed 3 --threads 0", {"trap.mode": "model", "trap.model": "m", "seed": 3, "threads": 0}),
    ("marginal-trap", "--joint j.json", {"trap.joint": "j.json"}),
]


@pytest.fixture
def resolve(cli, tmp_path, monkeypatch):
    """Run a command with a job that does nothing; returns the spec.yaml it resolved to."""
    from types import SimpleNamespace

    from tokendrift_cli import cli as cli_module

    monkeypatch.setattr(cli_module, "_job_module", lambda command: SimpleNamespace(run=lambda spec, run, ui: {}))

    def invoke(command: str, *args: str) -> dict:
        out = tmp_path / f"run-{len(list(tmp_path.iterdir()))}"
        code, _, err = cli(command, *args, "--out", str(out), "--quiet")
        assert code == 0, err
        return yaml.safe_load((out / "spec.yaml").read_text())

    return invoke


def _at(spec: dict, dotted: str):
    for part in dotted.split("."):
        spec = spec[part]
    return spec


def test_set_reads_a_comma_separated_list_as_the_named_options_do(resolve):
    spec = resolve("train", "--set", "drift.temperatures=0.1,0.2", "--set", "optim.betas=0.9,0.95")
    assert spec["drift"]["temperatures"] == [0.1, 0.2] and spec["optim"]["betas"] == [0.9, 0.95]
    spec = resolve("eval", "--set", "evaluation.nfe=4,8", "--set", "evaluation.metrics=genppl,entropy", "--set", "models=[a,b]")
    assert spec["evaluation"]["nfe"] == [4, 8] and spec["evaluation"]["metrics"] == ["genppl", "entropy"] and spec["models"] == ["a", "b"]


def test_threads_sets_torchs_threads_before_the_job_runs(cli, tmp_path, monkeypatch):
    from types import SimpleNamespace

    import torch

    from tokendrift_cli import cli as cli_module

    monkeypatch.setattr(cli_module, "_job_module", lambda command: SimpleNamespace(run=lambda spec, run, ui: {"threads": torch.get_num_threads()}))
    try:
        for threads in (2, 1):  # the default, 1, last: the other tests run with one thread
            args = ["--threads", "2"] if threads == 2 else []
            code, out, err = cli("sample", *args, "--out", str(tmp_path / f"t{threads}"), "--json")
            assert code == 0, err
            assert json.loads(out)["threads"] == threads
    finally:
        torch.set_num_threads(1)


@pytest.mark.parametrize("command, args, expected", NAMED_OPTIONS)
def test_each_named_option_sets_its_spec_field(resolve, command, args, expected):
    spec = resolve(command, *args.split())
    assert {dotted: _at(spec, dotted) for dotted in expected} == expected


@pytest.mark.parametrize("command, args, expected", NAMED_OPTIONS)
def test_options_left_out_keep_the_spec_files_values(resolve, tmp_path, command, args, expected):
    """The defaults --help shows are the spec's: a named option not given overrides nothing."""
    from tokendrift_cli.spec import _set_dotted

    layer: dict = {}
    for dotted, value in expected.items():
        _set_dotted(layer, dotted, value)
    path = tmp_path / "layer.yaml"
    path.write_text(yaml.safe_dump(layer))
    spec = resolve(command, "--spec", str(path))
    assert {dotted: _at(spec, dotted) for dotted in expected} == expected


SHARED = {"preset", "spec", "set_", "out", "json", "quiet", "resume", "help"}


@pytest.mark.parametrize("command", sorted({case[0] for case in NAMED_OPTIONS}))
def test_named_options_are_documented_by_their_spec_fields(cli, command):
    import typer

    from tokendrift_cli.cli import app
    from tokendrift_cli.spec import spec_field

    named = [p for p in typer.main.get_command(app).commands[command].params if p.name not in SHARED]
    documented = {dotted for case in NAMED_OPTIONS if case[0] == command for dotted in case[2]}
    assert {p.name.replace("__", ".") for p in named} == documented  # every named option is tested above
    _, out, _ = cli(command, "--help")
    for param in named:
        field = spec_field(command, param.name.replace("__", "."))
        assert param.help == field.description
        assert all(flag in out for flag in param.opts)
