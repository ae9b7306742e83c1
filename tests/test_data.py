import json

import pytest

from mmselect.budget import Budget
from mmselect.data import read_dataset, sample_key
from mmselect.errors import BudgetError, DataFormatError, RecordError


def _write(path, records, jsonl=False, indent=None):
    if jsonl:
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        path.write_text(json.dumps(records, indent=indent))
    return path


def _conv(q="<image>\nwhat is it?", a="a square"):
    return [{"from": "human", "value": q}, {"from": "gpt", "value": a}]


def test_llava_json_image_absent_string_list(tmp_path, image_dir):
    records = [
        {"id": "a", "image": "coco/0.png", "conversations": _conv()},
        {"id": "b", "conversations": _conv("hello?", "hi")},
        {"id": "c", "image": ["coco/1.png", "gqa/2.png"], "conversations": _conv("<image>\n<image>\ncompare", "x")},
    ]
    ds = read_dataset(_write(tmp_path / "d.json", records, indent=2), image_root=image_dir)
    assert [s.images for s in ds.samples] == [["coco/0.png"], [], ["coco/1.png", "gqa/2.png"]]
    assert [s.task for s in ds.samples] == ["coco", "text", "coco"]
    assert [s.n_images for s in ds.samples] == [1, 0, 2]
    assert not ds.rejected
    # The exact source text of each record is kept.
    assert json.loads(ds.raw(2)) == records[2]
    assert ds.raw(0).startswith("{") and ds.raw(0).endswith("}")


def test_jsonl_and_sharegpt_layouts(tmp_path, image_dir):
    records = [
        {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "<image>what?"},
                      {"role": "assistant", "content": "red"}, {"role": "user", "content": "sure?"},
                      {"role": "assistant", "content": "yes"}], "images": ["gqa/0.png"]},
        {"conversations": _conv("2+2?", "4")},
    ]
    ds = read_dataset(_write(tmp_path / "d.jsonl", records, jsonl=True), image_root=image_dir)
    assert ds.container == "jsonl"
    first = ds.samples[0]
    assert [t.role for t in first.turns] == ["system", "user", "assistant", "user", "assistant"]
    assert first.rounds == 2 and first.task == "gqa"
    assert ds.samples[1].rounds == 1 and ds.samples[1].task == "text"


def test_keys_are_unique_with_duplicate_ids_and_stable(tmp_path):
    records = [{"id": "same", "conversations": _conv("q", "a")}] * 2 + [{"id": "same", "conversations": _conv("q", "b")}]
    path = _write(tmp_path / "d.json", records)
    keys = [s.key for s in read_dataset(path).samples]
    assert len(set(keys)) == 3
    # Same content at another position gets another key; same position and content, the same key.
    assert keys[0].split("-")[1] == keys[1].split("-")[1] != keys[2].split("-")[1]
    assert keys == [s.key for s in read_dataset(_write(tmp_path / "d2.json", records, indent=4)).samples]
    assert keys[0] == sample_key(0, records[0])


def test_task_field_and_directory_inference(tmp_path, image_dir):
    records = [
        {"image": "coco/0.png", "source": "vqav2", "conversations": _conv()},
        {"image": "coco/1.png", "conversations": _conv()},
    ]
    path = _write(tmp_path / "d.json", records)
    assert [s.task for s in read_dataset(path, image_root=image_dir, task_field="source").samples] == ["vqav2", "coco"]
    assert [s.task for s in read_dataset(path, image_root=image_dir).samples] == ["coco", "coco"]


def test_malformed_json_names_file_line_and_column(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[\n {"conversations": []},\n {"a": 1}\n {"b": 2}\n]\n')
    with pytest.raises(DataFormatError, match=r"bad\.json:4:2: invalid JSON: expected ',' or '\]'"):
        read_dataset(path)
    path.write_text('[\n {"a": 1,}\n]')
    with pytest.raises(DataFormatError, match=r"bad\.json:2:10"):
        read_dataset(path)
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_text('{"a": 1}\n{"a": }\n')
    with pytest.raises(DataFormatError, match=r"bad\.jsonl:2:7"):
        read_dataset(jsonl)


def test_bad_records_rejected_with_reasons(tmp_path, image_dir):
    (image_dir / "coco" / "corrupt.png").write_bytes(b"not an image at all")
    records = [
        {"id": "ok", "image": "coco/0.png", "conversations": _conv()},
        {"id": "missing", "image": "coco/nope.png", "conversations": _conv()},
        {"id": "escape", "image": "../../etc/passwd", "conversations": _conv()},
        {"id": "corrupt", "image": "coco/corrupt.png", "conversations": _conv()},
        {"id": "empty", "conversations": []},
        {"id": "role", "conversations": [{"from": "human", "value": "q"}, {"from": "robot", "value": "a"}]},
        {"id": "noanswer", "conversations": [{"from": "human", "value": "q"}]},
        {"id": "placeholders", "image": "coco/0.png", "conversations": _conv("<image><image> two?", "no")},
        "not an object",
    ]
    ds = read_dataset(_write(tmp_path / "d.json", records), image_root=image_dir)
    reasons = {r.id: r.reason for r in ds.rejected}
    assert [s.id for s in ds.samples] == ["ok"]
    assert "image not found" in reasons["missing"]
    assert "escapes the image root" in reasons["escape"]
    assert "unreadable image" in reasons["corrupt"]
    assert reasons["empty"] == "empty conversation"
    assert "unknown role 'robot'" in reasons["role"]
    assert "no answer" in reasons["noanswer"]
    assert "placeholders" in reasons["placeholders"]
    assert len(ds.rejected) == 8
    # Every record is accounted for exactly once.
    positions = sorted([s.position for s in ds.samples] + [r.position for r in ds.rejected])
    assert positions == list(range(len(records)))
    with pytest.raises(RecordError, match="record 0000001-.*image not found"):
        read_dataset(tmp_path / "d.json", image_root=image_dir, strict=True)


@pytest.mark.parametrize(
    "text,n,expected",
    [("0.15", 100, 15), ("15%", 200, 30), ("5000", 10_000, 5000), (0.5, 7, 3), (3, 7, 3), ("1.0", 9, 9)],
)
def test_budget_parsing(text, n, expected):
    assert Budget.parse(text).resolve(n) == expected


def test_budget_errors():
    with pytest.raises(BudgetError, match="exceeds"):
        Budget.parse(11).resolve(10)
    with pytest.raises(BudgetError, match="invalid budget"):
        Budget.parse("lots")
    with pytest.raises(BudgetError):
        Budget.parse("1.5")


def _turns(*pairs, role_field="from", text_field="value"):
    return [{role_field: role, text_field: text} for role, text in pairs]


@pytest.mark.parametrize("record", [
    {"conversations": _turns(("human", "q"), ("gpt", "a"))},
    {"conversations": _turns(("human", "q"), ("gpt", "a"), ("human", "q2"))},  # ends on a question
    {"conversations": _turns(("system", ""), ("human", "q"), ("gpt", "a"))},  # blank system text is allowed
    {"conversations": _turns(("human", "q"), ("system", "s"), ("gpt", "a"))},
    {"conversations": _turns(("human", "q"), ("gpt", " \n"))},
    {"conversations": _turns(("human", ""), ("gpt", "a"))},
    {"conversations": _turns(("human", "q"), ("human", "a"))},
    {"conversations": _turns(("gpt", "q"), ("human", "a"))},
    {"conversations": _turns(("human", "q"), ("robot", "a"))},
    {"conversations": _turns(("human", "q"), (["gpt"], "a"))},  # an unhashable role
    {"conversations": _turns(("human", "q"), ("gpt", 3))},
    {"conversations": _turns(("human", "q"))},
    {"conversations": [{"from": "human"}, {"from": "gpt", "value": "a"}]},
    {"conversations": ["q", "a"]},
    {"conversations": []},
    {"conversations": "q"},
    {"messages": _turns(("user", "q"), ("assistant", "a"), role_field="role", text_field="content")},
    {"messages": _turns(("user", "q"), ("model", "a"), ("user", "b"), ("assistant", "c"), role_field="role", text_field="content")},
    {"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "q"}]},
                  {"role": "assistant", "content": "a"}]},
    {"query": "q", "response": "a", "history": [["q0", "a0"]]},
], ids=lambda record: str(record)[:60])
def test_reader_fast_texts_agree_with_the_general_path(record):
    """The reader's shortcut for usual conversations returns the joined texts, or raises the error,
    the general path does on every layout."""
    from mmselect.data.records import conversation_columns, conversation_text

    def outcome(function):
        try:
            return function(record, "k")
        except RecordError as err:
            return ("error", err.reason)

    general = outcome(conversation_columns)
    assert outcome(conversation_text) == (general if general[0] == "error" else "".join(general[1]))


@pytest.mark.parametrize("image", ["coco/train2017/x.jpg", "coco/x.jpg", "./coco/x.jpg", "coco//x.jpg", "coco/./x.jpg",
                                   "coco/.hidden/x.jpg", "coco/../x.jpg", "coco/", "coco/.", "x.jpg", "/abs/x.jpg",
                                   "./x.jpg", "a\\b\\c.jpg", "//host/share/x.jpg", ".coco/x.jpg"])
def test_reader_task_shortcut_agrees_with_infer_task(tmp_path, image):
    from mmselect.data.dataset import Dataset
    from mmselect.data.images import ImageResolver
    from mmselect.data.record_checks import RecordChecker
    from mmselect.data.tasks import infer_task

    checker = RecordChecker(Dataset(tmp_path / "d.json", "json", None, ImageResolver(None)), task_field=None,
                            task_preset=None, check_images=False, verify_images=False, strict=False,
                            max_pixels=None, workers=1, progress=False)
    record = {"image": image, "conversations": _conv()}
    assert checker._task(record, [image]) == infer_task(record, [image])
