"""Hostile or unusual input files: each test builds the input and checks the reader's answer."""

import json
import os
import struct
import zlib

import pytest
from PIL import Image

from mmselect.data import read_dataset, sample_key
from mmselect.data import keys as keys_module
from mmselect.data import record_checks, textscan
from mmselect.errors import DataFormatError, RecordError


def _conv(q="<image>\nwhat is it?", a="a square"):
    return [{"from": "human", "value": q}, {"from": "gpt", "value": a}]


def _png_header_only(path, width, height):
    """A PNG whose header declares ``width`` x ``height`` pixels (no pixel data: tiny on disk)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))
    return path


def test_jsonl_line_separators_inside_strings_are_text(tmp_path):
    records = [
        {"id": "a", "conversations": _conv("one\u2028two", "three\u2029four")},
        {"id": "b", "conversations": _conv("next\u0085line", "ok")},
    ]
    path = tmp_path / "d.jsonl"
    path.write_bytes("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8"))
    ds = read_dataset(path)
    assert [s.id for s in ds.samples] == ["a", "b"] and not ds.rejected
    assert [s.key for s in ds.samples] == [sample_key(i, r) for i, r in enumerate(records)]
    assert ds.samples[0].turns[0].text == "one\u2028two"
    assert json.loads(ds.raw(1)) == records[1]


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_utf8_bom_is_accepted(tmp_path, suffix):
    records = [{"id": "a", "conversations": _conv("hi", "there")}, {"id": "b", "conversations": _conv("x", "y")}]
    text = json.dumps(records) if suffix == ".json" else "".join(json.dumps(r) + "\n" for r in records)
    path = tmp_path / f"d{suffix}"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    ds = read_dataset(path)
    assert [s.key for s in ds.samples] == [sample_key(i, r) for i, r in enumerate(records)]
    assert json.loads(ds.raw(0)) == records[0]  # the span starts after the BOM


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_deep_nesting_is_a_clear_error_naming_the_file(tmp_path, suffix):
    deep = "[" * 100_000 + "]" * 100_000
    record = '{"conversations": [], "x": ' + deep + "}"
    path = tmp_path / f"deep{suffix}"
    path.write_text(f"[{record}]" if suffix == ".json" else '{"a": 1}\n' + record + "\n")
    with pytest.raises(DataFormatError, match=rf"deep\{suffix}:\d+:\d+: .*nested too deeply"):
        read_dataset(path)


def test_identical_records_get_different_keys(tmp_path):
    record = {"id": "same", "conversations": _conv("q", "a")}
    path = tmp_path / "d.jsonl"
    path.write_text((json.dumps(record) + "\n") * 3)
    keys = [s.key for s in read_dataset(path).samples]
    assert len(set(keys)) == 3
    assert {k.split("-")[1] for k in keys} == {sample_key(0, record).split("-")[1]}


def test_symlink_out_of_the_image_root_is_rejected(tmp_path, image_dir):
    outside = tmp_path / "secret.png"
    Image.new("RGB", (4, 4)).save(outside)
    (image_dir / "coco" / "link.png").symlink_to(outside)
    (image_dir / "coco" / "inside.png").symlink_to(image_dir / "gqa" / "0.png")  # stays inside: fine
    records = [
        {"id": "link", "image": "coco/link.png", "conversations": _conv()},
        {"id": "inside", "image": "coco/inside.png", "conversations": _conv()},
    ]
    path = tmp_path / "d.json"
    path.write_text(json.dumps(records))
    ds = read_dataset(path, image_root=image_dir)
    assert [s.id for s in ds.samples] == ["inside"]
    assert [r.id for r in ds.rejected] == ["link"]
    assert "outside the image root" in ds.rejected[0].reason and "coco/link.png" in ds.rejected[0].reason


def test_pixel_limit_from_the_header(tmp_path, image_dir, monkeypatch):
    _png_header_only(image_dir / "coco" / "huge.png", 9000, 9000)  # 81 MP, under PIL's own limit
    assert (image_dir / "coco" / "huge.png").stat().st_size < 200
    records = [{"id": "huge", "image": "coco/huge.png", "conversations": _conv()},
               {"id": "small", "image": "coco/0.png", "conversations": _conv()}]
    path = tmp_path / "d.json"
    path.write_text(json.dumps(records))
    ds = read_dataset(path, image_root=image_dir)
    assert [s.id for s in ds.samples] == ["small"]
    assert ds.rejected[0].reason.startswith("image coco/huge.png is 9000x9000 = 81,000,000 pixels, above the limit of 40,000,000")
    # The limit is configurable: an argument, or the environment.
    assert [s.id for s in read_dataset(path, image_root=image_dir, max_image_pixels=100_000_000).samples] == ["huge", "small"]
    monkeypatch.setenv("MMSELECT_MAX_IMAGE_PIXELS", "1000")  # coco/0.png is 40x36 = 1,440 pixels
    assert [r.id for r in read_dataset(path, image_root=image_dir).rejected] == ["huge", "small"]


def test_reasons_name_images_relative_to_the_root(tmp_path, image_dir):
    (image_dir / "coco" / "corrupt.png").write_bytes(b"not an image")
    records = [{"id": "corrupt", "image": "coco/corrupt.png", "conversations": _conv()}]
    path = tmp_path / "d.json"
    path.write_text(json.dumps(records))
    reason = read_dataset(path, image_root=image_dir).rejected[0].reason
    assert reason.startswith("unreadable image coco/corrupt.png: UnidentifiedImageError")
    assert str(image_dir) not in reason
    # The extraction stage names it the same way.
    from mmselect.features.encode import EncodeError, load_image

    with pytest.raises(EncodeError) as caught:
        load_image(str(image_dir.resolve() / "coco" / "corrupt.png"))
    assert "coco/corrupt.png" in str(caught.value) and str(image_dir.resolve()) not in str(caught.value)


def test_task_field_that_no_record_has_is_an_error(tmp_path):
    records = [{"id": "a", "source": "x", "conversations": _conv("q", "a")}]
    path = tmp_path / "d.json"
    path.write_text(json.dumps(records))
    with pytest.raises(DataFormatError, match=r"no record has a value for --task-field 'sorce'.*conversations, id, source"):
        read_dataset(path, task_field="sorce")
    assert [s.task for s in read_dataset(path, task_field="source").samples] == ["x"]


def test_strict_verifies_image_files_at_read_time(tmp_path, image_dir):
    whole = (image_dir / "coco" / "0.png").read_bytes()
    (image_dir / "coco" / "truncated.png").write_bytes(whole[: len(whole) // 2])
    records = [{"id": "ok", "image": "coco/0.png", "conversations": _conv()},
               {"id": "cut", "image": "coco/truncated.png", "conversations": _conv()}]
    path = tmp_path / "d.json"
    path.write_text(json.dumps(records))
    assert len(read_dataset(path, image_root=image_dir).samples) == 2  # the header alone reads fine
    with pytest.raises(RecordError, match=r"record 0000001-.*unreadable image coco/truncated\.png"):
        read_dataset(path, image_root=image_dir, strict=True)


def test_records_are_read_back_from_the_file_by_offset(tmp_path):
    """Memory holds spans, not records: rewriting a record in place (same length) shows through."""
    records = [{"id": "a", "conversations": _conv("hello", "world")}, {"id": "b", "conversations": _conv("q", "a")}]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    ds = read_dataset(path)
    assert ds.samples[0].turns[1].text == "world"
    path.write_text(path.read_text().replace("world", "WORLD"))
    assert ds.samples[0].turns[1].text == "WORLD"
    assert ds.samples[1].record == records[1]


@pytest.mark.parametrize("fast", [True, False])
def test_keys_do_not_depend_on_the_json_library(tmp_path, monkeypatch, fast):
    if not fast:
        monkeypatch.setattr(keys_module, "orjson", None)
    elif keys_module.orjson is None:
        pytest.skip("orjson is not installed")
    lines = [
        '{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}], "score": 1e-05}',
        '{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}], "big": 123456789012345678901234567890}',
        '{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}], "w": NaN, "v": -0.0, "u": 1e16}',
        '{"conversations": [{"from": "human", "value": "3:1.5"}, {"from": "gpt", "value": "\\u00e9\\u2028\\u0001"}], "n": [1, -2, 0]}',
        '{"b": 1, "a": {"d": [true, false, null], "c": "x"}, "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}',
    ]
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(lines) + "\n")
    ds = read_dataset(path)
    assert not ds.rejected
    assert [s.key for s in ds.samples] == [sample_key(i, json.loads(line)) for i, line in enumerate(lines)]
    assert ds.samples[1].record["big"] == 123456789012345678901234567890
    json_path = tmp_path / "d.json"
    json_path.write_text("[" + ",".join(lines) + "]")
    assert [s.key for s in read_dataset(json_path).samples] == [s.key for s in ds.samples]


def test_json_records_split_across_read_chunks(tmp_path, monkeypatch):
    """The streaming scan cuts the file into chunks; records and numbers cut in two still read whole."""
    monkeypatch.setattr(textscan, "CHUNK_BYTES", 7)
    records = [{"id": i, "n": 123456789 * i, "conversations": _conv(f"q{i} \u00e9\u00e8 \U0001F600", "a")} for i in range(30)]
    path = tmp_path / "d.json"
    path.write_text(json.dumps(records, indent=1, ensure_ascii=False), encoding="utf-8")
    ds = read_dataset(path)
    assert [s.key for s in ds.samples] == [sample_key(i, r) for i, r in enumerate(records)]
    assert [json.loads(ds.raw(i)) for i in range(30)] == records
    path.write_text('[\n {"a": 1},\n {"a": 2}\n {"b": 3}\n]\n')
    with pytest.raises(DataFormatError, match=r"d\.json:4:2: invalid JSON: expected ',' or '\]'"):
        read_dataset(path)
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("".join(json.dumps(r, ensure_ascii=False) + "\r\n" for r in records), encoding="utf-8")
    assert [s.key for s in read_dataset(jsonl).samples] == [sample_key(i, r) for i, r in enumerate(records)]


@pytest.mark.parametrize("chunk", [7, 64, 1 << 24])
def test_json_errors_name_line_and_column_after_many_chunks(tmp_path, monkeypatch, chunk):
    """Line and column are counted only when an error is reported; they must not depend on where
    the chunks fall, on non-ASCII text before the error, or on a BOM."""
    monkeypatch.setattr(textscan, "CHUNK_BYTES", chunk)
    good = '  {"id": "\u00e9\U0001F600", "conversations": []},\n'
    # line 1 "[", lines 2..41 good records, line 42 '  {"a": "\u00e9\U0001F600"} {"b": 2}': the second "{"
    # is the 15th character (17th byte)
    text = "[\n" + good * 40 + '  {"a": "\u00e9\U0001F600"} {"b": 2}\n]\n'
    path = tmp_path / "e.json"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    with pytest.raises(DataFormatError, match=r"e\.json:42:15: invalid JSON: expected ',' or '\]' after a record"):
        read_dataset(path)
    path.write_bytes(b"\xef\xbb\xbf" + '[{"a": 1} {"b": 2}]'.encode())  # on the BOM's line: column 11
    with pytest.raises(DataFormatError, match=r"e\.json:1:11: invalid JSON: expected ',' or '\]' after a record"):
        read_dataset(path)
    path.write_bytes(b'[{"a": 1},\n {"b": 2}\n')  # the file ends inside the list
    with pytest.raises(DataFormatError, match=r"e\.json:3:1: invalid JSON: unexpected end of file"):
        read_dataset(path)
    path.write_bytes(b'[{"a": 1},\n {"b": 2, "c": \n  tru}]')
    with pytest.raises(DataFormatError, match=r"e\.json:3:3: invalid JSON: Expecting value"):
        read_dataset(path)


@pytest.mark.parametrize("chunk", [5, 1 << 24])
def test_json_that_is_not_utf8_names_the_line_and_byte(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(textscan, "CHUNK_BYTES", chunk)
    path = tmp_path / "latin.json"
    path.write_bytes(b'[\n {"id": "\xc3\xa9"},\n {"id": "caf\xe9"}\n]')  # line 3: a Latin-1 byte 12 bytes into the line
    with pytest.raises(DataFormatError, match=r"latin\.json:3: not UTF-8 text \(invalid continuation byte at byte 12 of the line\)"):
        read_dataset(path)


def test_by_key_and_samples_are_views(tmp_path):
    records = [{"id": str(i), "conversations": _conv("q", str(i))} for i in range(5)] + [{"id": "bad", "conversations": []}]
    path = tmp_path / "d.json"
    path.write_text(json.dumps(records))
    ds = read_dataset(path)
    keys = [s.key for s in ds.samples]
    index = ds.by_key()
    assert len(index) == 5 and list(index) == keys
    assert index[keys[3]].id == "3" and keys[3] in index
    assert ds.rejected[0].key not in index and "0000001-0000000000" not in index and "junk" not in index
    assert [s.key for s in ds.samples[1:3]] == keys[1:3] and ds.samples[-1].key == keys[-1]
    assert ds.n_records == 6


def test_image_checks_run_on_many_threads(tmp_path, image_dir, monkeypatch):
    import threading

    seen = set()
    original = record_checks.check_image

    def spy(*args, **kwargs):
        seen.add(threading.get_ident())
        return original(*args, **kwargs)

    monkeypatch.setattr(record_checks, "check_image", spy)
    records = [{"id": str(i), "image": f"coco/{i % 3}.png", "conversations": _conv()} for i in range(64)]
    path = tmp_path / "d.json"
    path.write_text(json.dumps(records))
    ds = read_dataset(path, image_root=image_dir, image_workers=4)
    assert len(ds.samples) == 64
    assert threading.get_ident() not in seen and 1 <= len(seen) <= 4
    assert os.cpu_count()  # the default pool size derives from it


def test_samples_travel_to_worker_processes_without_the_dataset(tmp_path, image_dir):
    import pickle

    records = [{"id": str(i), "image": f"coco/{i % 3}.png", "conversations": _conv()} for i in range(3000)]
    path = tmp_path / "d.json"
    path.write_text(json.dumps(records))
    ds = read_dataset(path, image_root=image_dir)
    sample = ds.samples[2999]
    payload = pickle.dumps(sample)
    assert len(payload) < 2000  # the sample, its file and image root: not the dataset's columns
    copy = pickle.loads(payload)
    assert (copy.key, copy.position, copy.task, copy.record, copy.turns, copy.image_paths) == (
        sample.key, 2999, "coco", records[2999], sample.turns, [str(image_dir.resolve() / "coco" / "2.png")])
