"""Running on a cluster: progress lines in a log, log file and levels, config files, job-array
shards, provenance in the manifest, no model for a method that reads no feature."""

import hashlib
import io
import json
import logging

import numpy as np
import pytest
from typer.testing import CliRunner

import mmselect
from mmselect import logs
from mmselect.cli import app
from mmselect.errors import ConfigError
from mmselect.features.store import FeatureSet
from mmselect.job_array import ArrayTaskRunner, array_runner, slurm_array_index
from mmselect.progress import ProgressLines, progress_bar


@pytest.fixture(autouse=True)
def _reset_logging():
    yield
    logs.configure(logs.NORMAL)


def _invoke(*args, env=None):
    return CliRunner().invoke(app, [str(a) for a in args], env={"MMSELECT_PROGRESS_SECONDS": "0", **(env or {})})


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


# --- progress lines ---------------------------------------------------------------------------------

def test_progress_lines_report_done_total_rate_and_eta_every_interval():
    stream = io.StringIO()
    logs.configure(logs.NORMAL, stream=stream)
    clock = FakeClock()
    lines = ProgressLines("extract spectrum", 100, interval=10, clock=clock)
    clock.now += 4
    lines.advance(10)  # before the interval: no line
    clock.now += 6
    lines.advance(10)  # 20 done in 10 s: 2/s, 80 left: 40 s
    clock.now += 10
    lines.advance(40)  # 40 more in 10 s: 4/s, 40 left: 10 s
    clock.now += 5
    lines.advance(40)
    lines.finish()
    assert stream.getvalue().splitlines() == [
        "extract spectrum: 20/100 (20.0%), 2.0 samples/s, ETA 0:00:40",
        "extract spectrum: 60/100 (60.0%), 4.0 samples/s, ETA 0:00:10",
        "extract spectrum: 100/100 (100.0%), done in 0:00:25",
    ]


def test_progress_bar_off_a_terminal_writes_lines_and_quiet_writes_none(monkeypatch):
    monkeypatch.setenv("MMSELECT_PROGRESS_SECONDS", "0")
    stream = io.StringIO()
    logs.configure(logs.NORMAL, stream=stream)
    with progress_bar("pass", 4) as advance:
        for _ in range(4):
            advance(1)
    shown = stream.getvalue().splitlines()
    assert [line.split(",")[0] for line in shown] == ["pass: 1/4 (25.0%)", "pass: 2/4 (50.0%)", "pass: 3/4 (75.0%)", "pass: 4/4 (100.0%)"]
    quiet = io.StringIO()
    logs.configure(logs.QUIET, stream=quiet)
    with progress_bar("pass", 4) as advance:
        advance(4)
    assert quiet.getvalue() == ""


def test_reading_a_large_file_logs_its_progress_in_megabytes_and_rows(tmp_path, monkeypatch):
    """Reading 10M records takes minutes: a Slurm log shows how far it is (megabytes of a JSON file,
    rows of a parquet file), and ``progress=False`` keeps it silent."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mmselect.data import read_dataset, readers

    monkeypatch.setenv("MMSELECT_PROGRESS_SECONDS", "0")
    monkeypatch.setattr(readers, "BLOCK_RECORDS", 1000)
    monkeypatch.setattr(readers, "BLOCK_ROWS", 1000)
    conversation = [{"from": "human", "value": "q " * 300}, {"from": "gpt", "value": "a"}]
    records = [{"id": i, "conversations": conversation} for i in range(4000)]  # 2.5 MB
    path = tmp_path / "big.json"
    path.write_text(json.dumps(records))
    assert 2_000_000 < path.stat().st_size < 3_000_000
    stream = io.StringIO()
    logs.configure(logs.NORMAL, stream=stream)
    assert read_dataset(path, check_images=False).n_records == 4000
    shown = [line.split(" (")[0] for line in stream.getvalue().splitlines()]
    assert shown == ["reading big.json: 1/3", "reading big.json: 2/3", "reading big.json: 3/3"]
    assert stream.getvalue().splitlines()[-1].split(", ")[-1].startswith("done in")
    table = pa.table({"conversations": [conversation] * 2500})
    pq.write_table(table, tmp_path / "rows.parquet")
    stream.seek(0), stream.truncate()
    read_dataset(tmp_path / "rows.parquet", check_images=False)
    shown = [line.split(" (")[0] for line in stream.getvalue().splitlines()]
    assert shown == ["reading rows.parquet: 1,000/2,500", "reading rows.parquet: 2,000/2,500",
                     "reading rows.parquet: 2,500/2,500"]
    stream.seek(0), stream.truncate()
    read_dataset(path, check_images=False, progress=False)
    assert stream.getvalue() == ""


def test_quiet_run_keeps_progress_and_messages_in_the_log_file(tmp_path):
    log_file = tmp_path / "job.log"
    stream = io.StringIO()
    logs.configure(logs.QUIET, log_file=log_file, stream=stream)
    with progress_bar("pass", 2, unit="samples") as advance:
        advance(2)
    logging.getLogger("mmselect.test").info("an information")
    logging.getLogger("mmselect.test").warning("a warning")
    assert stream.getvalue() == "a warning\n"
    text = log_file.read_text()
    assert "pass: 2/2 (100.0%), done in" in text and "an information" in text and "WARNING mmselect.test: a warning" in text


# --- CLI: version, levels, log file -----------------------------------------------------------------

def test_version():
    result = _invoke("--version")
    assert result.exit_code == 0 and result.output.strip() == f"mmselect {mmselect.__version__}"


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory, mini_data):
    """The first 24 records of the bundled example: small enough for several extractions."""
    records = json.loads(mini_data.read_text())[:24]
    path = tmp_path_factory.mktemp("data") / "data.json"
    path.write_text(json.dumps(records, indent=1))
    return path


def test_extract_prints_progress_lines_off_a_terminal_and_logs_them(tmp_path, tiny_data, mini_images):
    log_file = tmp_path / "run.log"
    result = _invoke("--log-file", log_file, "extract", tiny_data, "--image-root", mini_images, "--features", "last_token",
                     "--model", "tiny-llava", "--device", "cpu", "--shard-size", "8", "--out", tmp_path / "f")
    assert result.exit_code == 0, result.output
    progress = [line for line in result.output.splitlines() if line.startswith("extract last_token:")]
    # one line per shard (interval 0) and the final one
    assert [line.split(" (")[0] for line in progress] == ["extract last_token: 8/24", "extract last_token: 16/24",
                                                         "extract last_token: 24/24"]
    assert progress[-1].split(", ")[-1].startswith("done in")
    assert "random-weight test model" in result.output
    assert "extract last_token: 24/24 (100.0%)" in log_file.read_text()
    quiet = _invoke("-q", "extract", tiny_data, "--image-root", mini_images, "--features", "last_token",
                    "--model", "tiny-llava", "--device", "cpu", "--out", tmp_path / "g")
    assert quiet.exit_code == 0 and "extract last_token:" not in quiet.output


# --- config file ------------------------------------------------------------------------------------

def test_config_file_gives_options_and_flags_override_it(tmp_path, tiny_data, mini_images):
    config = tmp_path / "job.toml"
    config.write_text(
        f'method = "random"\nbudget = "0.5"\nimage-root = "{mini_images}"\nfeatures = "ignored-by-run"\n'
        f'[run]\nout = "{tmp_path / "out"}"\nparam = "seed=3"\n'
    )
    result = _invoke("run", tiny_data, "--config", config, "--budget", "5")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["counts"]["selected"] == 5  # the flag, not the file's 0.5
    assert manifest["method"] == "random" and manifest["params"]["seed"] == 3
    recorded = manifest["config"]
    assert recorded["file"] == str(config) and recorded["sha256"] == hashlib.sha256(config.read_bytes()).hexdigest()
    assert recorded["options"]["budget"] == "5" and recorded["options"]["method"] == "random"
    assert recorded["options"]["image_root"] == str(mini_images) and recorded["options"]["param"] == ["seed=3"]


def test_yaml_config_and_unknown_keys(tmp_path, tiny_data, mini_images):
    good = tmp_path / "job.yaml"
    good.write_text(f"method: random\nbudget: 4\nout: {tmp_path / 'y'}\nimage_root: {mini_images}\n")
    result = _invoke("run", tiny_data, "--config", good)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "y" / "manifest.json").read_text())["counts"]["selected"] == 4
    bad = tmp_path / "bad.toml"
    bad.write_text('methd = "random"\n')
    refused = _invoke("run", tiny_data, "--config", bad, "--method", "random", "--budget", "1", "--out", tmp_path / "z")
    assert refused.exit_code != 0 and "unknown option 'methd'" in refused.output


# --- job-array shards -------------------------------------------------------------------------------

def test_array_tasks_assemble_to_the_features_of_one_run(tmp_path, tiny_data, mini_images, monkeypatch):
    common = ["extract", tiny_data, "--image-root", mini_images, "--features", "last_token,answer_nll", "--model",
              "tiny-llava", "--device", "cpu", "--shard-size", "5"]
    whole = _invoke(*common, "--out", tmp_path / "whole")
    assert whole.exit_code == 0, whole.output
    split = tmp_path / "split"
    first = _invoke(*common, "--out", split, "--num-shards", "2", "--shard-index", "0")
    assert first.exit_code == 0, first.output
    assert "array task 0 of 2: 3 shard(s)" in first.output and not (split / "manifest.json").exists()
    second = _invoke(*common, "--out", split, "--num-shards", "2", env={"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_MIN": "1"})
    assert second.exit_code == 0 and "array task 1 of 2: 2 shard(s)" in second.output, second.output
    done = list(split.glob("cache/*/*.done"))
    assert len(done) == 5  # 24 samples, 5 per shard

    def no_computing(*args, **kwargs):
        raise AssertionError("the final extract recomputed a shard")

    monkeypatch.setattr("mmselect.features.work.extract_shard", no_computing)
    final = _invoke(*common, "--out", split)
    assert final.exit_code == 0, final.output
    one, assembled = FeatureSet.load(tmp_path / "whole"), FeatureSet.load(split)
    assert list(one.keys) == list(assembled.keys)
    for name in ("last_token",):
        np.testing.assert_array_equal(one.array(name), assembled.array(name))
    np.testing.assert_array_equal(one.column("answer_nll"), assembled.column("answer_nll"))


def test_array_runner_options():
    assert array_runner("local", None, None) == "local"
    runner = array_runner("local", 4, None, environ={"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "4"})
    assert isinstance(runner, ArrayTaskRunner) and runner.index == 3
    assert runner.mine(list(range(10))) == [3, 7]
    assert slurm_array_index({}) is None
    with pytest.raises(ConfigError, match="--shard-index"):
        array_runner("local", 4, None, environ={})
    with pytest.raises(ConfigError, match="0..3"):
        array_runner("local", 4, 4)
    with pytest.raises(ConfigError, match="needs --num-shards"):
        array_runner("local", None, 1)
    with pytest.raises(ConfigError, match="ray"):
        array_runner("ray", 2, 0)


# --- manifest provenance; no model for random ----------------------------------------------------------

def test_random_loads_no_model_and_the_manifest_has_the_input_checksum(tmp_path, tiny_data, mini_images, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("random loaded a model")

    monkeypatch.setattr("mmselect.models.registry.load_model", refuse)
    monkeypatch.setattr("mmselect.models.registry.AutoModelForImageTextToText", None, raising=False)
    result = mmselect.run(tiny_data, image_root=mini_images, method="random", budget=6, out=tmp_path / "r")
    assert int(result.selected.sum()) == 6
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert manifest["counts"]["input_records"] == 24
    assert manifest["inputs"]["data"] == {"path": str(tiny_data), "sha256": hashlib.sha256(tiny_data.read_bytes()).hexdigest(),
                                          "bytes": tiny_data.stat().st_size}
    features = json.loads((tmp_path / "r" / "features" / "manifest.json").read_text())
    assert features["model"] is None and features["inputs"]["data"]["sha256"] == manifest["inputs"]["data"]["sha256"]


def test_extraction_manifest_records_processor_accelerator_and_ray_version(tmp_path, tiny_data, mini_images):
    result = _invoke("extract", tiny_data, "--image-root", mini_images, "--features", "tokens", "--model", "tiny-llava",
                     "--device", "cpu", "--out", tmp_path / "f")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "f" / "manifest.json").read_text())
    assert manifest["model"]["processor_class"] == "LlavaProcessor"
    assert manifest["accelerator"]["cuda_available"] is False
    from importlib import metadata

    try:
        assert manifest["versions"]["ray"] == metadata.version("ray")
    except metadata.PackageNotFoundError:
        assert "ray" not in manifest["versions"]
    assert manifest["config"]["command"] == "extract" and manifest["config"]["options"]["features"] == "tokens"


# --- methods --verbose ------------------------------------------------------------------------------

def test_methods_verbose_shows_each_parameter_meaning_default_and_features():
    result = CliRunner().invoke(app, ["methods", "perplexity"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    from mmselect.methods import get_method

    (name, default, meaning, allowed), = type(get_method("perplexity")).describe_params()
    assert "features: answer_nll" in result.output
    row = next(line for line in result.output.splitlines() if line.strip().startswith(name + " "))
    assert repr(default) in row and meaning in row and allowed in row
    assert "no model needed" in CliRunner().invoke(app, ["methods", "random"]).output


# --- progress inside a long shard ---------------------------------------------------------------------

def test_mmssr_shard_moves_the_bar_per_generated_batch(monkeypatch):
    from types import SimpleNamespace

    import torch

    from mmselect.features import mmssr_scoring
    from mmselect.features.mmssr_feature import MMSSRWork

    bundle = SimpleNamespace(load_args={}, device=torch.device("cpu"), model=None, processor=None)
    capabilities = {"ocr": "OCR", "count": "counting"}
    shard = [SimpleNamespace(key=f"k{i}", turns=[], image_paths=[]) for i in range(6)]

    def fake_score_samples(model, processor, inputs, caps, *, progress, batch_size, **kwargs):
        for _ in range(len(caps) + 1):  # every capability, then the styles
            for start in range(0, len(inputs), batch_size):
                progress(min(batch_size, len(inputs) - start))
        n = len(inputs)
        return SimpleNamespace(columns={f"score_{c}": np.full(n, 3.0) for c in caps}, replies={c: ["3"] * n for c in caps},
                               stats={})

    monkeypatch.setattr(mmssr_scoring, "score_samples", fake_score_samples)
    steps = []
    MMSSRWork(bundle, None, capabilities, batch_size=4, max_new_tokens=4)(shard, steps.append)
    assert len(steps) >= 6  # two batches per pass, three passes: the bar moves before the shard ends
    assert steps[:2] == pytest.approx([4 / 3, 2 / 3]) and sum(steps) == pytest.approx(6)


def test_device_map_without_accelerate_names_the_extra(monkeypatch):
    import sys

    from mmselect.models.registry import load_model

    monkeypatch.setitem(sys.modules, "accelerate", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"mmselect\[multi-gpu\]"):
        load_model("tiny-llava", device="cpu", device_map="auto")


# --- run takes what select takes: --scores, --allow-missing-scores -----------------------------------

def test_run_merges_scores_and_allows_missing_rows_only_when_asked(tmp_path, tiny_data, mini_images):
    scores = tmp_path / "scores.csv"
    scores.write_text("position,score_ocr\n" + "".join(f"{p},{p % 5}\n" for p in range(12)))  # 12 of 24 records
    common = ["run", tiny_data, "--image-root", mini_images, "--method", "random", "--budget", "4", "--scores", scores]
    refused = _invoke(*common, "--out", tmp_path / "refused")
    assert refused.exit_code != 0 and "--allow-missing-scores" in refused.output
    allowed = _invoke(*common, "--allow-missing-scores", "--out", tmp_path / "allowed")
    assert allowed.exit_code == 0, allowed.output
    manifest = json.loads((tmp_path / "allowed" / "manifest.json").read_text())
    assert manifest["counts"]["selected"] == 4
    assert manifest["config"]["options"]["allow_missing_scores"] is True
    assert manifest["inputs"]["scores"]["sha256"] == hashlib.sha256(scores.read_bytes()).hexdigest()
    assert manifest["inputs"]["data"]["sha256"] == hashlib.sha256(tiny_data.read_bytes()).hexdigest()
