"""The checks that run before any model is loaded, the directory lock, damaged cache shards and
model-source errors, each on a bad input built here."""

import json
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from mmselect.budget import Budget
from mmselect.errors import BudgetError, ConfigError, MMSelectError
from mmselect.data.rejected import RejectedRecord
from mmselect.features import shards as shards_module
from mmselect.features.shards import ExtractionOutput, JsonCodec, NpzCodec, ShardStore
from mmselect.locking import DirectoryBusyError, RunInterrupted, directory_lock, exclusive_run
from mmselect.models.hub import ModelSourceError, check_model_source, loading
from mmselect.validation import (
    TooManyRejectedError,
    check_budgets,
    check_extract_options,
    check_max_rejected,
    check_output_dir,
    check_rejected_share,
    reason_kind,
)


# --- budgets against the usable records ---------------------------------------------------------
@pytest.mark.parametrize("budget", ["61", "1000"])
def test_budget_above_the_usable_records_names_the_count(budget):
    with pytest.raises(BudgetError, match=r"exceeds the 60 usable record\(s\) of data.json"):
        check_budgets([Budget.parse(budget)], 60, "data.json")


@pytest.mark.parametrize("budget", ["0", "0.01", "1%"])
def test_budget_that_rounds_to_no_record_is_an_error(budget):
    # 0.01 and 1% of 60 records is 0.6: floor gives 0, no record would be selected
    with pytest.raises(BudgetError, match="selects no record"):
        check_budgets([Budget.parse(budget)], 60, "data.json")


def test_budgets_that_fit_pass_and_the_smallest_fraction_that_selects_one():
    check_budgets([Budget.parse("60"), Budget.parse("1"), Budget.parse(1 / 60)], 60, "data.json")


# --- options --------------------------------------------------------------------------------------
class _Options:
    def __init__(self, batch_size=8, shard_size=256, max_length=None):
        self.batch_size, self.shard_size, self.max_length = batch_size, shard_size, max_length


@pytest.mark.parametrize("fields, option", [({"batch_size": 0}, "--batch-size"), ({"batch_size": -3}, "--batch-size"),
                                            ({"shard_size": 0}, "--shard-size"), ({"max_length": 0}, "--max-length")])
def test_non_positive_sizes_are_refused(fields, option):
    with pytest.raises(ConfigError, match=option):
        check_extract_options(_Options(**fields))
    check_extract_options(_Options())


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan"), float("inf"), True])
def test_max_rejected_is_a_share(value):
    with pytest.raises(ConfigError, match="--max-rejected"):
        check_max_rejected(value)


# --- output directory ---------------------------------------------------------------------------
def test_output_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "out"
    target.write_text("not a directory")
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        check_output_dir(target)


def test_output_file_taken_by_a_directory_is_refused(tmp_path):
    (tmp_path / "out" / "subset.json").mkdir(parents=True)
    with pytest.raises(ConfigError, match="subset.json is a directory"):
        check_output_dir(tmp_path / "out")
    assert check_output_dir(tmp_path / "fresh").is_dir()


# --- share of rejected records ------------------------------------------------------------------
def _rejected(n, reason, start=0):
    return [RejectedRecord(key=f"k{start + i}", reason=reason.format(i=start + i), stage="read", position=start + i,
                           id=f"r{start + i}") for i in range(n)]


def test_rejected_share_at_the_threshold_passes_and_above_it_groups_reasons():
    rejected = _rejected(5, "image not found: a/{i}.png") + _rejected(1, "empty conversation", start=5)
    check_rejected_share(rejected, 60, 0.10, stage="reading", source="d.json")  # 6 of 60 = 10%: allowed
    with pytest.raises(TooManyRejectedError) as caught:
        check_rejected_share(rejected + _rejected(1, "image not found: b/{i}.png", start=6), 60, 0.10,
                             stage="reading", source="d.json")
    message = str(caught.value)
    assert "7 of 60 records of d.json were rejected at reading" in message
    lines = message.splitlines()
    assert lines[1] == "  6 x image not found" and lines[4] == "  1 x empty conversation"
    # two examples for the larger group, naming position, id and the full reason
    assert lines[2].strip() == "record #0 (id r0): image not found: a/0.png"
    assert lines[3].strip() == "record #1 (id r1): image not found: a/1.png"
    assert "--image-root" in message and "--max-rejected" in message
    check_rejected_share(rejected * 10, 60, None, stage="reading", source="d.json")  # no threshold: no check


def test_reason_kind_is_the_text_before_the_details():
    assert reason_kind("image not found: a/b.png") == "image not found"
    assert reason_kind("empty conversation") == "empty conversation"


# --- lock ---------------------------------------------------------------------------------------
def test_a_second_process_on_the_same_directory_stops_with_a_clear_message(tmp_path):
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
        assert ready.exists()
        with pytest.raises(DirectoryBusyError, match=rf"pid {holder.pid}\) is writing to the output directory"):
            with directory_lock(tmp_path / "out"):
                pass
    finally:
        holder.kill()
        holder.wait()
    with directory_lock(tmp_path / "out"):  # the kernel released the killed holder's lock
        with directory_lock(tmp_path / "out"):  # re-entrant within one process
            pass


def test_ctrl_c_becomes_one_message_with_the_shards_kept(tmp_path):
    store = ShardStore(tmp_path / "cache")

    @exclusive_run
    def work(*, out):
        shards_module.reset_shard_counts()
        store.write("shard-a", ExtractionOutput(["k0"], {"v": np.ones(1)}))
        raise KeyboardInterrupt

    with pytest.raises(RunInterrupted) as caught:
        work(out=tmp_path / "out")
    assert isinstance(caught.value, KeyboardInterrupt) and caught.value.exit_code == 130
    assert str(caught.value) == ("interrupted (1 shard(s) finished in this run are kept); rerunning the same command "
                                 "resumes from the finished shards")


# --- damaged cache shards ------------------------------------------------------------------------
@pytest.mark.parametrize("codec, damaged", [(NpzCodec(), "npz"), (NpzCodec(), "json"), (JsonCodec(), "json")])
@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_damaged_shard_is_reported_removed_and_recomputed(tmp_path, caplog, codec, damaged, damage):
    store = ShardStore(tmp_path, codec)
    output = ExtractionOutput(["k0", "k1"], {"v": np.array([1.0, 2.0])})
    store.write("shard-a", output)
    path = tmp_path / f"shard-a.{damaged}"
    data = path.read_bytes()
    path.write_bytes(b"" if damage == "empty" else data[: len(data) // 2])
    shards_module.reset_shard_counts()
    with caplog.at_level("WARNING", logger="mmselect"):
        assert not ShardStore(tmp_path, codec).done("shard-a")
    assert "cached shard" in caplog.text and "shard-a" in caplog.text and "computing it again" in caplog.text
    assert not (tmp_path / "shard-a.done").exists() and shards_module.recomputed_shards() == 1
    store.write("shard-a", output)  # recomputed: readable again
    fresh = ShardStore(tmp_path, codec)
    assert fresh.done("shard-a") and fresh.read("shard-a").values["v"].tolist() == [1.0, 2.0]
    assert shards_module.reused_shards() == 1


def test_shard_whose_values_do_not_match_its_keys_is_damaged(tmp_path):
    store = ShardStore(tmp_path)
    store.write("shard-a", ExtractionOutput(["k0", "k1"], {"v": np.array([1.0, 2.0])}))
    (tmp_path / "shard-a.json").write_text(json.dumps({"keys": ["k0"], "rejected": []}))
    assert not store.done("shard-a")


# --- model sources -------------------------------------------------------------------------------
def test_unknown_hub_id_offline_is_one_line_naming_the_id(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelSourceError) as caught:
        check_model_source("nobody/no-such-model")
    message = str(caught.value)
    assert "'nobody/no-such-model'" in message and "HF_HUB_OFFLINE" in message and "--model /path" in message
    assert "\n" not in message


def test_missing_local_directory_and_directory_without_config(tmp_path):
    with pytest.raises(ModelSourceError, match="does not exist"):
        check_model_source(str(tmp_path / "models" / "llava"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelSourceError, match="no config.json"):
        check_model_source(str(tmp_path / "empty"))


def test_custom_code_without_trust_remote_code_names_the_option(tmp_path):
    from transformers import AutoConfig

    model_dir = tmp_path / "custom"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps({
        "model_type": "mmselect_custom", "auto_map": {"AutoConfig": "configuration_custom.CustomConfig"}}))
    (model_dir / "configuration_custom.py").write_text(
        "from transformers import PretrainedConfig\nclass CustomConfig(PretrainedConfig):\n    model_type = 'mmselect_custom'\n")
    check_model_source(str(model_dir))
    with pytest.raises(ModelSourceError, match="--trust-remote-code"):
        with loading(str(model_dir)):
            AutoConfig.from_pretrained(str(model_dir), trust_remote_code=False)


def test_model_source_error_is_a_user_error():
    assert issubclass(ModelSourceError, MMSelectError)


def test_a_run_that_fails_early_leaves_no_directory_it_created(tmp_path):
    @exclusive_run
    def work(*, out):
        raise ConfigError("bad option")

    with pytest.raises(ConfigError):
        work(out=tmp_path / "new" / "out")
    assert not (tmp_path / "new" / "out").exists()
    (tmp_path / "kept").mkdir()
    with pytest.raises(ConfigError):
        work(out=tmp_path / "kept")
    assert (tmp_path / "kept").is_dir()  # existed before: stays
