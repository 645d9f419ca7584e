"""`tokendrift sample` and `tokendrift eval` end to end on a tiny trained run."""

import json

import pytest


def test_sample_json_and_file(cli, trained_run, tmp_path):
    code, out, err = cli("sample", "--model", str(trained_run), "--nfe", "8", "--num-samples", "10",
                         "--batch-size", "4", "--out", str(tmp_path / "s"), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["nfe"] == 8 and result["num_samples"] == 10 and result["nfe_used_mean"] <= 8
    rows = [json.loads(line) for line in open(result["samples_path"])]
    assert len(rows) == 10 and all(len(r["ids"]) == 16 and r["nfe"] <= 8 for r in rows)
    assert all("[MASK]" not in r["text"] for r in rows)


def test_sample_without_model_and_no_runs_is_a_clear_error(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("sample")
    assert code == 2 and "no finished train run" in err


def test_eval_sweeps_nfe_with_the_oracle_and_writes_a_png(cli, trained_run, tmp_path):
    code, out, err = cli("eval", "--model", str(trained_run), "--nfe", "4,16", "--genppl-model", "oracle",
                         "--num-samples", "32", "--metrics", "genppl,entropy,val_ppl,ngram_jsd",
                         "--out", str(tmp_path / "e"), "--json")
    assert code == 0, err
    result = json.loads(out)
    rows = result["rows"]
    assert [r["nfe"] for r in rows] == [4, 16]
    for row in rows:
        assert row["judge"] == "oracle" and row["gen_ppl"] > result["floor"]["gen_ppl"] * 0.5
        assert 0 <= row["acceptance"] <= 1 and row["entropy"] > 0 and 0 <= row["ngram_jsd"] <= 1
        assert row["val_ppl"] < 106  # clearly below the uniform bound |V|
    png = (tmp_path / "e" / "genppl_vs_nfe.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


def test_eval_of_a_samples_file_with_the_oracle(cli, tmp_path):
    path = tmp_path / "samples.jsonl"
    path.write_text("\n".join(json.dumps({"text": t}) for t in ["I like tennis .", "I likes tennis ."]) + "\n")
    code, out, err = cli("eval", "--samples", str(path), "--json", "--out", str(tmp_path / "e"))
    assert code == 0, err
    row = json.loads(out)["rows"][0]
    assert row["judge"] == "oracle" and row["acceptance"] == 0.5


@pytest.mark.parametrize("content, message", [
    ('{"text": "a"}\nnot json\n', "samples.jsonl:2: not valid JSON"),
    ('{"text": "a"}\n{"txt": "b"}\n', "samples.jsonl:2: expected an object with a string field 'text'"),
    ('{"text": "a", "ids": ["x"]}\n', "samples.jsonl:1: 'ids' must be a non-empty list of integers"),
    ("", "samples.jsonl: no samples"),
])
def test_malformed_samples_name_the_line_and_write_no_results(cli, tmp_path, content, message):
    path = tmp_path / "samples.jsonl"
    path.write_text(content)
    code, _, err = cli("eval", "--samples", str(path), "--out", str(tmp_path / "e"))
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "e" / "results.json").exists()
