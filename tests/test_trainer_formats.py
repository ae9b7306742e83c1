"""Each export format is read back by mmselect's own reader with the same records."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mmselect.data.readers import read_dataset
from mmselect.errors import ConfigError
from mmselect.trainer_formats import llama_factory_entry, write_trainer_subset

MINI = Path(__file__).resolve().parents[1] / "examples" / "mini"

# LLaMA-Factory's documented dataset_info.json keys (data/README.md of LLaMA-Factory)
LLAMA_FACTORY_KEYS = {"hf_hub_url", "ms_hub_url", "script_url", "file_name", "formatting", "ranking",
                      "subset", "split", "folder", "num_samples", "columns", "tags"}
LLAMA_FACTORY_SHAREGPT_COLUMNS = {"messages", "system", "tools", "images", "videos", "audios", "chosen", "rejected", "kto_tag"}
LLAMA_FACTORY_TAGS = {"role_tag", "content_tag", "user_tag", "assistant_tag", "observation_tag", "function_tag", "system_tag"}


@pytest.fixture(scope="module")
def chosen():
    dataset = read_dataset(MINI / "data.json", image_root=MINI / "images")
    samples = dataset.samples
    with_images = [s for s in samples if s.n_images][:4]
    text_only = [s for s in samples if not s.n_images][:2]
    multi_turn = [s for s in samples if s.rounds > 1 and s not in with_images][:2]
    return sorted(with_images + text_only + multi_turn, key=lambda s: s.position)


def _content(sample):
    return [(t.role, t.text) for t in sample.turns], [Path(p).read_bytes() for p in sample.image_paths]


@pytest.mark.parametrize("export_format", ["llava-json", "sharegpt"])
def test_json_formats_read_back_with_the_same_records(tmp_path, chosen, export_format):
    written = write_trainer_subset(chosen, tmp_path, export_format)
    back = read_dataset(written[0])  # absolute image paths: no --image-root needed
    assert not back.rejected and len(back.samples) == len(chosen)
    for original, copy in zip(chosen, back.samples):
        assert _content(copy) == _content(original)


def test_sharegpt_comes_with_a_llama_factory_entry(tmp_path, chosen):
    subset, info = write_trainer_subset(chosen, tmp_path, "sharegpt")
    entry = json.loads(info.read_text())["mmselect_subset"]
    assert entry == llama_factory_entry(subset.name)
    assert set(entry) <= LLAMA_FACTORY_KEYS
    assert entry["formatting"] == "sharegpt"
    assert set(entry["columns"]) <= LLAMA_FACTORY_SHAREGPT_COLUMNS and set(entry["tags"]) <= LLAMA_FACTORY_TAGS
    records = json.loads(subset.read_text())
    for record in records:  # LLaMA-Factory pairs each <image> tag with one entry of `images`
        tags = sum(m["content"].count("<image>") for m in record["messages"])
        assert tags == len(record.get("images", []))
        assert all(Path(p).is_absolute() for p in record.get("images", []))


def test_hf_parquet_holds_content_lists_and_image_bytes(tmp_path, chosen):
    (path,) = write_trainer_subset(chosen, tmp_path, "hf")
    table = pq.read_table(path).to_pylist()
    assert len(table) == len(chosen)
    for original, row in zip(chosen, table):
        assert [m["role"] for m in row["messages"]] == [t.role for t in original.turns]
        n_image_parts = sum(p["type"] == "image" for m in row["messages"] for p in m["content"])
        assert n_image_parts == original.n_images == len(row["images"])
        assert [i["bytes"] for i in row["images"]] == _content(original)[1]
        texts = " ".join(p["text"] for m in row["messages"] for p in m["content"] if p["type"] == "text")
        assert "<image>" not in texts


def test_unknown_format_is_refused(tmp_path, chosen):
    with pytest.raises(ConfigError, match="export-format"):
        write_trainer_subset(chosen, tmp_path, "csv")
