"""Sample keys are pinned: caches and outputs keyed by them must stay valid across reader changes.

The hashes below were computed from the key lists produced by the first released reader; a change
to how records are parsed, canonicalised or hashed fails here before it invalidates anyone's cache.
"""

import hashlib
import json

import pytest

from mmselect.data import read_dataset, sample_key

MINI_KEYS_SHA256 = {
    "data.json": (294, "f5e6dc9306cbfb7516ceb04936dd8caa9d14f46d49ba5f588b21c5a8b6cc5384"),
    "bad_records.json": (9, "e7c9c361b090473b419fe4f4074679c96d7e316a8e7abe3c9bca2a716427892f"),
}

PINNED_RECORDS = [
    (7, {"id": 1, "image": "coco/a.jpg", "conversations": [{"from": "human", "value": "<image>\nQué es?"}, {"from": "gpt", "value": "猫 1.50"}]},
     "0000007-fec9b4dfce"),
    (1007, {"conversations": [{"value": "x", "from": "human"}, {"from": "gpt", "value": "y\u2028z"}], "score": 0.1, "flag": True, "none": None},
     "0001007-6ed479b334"),
    (2007, {"messages": [{"role": "user", "content": "e\u0301"}], "images": []}, "0002007-c38b3096eb"),
]


def _all_keys(dataset):
    return sorted([s.key for s in dataset.samples] + [r.key for r in dataset.rejected])


def _digest(keys):
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()


@pytest.mark.parametrize("name", sorted(MINI_KEYS_SHA256))
def test_mini_keys_unchanged(name, mini_data, mini_images):
    keys = _all_keys(read_dataset(mini_data.parent / name, image_root=mini_images))
    assert (len(keys), _digest(keys)) == MINI_KEYS_SHA256[name]
    assert len(set(keys)) == len(keys)


def test_mini_keys_same_from_jsonl(tmp_path, mini_data, mini_images):
    records = json.loads(mini_data.read_text())
    jsonl = tmp_path / "data.jsonl"
    jsonl.write_text("".join(json.dumps(r, ensure_ascii=True) + "\n" for r in records))
    keys = _all_keys(read_dataset(jsonl, image_root=mini_images))
    assert (len(keys), _digest(keys)) == MINI_KEYS_SHA256["data.json"]


@pytest.mark.parametrize("position,record,key", PINNED_RECORDS)
def test_key_of_record_pinned(position, record, key):
    assert sample_key(position, record) == key
