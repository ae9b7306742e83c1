"""The CLI end to end on the bundled example, and its error messages."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from mmselect.cli import app
from mmselect.features.store import FeatureSet

runner = CliRunner()


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def extracted(tmp_path_factory, mini_data, mini_images):
    out = tmp_path_factory.mktemp("feats")
    result = _invoke("extract", mini_data, "--image-root", mini_images, "--model", "tiny-llava",
                     "--for-methods", "perplexity,length", "--out", out, "--no-progress")
    assert result.exit_code == 0, result.output
    return out


def test_run_writes_subset_scores_manifest_report(tmp_path, mini_data, mini_images):
    out = tmp_path / "out"
    result = _invoke("run", mini_data, "--image-root", mini_images, "--method", "perplexity", "--budget", "0.2",
                     "--model", "tiny-llava", "--out", out, "--no-progress")
    assert result.exit_code == 0, result.output
    records = json.loads(mini_data.read_text())
    subset = json.loads((out / "subset.json").read_text())
    table = pq.read_table(out / "selection.parquet").to_pydict()
    manifest = json.loads((out / "manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["input_records"] == len(records)
    assert counts["selected"] + counts["not_selected"] + counts["rejected"] == len(records)
    # the budget applies to the records left after the duplicate guard (exact copies set aside)
    assert counts["duplicates"] > 0
    assert counts["selected"] == int(0.2 * (len(records) - counts["rejected"] - counts["duplicates"])) == len(subset)
    # The subset holds the original records, untouched, in source order.
    positions = sorted(p for p, s in zip(table["position"], table["selected"]) if s)
    assert subset == [records[p] for p in positions]
    assert len(table["key"]) == len(set(table["key"])) == len(records) - counts["rejected"]
    assert manifest["method"] == "perplexity" and manifest["params"] == {"band": "mid"}
    assert manifest["model"]["name"] == "tiny-llava" and "torch" in manifest["versions"]
    assert "carries no meaning" in (out / "report.md").read_text()


def test_select_from_features_dir_with_data_is_deterministic(tmp_path, extracted, mini_data):
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        result = _invoke("select", "--features", extracted, "--method", "random", "--budget", "50", "-p", "seed=7",
                         "--out", out, "--data", mini_data)
        assert result.exit_code == 0, result.output
        outs.append((out / "subset.json").read_bytes())
    assert outs[0] == outs[1] and len(json.loads(outs[0])) == 50


def test_jsonl_input_gives_jsonl_subset_byte_for_byte(tmp_path, mini_data, mini_images):
    records = json.loads(mini_data.read_text())[:40]
    lines = [json.dumps(r, separators=(", ", ": ")) for r in records]
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    result = _invoke("run", data, "--image-root", mini_images, "--method", "length", "--budget", "10",
                     "--model", "tiny-qwen2-vl", "--out", out, "--no-progress")
    assert result.exit_code == 0, result.output
    written = (out / "subset.jsonl").read_text().splitlines()
    assert len(written) == 10 and set(written) <= set(lines)
    assert written == [line for line in lines if line in set(written)]  # source order


def test_bad_records_are_rejected_and_counted(tmp_path, mini_images):
    from pathlib import Path

    bad = Path(__file__).resolve().parents[1] / "examples" / "mini" / "bad_records.json"
    out = tmp_path / "out"
    result = _invoke("run", bad, "--image-root", mini_images, "--method", "random", "--budget", "1",
                     "--model", "tiny-llava", "--out", out, "--no-progress", "--max-rejected", "1")
    assert result.exit_code == 0, result.output
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["rejected"] == len(rejected) >= 6
    assert all(r["key"] and r["reason"] for r in rejected)
    strict = _invoke("run", bad, "--image-root", mini_images, "--method", "random", "--budget", "1",
                     "--model", "tiny-llava", "--out", tmp_path / "strict", "--strict", "--no-progress")
    assert strict.exit_code == 2 and "record 0000001-" in strict.output


def test_malformed_json_fails_with_position(tmp_path, mini_images):
    from pathlib import Path

    malformed = Path(__file__).resolve().parents[1] / "examples" / "mini" / "malformed.json"
    result = _invoke("run", malformed, "--image-root", mini_images, "--method", "random", "--budget", "1",
                     "--out", tmp_path / "o", "--no-progress")
    assert result.exit_code == 2
    assert "malformed.json:7:" in result.output and "invalid JSON" in result.output


def test_missing_features_name_the_extract_option(tmp_path, extracted):
    result = _invoke("select", "--features", extracted, "--method", "ifd", "--budget", "10", "--out", tmp_path / "o")
    assert result.exit_code == 2
    assert "answer_nll_noinstr" in result.output and "--features ifd" in result.output


def test_nan_features_are_refused_with_keys(tmp_path):
    fs = FeatureSet.from_arrays(keys=["k0", "k1", "k2"], columns={"answer_nll": np.array([1.0, np.nan, 2.0])})
    fs.save(tmp_path / "feats")
    result = _invoke("select", "--features", tmp_path / "feats", "--method", "perplexity", "--budget", "1", "--out", tmp_path / "o")
    assert result.exit_code == 2 and "NaN or inf" in result.output and "k1" in result.output


def test_listing_commands():
    methods = _invoke("methods")
    assert methods.exit_code == 0
    for name in ("random", "length", "perplexity", "datatailor", "coincide", "prism"):
        assert name in methods.output
    models = _invoke("models")
    for name in ("llava-1.5-7b", "qwen2.5-vl-7b", "tiny-llava", "tiny-qwen2-vl", "llava-onevision-qwen2-0.5b"):
        assert name in models.output
    unknown = _invoke("select", "--features", ".", "--method", "nope", "--budget", "1", "--out", "x")
    assert unknown.exit_code == 2
