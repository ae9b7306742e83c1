"""A corpus of bad inputs, each built here and run through the CLI: no traceback, a message naming
the file or record and the reason, exit code 2 for a user error, and counts that add up in every
run that finishes. Mistakes that can be seen before the model is loaded stop before it is."""

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mmselect.cli import app
from mmselect.features.store import FeatureSet

runner = CliRunner()
N_RECORDS = 12


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _check_user_error(result, *expected, code=2):
    """Exit ``code``, no traceback, and every ``expected`` text in the message."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    text = "".join(result.output.split())  # the console wraps long lines, paths anywhere
    for item in expected:
        assert "".join(item.split()) in text, (item, result.output)


def _check_counts(out: Path, n_records: int):
    manifest = json.loads((out / "manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["input_records"] == n_records
    assert counts["selected"] + counts["not_selected"] + counts["rejected"] == n_records
    rejected = (out / "rejected.jsonl").read_text().splitlines() if (out / "rejected.jsonl").exists() else []
    assert len(rejected) == counts["rejected"]
    return counts


@pytest.fixture
def small(tmp_path, mini_data):
    """The first records of the bundled example, with images under its image root."""
    data = tmp_path / "data.json"
    data.write_text(json.dumps(json.loads(mini_data.read_text())[:N_RECORDS], indent=1))
    return data


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model fails the test: these mistakes must be reported before."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the mistake was reported")

    monkeypatch.setattr("mmselect.models.registry.load_model", refuse)


# --- reported before any model is loaded ---------------------------------------------------------
@pytest.mark.parametrize("budget, expected", [
    ("lots", ["invalid budget 'lots'"]),
    ("150%", ["budget fraction must be in (0, 1], got 1.5"]),
    ("-1", ["budget count must be >= 0, got -1"]),
    ("nan", ["invalid budget 'nan'"]),
    ("1000", ["budget 1000 exceeds the 12 usable record(s) of", "data.json"]),
    ("0", ["budget 0 of the 12 usable record(s) of", "selects no record"]),
    ("0.05", ["budget 0.05 of the 12 usable record(s)", "selects no record"]),
])
def test_bad_budget_stops_before_the_model(tmp_path, small, mini_images, no_model, budget, expected):
    result = _invoke("run", small, "--image-root", mini_images, "--method", "perplexity", "--budget", budget,
                     "--out", tmp_path / "out", "--no-progress")
    _check_user_error(result, *expected)


def test_output_that_is_a_file(tmp_path, small, mini_images, no_model):
    (tmp_path / "out").write_text("x")
    result = _invoke("run", small, "--image-root", mini_images, "--method", "perplexity", "--budget", "3",
                     "--out", tmp_path / "out", "--no-progress")
    _check_user_error(result, f"--out {tmp_path / 'out'} is a file, not a directory")


@pytest.mark.parametrize("command", ["run", "extract"])
def test_output_file_taken_by_a_directory(tmp_path, small, mini_images, no_model, command):
    blocked = "subset.json" if command == "run" else "samples.parquet"
    (tmp_path / "out" / blocked).mkdir(parents=True)
    tail = ["--method", "perplexity", "--budget", "3"] if command == "run" else ["--features", "spectrum"]
    result = _invoke(command, small, "--image-root", mini_images, *tail, "--out", tmp_path / "out", "--no-progress")
    _check_user_error(result, f"{blocked} is a directory where an output file goes")


@pytest.mark.parametrize("option, value", [("--batch-size", "0"), ("--shard-size", "0")])
def test_non_positive_sizes(tmp_path, small, mini_images, no_model, option, value):
    result = _invoke("extract", small, "--image-root", mini_images, "--features", "spectrum", option, value,
                     "--out", tmp_path / "out", "--no-progress")
    _check_user_error(result, f"{option} must be a positive integer, got 0")


def test_wrong_image_root_stops_with_grouped_reasons(tmp_path, small, no_model):
    (tmp_path / "elsewhere").mkdir()
    result = _invoke("run", small, "--image-root", tmp_path / "elsewhere", "--method", "perplexity", "--budget", "3",
                     "--out", tmp_path / "out", "--no-progress")
    records = json.loads(small.read_text())
    with_image = [i for i, r in enumerate(records) if r.get("image")]
    share = len(with_image) / len(records)
    _check_user_error(result, f"{len(with_image)} of {len(records)} records of", "were rejected at reading",
                      f"({share:.0%}, more than --max-rejected 0.1)", f"{len(with_image)} x image not found",
                      f"record #{with_image[0]} (id {records[with_image[0]]['id']}): image not found: {records[with_image[0]]['image']}",
                      "Is --image-root right?", "--max-rejected 1")
    assert f"record #{with_image[2]}" not in result.output  # two examples per reason


def test_strict_stops_at_reading_on_a_missing_image(tmp_path, small, mini_images, no_model):
    records = json.loads(small.read_text())
    records[5]["image"] = "digits/not_there.png"
    small.write_text(json.dumps(records))
    result = _invoke("run", small, "--image-root", mini_images, "--method", "perplexity", "--budget", "3",
                     "--out", tmp_path / "out", "--strict", "--no-progress")
    _check_user_error(result, "record 0000005-", "image not found: digits/not_there.png")


def test_task_field_no_record_has(tmp_path, small, mini_images, no_model):
    result = _invoke("run", small, "--image-root", mini_images, "--method", "perplexity", "--budget", "3",
                     "--task-field", "sourse", "--out", tmp_path / "out", "--no-progress")
    _check_user_error(result, "sourse", "conversations")


def test_deeply_nested_json(tmp_path, mini_images, no_model):
    data = tmp_path / "deep.json"
    data.write_text("[" + "[" * 100_000 + "]" * 100_000 + "]")
    result = _invoke("run", data, "--image-root", mini_images, "--method", "perplexity", "--budget", "3",
                     "--out", tmp_path / "out", "--no-progress")
    _check_user_error(result, "deep.json")


def test_unknown_hub_id_offline_is_one_line(tmp_path, small, mini_images, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    result = _invoke("extract", small, "--image-root", mini_images, "--features", "spectrum",
                     "--model", "nobody/no-such-model", "--out", tmp_path / "out", "--no-progress")
    _check_user_error(result, "model 'nobody/no-such-model' is not in the local Hugging Face cache", "HF_HUB_OFFLINE",
                      "--model /path/to/that/directory")
    assert len([line for line in result.output.splitlines() if line.startswith("error:")]) == 1


def test_no_usable_record_ends_like_every_run(tmp_path, mini_images):
    records = [{"id": f"r{i}", "image": f"gone/{i}.png",
                "conversations": [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A."}]}
               for i in range(4)]
    data = tmp_path / "gone.json"
    data.write_text(json.dumps(records))
    for method in ("random", "perplexity"):
        out = tmp_path / method
        result = _invoke("run", data, "--image-root", mini_images, "--method", method, "--budget", "0.5",
                         "--out", out, "--max-rejected", "1", "--no-progress")
        _check_user_error(result, "no record of", "gone.json is usable: all 4 were rejected", "4 x image not found",
                          "record #0 (id r0): image not found: gone/0.png")
        counts = _check_counts(out, 4)
        assert counts == {"input_records": 4, "selected": 0, "not_selected": 0, "rejected": 4}


def test_a_second_run_into_a_busy_output_stops(tmp_path, small, mini_images, no_model):
    ready = tmp_path / "ready"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import pathlib, time
        from mmselect.locking import directory_lock
        with directory_lock({str(tmp_path / 'out')!r}):
            pathlib.Path({str(ready)!r}).write_text("1")
            time.sleep(60)
    """)])
    try:
        for _ in range(600):
            if ready.exists():
                break
            time.sleep(0.1)
        result = _invoke("run", small, "--image-root", mini_images, "--method", "perplexity", "--budget", "3",
                         "--out", tmp_path / "out", "--no-progress")
        _check_user_error(result, f"another mmselect process (pid {holder.pid}) is writing to the output directory")
    finally:
        holder.kill()
        holder.wait()


# --- features directories that cannot be used -----------------------------------------------------
@pytest.fixture
def features_dir(tmp_path):
    root = tmp_path / "feat"
    keys = [f"k{i}" for i in range(6)]
    FeatureSet.from_arrays(keys=keys, columns={"answer_nll": np.linspace(1, 2, 6)},
                           arrays={"last_token": np.eye(6, dtype=np.float32)},
                           manifest={"model": {"name": "mine"}, "feature_arrays": ["last_token"]}).save(root)
    return root


def _damage_npy_empty(root):
    (root / "last_token.npy").write_bytes(b"")


def _damage_npy_rows(root):
    np.save(root / "last_token.npy", np.ones((4, 6), dtype=np.float32))


def _damage_npy_objects(root):
    np.save(root / "last_token.npy", np.array([object()] * 6, dtype=object), allow_pickle=True)


def _damage_parquet(root):
    (root / "samples.parquet").write_bytes(b"")


def _damage_keys(root):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"key": ["a", "a", "b", "c", "d", "e"], "task": ["t"] * 6, "answer_nll": [1.0] * 6}),
                   root / "samples.parquet")


@pytest.mark.parametrize("damage, expected", [
    (_damage_npy_empty, ["last_token.npy cannot be read as a .npy array (the file is empty)"]),
    (_damage_npy_rows, ["last_token.npy has shape (4, 6)", "one row per sample of samples.parquet (6)"]),
    (_damage_npy_objects, ["last_token.npy holds Python objects"]),
    (_damage_parquet, ["samples.parquet cannot be read as parquet"]),
    (_damage_keys, ["samples.parquet: sample keys must be unique; key 'a' appears 2 times"]),
])
def test_unusable_features_directory(tmp_path, features_dir, damage, expected):
    damage(features_dir)
    result = _invoke("select", "--features", features_dir, "--method", "semdedup", "--budget", "3", "--out", tmp_path / "o")
    _check_user_error(result, *expected)


@pytest.mark.parametrize("manifest", [["free", "form"], {"model": "my-encoder"}])
def test_free_form_manifest_selects(tmp_path, features_dir, manifest):
    (features_dir / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "o"
    result = _invoke("select", "--features", features_dir, "--method", "perplexity", "--budget", "3", "--out", out)
    assert result.exit_code == 0, result.output
    assert _check_counts(out, 6)["selected"] == 3


def test_hand_made_features_match_the_data_by_position(tmp_path, small):
    records = json.loads(small.read_text())
    positions = np.array([7, 3, 0, 11, 5])
    root = tmp_path / "mine"
    FeatureSet.from_arrays(keys=[f"mine-{p}" for p in positions],
                           columns={"position": positions, "answer_nll": np.array([5.0, 4.0, 3.0, 2.0, 1.0])}).save(root)
    out = tmp_path / "o"
    result = _invoke("select", "--features", root, "--method", "perplexity", "--budget", "5", "--data", small,
                     "--out", out)
    assert result.exit_code == 0, result.output
    counts = _check_counts(out, N_RECORDS)
    assert counts["selected"] == 5 and counts["rejected"] == N_RECORDS - 5
    assert json.loads((out / "subset.json").read_text()) == [records[p] for p in sorted(positions)]


# --- runs that reach the model -----------------------------------------------------------------
def _extract(data, images, out, *extra):
    return _invoke("extract", data, "--image-root", images, "--model", "tiny-llava", "--out", out,
                   "--shard-size", "4", "--no-progress", *extra)


def test_second_extraction_adds_and_another_model_is_refused(tmp_path, small, mini_images):
    out = tmp_path / "feat"
    assert _extract(small, mini_images, out, "--features", "spectrum").exit_code == 0
    result = _extract(small, mini_images, out, "--features", "answer_nll", "--batch-size", "4")
    assert result.exit_code == 0, result.output
    features = FeatureSet.load(out)
    assert {"sve", "answer_nll"} <= set(features.column_names)
    assert features.manifest["features"] == ["spectrum", "answer_nll"]
    assert len([d for d in (out / "cache").iterdir() if d.is_dir()]) == 2  # batch size 8 and 4: two cache keys
    refused = _invoke("extract", small, "--image-root", mini_images, "--model", "tiny-qwen2-vl", "--out", out,
                      "--features", "spectrum", "--no-progress")
    _check_user_error(refused, f"{out} holds features of model tiny-llava; this extraction uses model tiny-qwen2-vl")


def test_damaged_cache_shard_is_recomputed(tmp_path, small, mini_images):
    out = tmp_path / "feat"
    assert _extract(small, mini_images, out, "--features", "last_token").exit_code == 0
    first = np.array(FeatureSet.load(out).array("last_token"))
    shard = sorted((out / "cache").glob("*/shard-*.npz"))[0]
    shard.write_bytes(b"")
    result = _extract(small, mini_images, out, "--features", "last_token")
    assert result.exit_code == 0, result.output
    assert "cached shard" in result.output and shard.stem in result.output and "computing it again" in result.output
    assert "resumed: reused 2 finished shard(s)" in result.output and "recomputed 1 damaged one(s)" in result.output
    assert np.array_equal(np.array(FeatureSet.load(out).array("last_token")), first)


def test_ctrl_c_says_how_to_resume_and_the_rerun_reuses_shards(tmp_path, small, mini_images, monkeypatch):
    from mmselect.features.shards import ShardStore

    out = tmp_path / "feat"
    write = ShardStore.write
    calls = []

    def interrupted_write(self, name, output):
        if len(calls) == 1:
            raise KeyboardInterrupt
        calls.append(name)
        write(self, name, output)

    monkeypatch.setattr(ShardStore, "write", interrupted_write)
    result = _extract(small, mini_images, out, "--features", "last_token")
    _check_user_error(result, "interrupted (1 shard(s) finished in this run are kept); rerunning the same command "
                              "resumes from the finished shards", code=130)
    monkeypatch.setattr(ShardStore, "write", write)
    result = _extract(small, mini_images, out, "--features", "last_token")
    assert result.exit_code == 0, result.output
    assert "resumed: reused 1 finished shard(s)" in result.output
    assert FeatureSet.load(out).n == N_RECORDS


def test_unknown_hub_id_is_reported_before_the_data_is_read(tmp_path, small, mini_images, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))

    def refuse(*args, **kwargs):
        raise AssertionError("the dataset was read before the model id was checked")

    monkeypatch.setattr("mmselect.pipeline.read_dataset", refuse)
    for command in (["run", "--method", "perplexity", "--budget", "3"], ["extract", "--features", "spectrum"]):
        result = _invoke(command[0], small, "--image-root", mini_images, *command[1:], "--model", "nobody/no-such-model",
                         "--out", tmp_path / command[0], "--no-progress")
        _check_user_error(result, "model 'nobody/no-such-model' is not in the local Hugging Face cache")


def test_custom_model_code_needs_trust_remote_code(tmp_path, small, mini_images):
    model_dir = tmp_path / "custom-model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps({
        "model_type": "mmselect_custom", "auto_map": {"AutoConfig": "configuration_custom.CustomConfig"}}))
    (model_dir / "configuration_custom.py").write_text(
        "from transformers import PretrainedConfig\nclass CustomConfig(PretrainedConfig):\n    model_type = 'mmselect_custom'\n")
    result = _invoke("extract", small, "--image-root", mini_images, "--features", "spectrum", "--model", model_dir,
                     "--out", tmp_path / "out", "--no-progress")
    _check_user_error(result, f"model {model_dir} ships its own Python code", "--trust-remote-code")


def test_utf8_bom_file_finishes_with_counts_that_add_up(tmp_path, small, mini_images):
    data = tmp_path / "bom.json"
    data.write_bytes(b"\xef\xbb\xbf" + small.read_bytes())
    out = tmp_path / "out"
    result = _invoke("run", data, "--image-root", mini_images, "--method", "random", "--budget", "4", "--out", out,
                     "--no-progress")
    assert result.exit_code == 0, result.output
    assert _check_counts(out, N_RECORDS)["selected"] == 4


def test_extracting_into_a_damaged_features_directory_stops_before_the_model(tmp_path, small, mini_images, no_model):
    out = tmp_path / "feat"
    FeatureSet.from_arrays(keys=["a"], columns={"sve": np.ones(1)}, manifest={"model": {"name": "tiny-llava"}}).save(out)
    (out / "samples.parquet").write_bytes(b"")
    result = _invoke("extract", small, "--image-root", mini_images, "--features", "spectrum", "--out", out, "--no-progress")
    _check_user_error(result, f"{out / 'samples.parquet'} cannot be read as parquet")
