"""The inputs people have: each test builds a small file in that layout and reads it."""

import gzip
import io
import json
import zipfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mmselect.data import open_image, read_dataset, sample_key
from mmselect.errors import DataFormatError

CONV = [{"from": "human", "value": "<image>\nwhat colour?"}, {"from": "gpt", "value": "red"}]


def _png(colour, size=(8, 6)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


# -- conversation layouts ----------------------------------------------------------------------

def test_openai_trl_content_lists(tmp_path, image_dir):
    records = [
        {"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]},
                      {"role": "assistant", "content": [{"type": "text", "text": "A square."}]}],
         "images": ["coco/0.png"]},
        {"messages": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "gqa/1.png"}},
                                                   {"type": "text", "text": "Colour?"}]},
                      {"role": "assistant", "content": "Green."}]},
        {"messages": [{"role": "user", "content": [{"type": "audio"}]}, {"role": "assistant", "content": "x"}]},
    ]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    ds = read_dataset(path, image_root=image_dir)
    first, second = ds.samples
    assert [(t.role, t.text) for t in first.turns] == [("user", "<image>\nWhat is it?"), ("assistant", "A square.")]
    assert first.images == ["coco/0.png"] and first.task == "coco"
    assert [(t.role, t.text) for t in second.turns] == [("system", "Be brief."), ("user", "<image>\nColour?"), ("assistant", "Green.")]
    assert second.images == ["gqa/1.png"] and second.image_paths == [str(image_dir.resolve() / "gqa" / "1.png")]
    assert ds.rejected[0].reason == "turn 0: unsupported content part type 'audio'"


def test_ms_swift_sharegpt_and_query_response(tmp_path, image_dir):
    records = [
        {"system": "You are helpful.", "conversation": [{"human": "<image>\nWhat?", "assistant": "A dog."},
                                                        {"human": "Sure?", "assistant": "Yes."}], "images": ["coco/1.png"]},
        {"query": "<image>\nAnd now?", "response": "Two.", "history": [["First?", "One."]], "images": ["gqa/0.png"]},
        {"query": "Just text?", "response": "Yes."},
        {"query": "q", "response": "r", "history": [["only one"]]},
    ]
    path = tmp_path / "d.json"
    path.write_text(json.dumps(records))
    ds = read_dataset(path, image_root=image_dir)
    a, b, c = ds.samples
    assert [(t.role, t.text) for t in a.turns] == [("system", "You are helpful."), ("user", "<image>\nWhat?"),
                                                    ("assistant", "A dog."), ("user", "Sure?"), ("assistant", "Yes.")]
    assert a.rounds == 2 and a.task == "coco"
    assert [(t.role, t.text) for t in b.turns] == [("user", "First?"), ("assistant", "One."),
                                                    ("user", "<image>\nAnd now?"), ("assistant", "Two.")]
    assert c.task == "text" and c.rounds == 1
    assert ds.rejected[0].reason == "history entry 0 is not a [query, response] pair of strings"


# -- compressed files ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["d.json.gz", "d.jsonl.gz", "d.jsonl.zst", "d.json.zst"])
def test_compressed_files(tmp_path, name):
    records = [{"id": str(i), "conversations": [{"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": "a"}]} for i in range(4)]
    text = json.dumps(records, indent=2) if ".json." in name else "".join(json.dumps(r) + "\n" for r in records)
    path = tmp_path / name
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        zstandard = pytest.importorskip("zstandard")
        path.write_bytes(zstandard.ZstdCompressor().compress(text.encode()))
    ds = read_dataset(path)
    assert ds.container == ("json" if ".json." in name else "jsonl")
    assert [s.key for s in ds.samples] == [sample_key(i, r) for i, r in enumerate(records)]
    assert json.loads(ds.raw(2)) == records[2]
    path.write_bytes(b"not compressed at all")
    with pytest.raises(DataFormatError, match="cannot decompress"):
        read_dataset(path)


# -- images from archives and URLs ------------------------------------------------------------

def test_images_inside_a_zip_root(tmp_path):
    archive = tmp_path / "images.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("coco/0.png", _png((200, 0, 0)))
        handle.writestr("gqa/1.png", _png((0, 200, 0)))
        handle.writestr("coco/bad.png", b"not a png")
    records = [
        {"id": "a", "image": "coco/0.png", "conversations": CONV},
        {"id": "b", "image": "gqa/1.png", "conversations": CONV},
        {"id": "missing", "image": "coco/none.png", "conversations": CONV},
        {"id": "bad", "image": "coco/bad.png", "conversations": CONV},
        {"id": "escape", "image": "../outside.png", "conversations": CONV},
    ]
    path = tmp_path / "d.json"
    path.write_text(json.dumps(records))
    for root in (archive, f"zip://::{archive}"):
        ds = read_dataset(path, image_root=root)
        assert [s.id for s in ds.samples] == ["a", "b"]
        reasons = {r.id: r.reason for r in ds.rejected}
        assert reasons == {
            "missing": "image not found: coco/none.png",
            "bad": reasons["bad"],
            "escape": "image path '../outside.png' escapes the image root",
        }
        assert reasons["bad"].startswith("unreadable image coco/bad.png: UnidentifiedImageError")
        assert open_image(ds.samples[1].image_paths[0]).getpixel((0, 0)) == (0, 200, 0)
    # A folder inside the archive as the root.
    records = [{"id": "a", "image": "0.png", "conversations": CONV}]
    path.write_text(json.dumps(records))
    ds = read_dataset(path, image_root=f"zip://coco::{archive}")
    assert open_image(ds.samples[0].image_paths[0]).getpixel((0, 0)) == (200, 0, 0)


def test_url_root_keeps_paths_inside_it(tmp_path):
    from mmselect.data.images import ImageResolver
    from mmselect.errors import RecordError

    resolver = ImageResolver("s3://bucket/images/")
    assert resolver.resolve("coco/a/../b.jpg", "k") == "s3://bucket/images/coco/b.jpg"
    for bad in ("../x.jpg", "coco/../../x.jpg", "/etc/passwd", "https://elsewhere/x.jpg"):
        with pytest.raises(RecordError, match="escapes the image root"):
            resolver.resolve(bad, "k")


# -- row formats: parquet, datasets folders, hub ids --------------------------------------------

def _rows():
    return [
        {"id": "a", "image": {"bytes": _png((255, 0, 0)), "path": "coco/a.png"}, "conversations": CONV},
        {"id": "b", "image": None, "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
        {"id": "c", "image": {"bytes": b"junk", "path": None}, "conversations": CONV},
        {"id": "d", "image": {"bytes": _png((0, 0, 255)), "path": None}, "conversations": CONV},
    ]


def test_parquet_with_embedded_images(tmp_path):
    from mmselect.data.rows import row_hash40
    from mmselect.data.keys import format_key

    rows = _rows()
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=2)
    ds = read_dataset(path)
    assert ds.container == "parquet" and ds.n_records == 4
    assert [s.id for s in ds.samples] == ["a", "b", "d"]
    assert ds.rejected[0].id == "c" and ds.rejected[0].reason.startswith("unreadable image image[0]: UnidentifiedImageError")
    a, b, d = ds.samples
    assert a.images == ["coco/a.png"] and a.task == "coco" and b.task == "text" and d.images == ["image[0]"]
    assert open_image(d.image_paths[0]).getpixel((0, 0)) == (0, 0, 255)
    # Keys: position + hash of the row, the image bytes' hash included.
    assert a.key == format_key(0, row_hash40(rows[0]))
    changed = [dict(r) for r in rows]
    changed[0]["image"] = {"bytes": _png((254, 0, 0)), "path": "coco/a.png"}
    pq.write_table(pa.Table.from_pylist(changed), tmp_path / "changed.parquet")
    other = read_dataset(tmp_path / "changed.parquet")
    assert other.samples[0].key != a.key and other.samples[1].key == b.key
    # The subset: the selected rows unchanged (columns, schema, image bytes), in source order.
    from mmselect.export import write_subset

    out = write_subset(ds, [d.position, a.position], tmp_path)
    assert out.name == "subset.parquet"
    table = pq.read_table(out)
    assert table.schema == pq.read_schema(path)
    assert table.to_pylist() == [rows[0], rows[3]]


def test_parquet_folder_positions_run_across_files(tmp_path, image_dir):
    folder = tmp_path / "data"
    folder.mkdir()
    rows = [{"image": f"coco/{i % 3}.png", "conversations": CONV, "n": i} for i in range(5)]
    pq.write_table(pa.Table.from_pylist(rows[:3]), folder / "part-0.parquet")
    pq.write_table(pa.Table.from_pylist(rows[3:]), folder / "part-1.parquet")
    ds = read_dataset(folder, image_root=image_dir)
    assert [s.position for s in ds.samples] == [0, 1, 2, 3, 4]
    assert [s.record["n"] for s in ds.samples] == [0, 1, 2, 3, 4]
    assert ds.samples[4].image_paths == [str(image_dir.resolve() / "coco" / "1.png")]
    ds.write_rows([4, 1], tmp_path / "sub.parquet")
    assert pq.read_table(tmp_path / "sub.parquet").to_pylist() == [rows[1], rows[4]]


def test_datasets_save_to_disk_and_hub_id(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({
        "id": datasets.Value("string"),
        "image": datasets.Image(),
        "conversations": [{"from": datasets.Value("string"), "value": datasets.Value("string")}],
    })
    images = [Image.new("RGB", (5, 4), (10 * i, 0, 0)) for i in range(3)]
    data = {"id": ["x", "y", "z"], "image": images, "conversations": [CONV] * 3}
    saved = tmp_path / "saved"
    datasets.Dataset.from_dict(data, features=features).save_to_disk(saved)
    ds = read_dataset(saved)
    assert ds.container == "arrow" and [s.id for s in ds.samples] == ["x", "y", "z"]
    assert open_image(ds.samples[2].image_paths[0]).getpixel((0, 0)) == (20, 0, 0)
    out = ds.write_rows([2], tmp_path / "sub.parquet")
    reread = datasets.Dataset.from_parquet(str(out))
    assert reread.features == features and reread[0]["image"].getpixel((0, 0)) == (20, 0, 0)
    # A DatasetDict folder takes a split.
    dict_folder = tmp_path / "dict"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(data, features=features)}).save_to_disk(dict_folder)
    assert [s.key for s in read_dataset(dict_folder).samples] == [s.key for s in ds.samples]
    # A hub id loads through datasets (here a local stand-in for the download).
    calls = []

    def fake_load_dataset(name, split=None):
        calls.append((name, split))
        return datasets.load_from_disk(str(saved))

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    hub = read_dataset("hf://datasets/lmms-lab/LLaVA-OneVision-Data", split="train")
    assert calls == [("lmms-lab/LLaVA-OneVision-Data", "train")]
    assert [s.key for s in hub.samples] == [s.key for s in ds.samples]


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(DataFormatError, match="no such file"):
        read_dataset(tmp_path / "nope.json")


# -- task presets --------------------------------------------------------------------------------

def test_task_preset_calls_the_tasks_module(tmp_path, monkeypatch):
    from mmselect.data import tasks

    seen = []

    def assign_task(record, image_paths, preset):
        seen.append((record["id"], list(image_paths), preset))
        return f"{preset}:{record['id']}"

    monkeypatch.setattr(tasks, "assign_task", assign_task, raising=False)
    records = [{"id": "a", "image": "coco/0.png", "conversations": CONV},
               {"id": "b", "source": "given", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}]
    path = tmp_path / "d.json"
    path.write_text(json.dumps(records))
    ds = read_dataset(path, task_preset="llava-665k", task_field="source", check_images=False)
    assert [s.task for s in ds.samples] == ["llava-665k:a", "given"]
    assert seen == [("a", ["coco/0.png"], "llava-665k")]
    assert [s.task for s in read_dataset(path, check_images=False).samples] == ["coco", "text"]  # no preset: as before
