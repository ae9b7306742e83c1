"""Task presets: the image directory, and LLaVA-1.5's ten source datasets recovered from the records."""

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from mmselect.data.records import image_list
from mmselect.data.tasks import LLAVA_665K_RULES, TASK_PRESETS, assign_task, infer_task
from mmselect.errors import ConfigError
from mmselect.models.registry import PRESETS

FIXTURE = Path(__file__).parent / "fixtures" / "llava665k_sources"


@pytest.fixture(scope="module")
def records():
    return json.loads((FIXTURE / "data.json").read_text())


@pytest.fixture(scope="module")
def expected():
    return json.loads((FIXTURE / "expected.json").read_text())


def _tasks(records, preset):
    return [assign_task(r, image_list(r, r["id"]), preset) for r in records]


def test_every_source_of_the_mix_is_recovered(records, expected):
    assert _tasks(records, "llava-665k") == [expected[r["id"]] for r in records]
    assert set(_tasks(records, "llava-665k")) == set(LLAVA_665K_RULES)  # all ten sources occur


def test_image_directory_preset_merges_the_coco_sources(records):
    counts = Counter(_tasks(records, "image-dir"))
    # LLaVA-Instruct, VQAv2, OK-VQA, A-OKVQA and RefCOCO share coco/: six tasks instead of ten.
    assert counts == {"coco": 12, "vg": 2, "gqa": 2, "ocr_vqa": 1, "textvqa": 2, "text": 2}


def test_labels_do_not_depend_on_order_or_subset(records, expected):
    shuffled = records[:]
    random.Random(3).shuffle(shuffled)
    subset = shuffled[::3]
    assert _tasks(subset, "llava-665k") == [expected[r["id"]] for r in subset]


def test_rule_details():
    short = "\nAnswer the question using a single word or phrase."
    coco = ["coco/train2017/1.jpg"]

    def conv(*questions):
        turns = []
        for q in questions:
            turns += [{"from": "human", "value": q}, {"from": "gpt", "value": "x"}]
        return {"conversations": turns}

    # VQAv2 records hold >= 3 questions of one image; fewer is OK-VQA.
    assert assign_task(conv("<image>\nA?" + short, "B?" + short, "C?" + short), coco, "llava-665k") == "vqav2"
    assert assign_task(conv("<image>\nA?" + short, "B?" + short), coco, "llava-665k") == "okvqa"
    # The prompt decides, not the directory alone: the same prompt on gqa/ images is GQA.
    assert assign_task(conv("<image>\nA?" + short), ["gqa/images/1.jpg"], "llava-665k") == "gqa"
    # A longer image root before the mix's directories; the sharegpt layout.
    assert assign_task(conv("<image>\nA?"), ["data/llava/coco/train2017/1.jpg"], "llava-665k") == "llava_instruct"
    messages = {"messages": [{"role": "user", "content": "<image>Please provide a short description for this region: "
                              "[0.1, 0.2, 0.3, 0.4]"}, {"role": "assistant", "content": "A dog."}]}
    assert assign_task(messages, ["vg/VG_100K/1.jpg"], "llava-665k") == "vg"
    assert assign_task(messages, coco, "llava-665k") == "refcoco"
    # Directories outside the mix keep their image-directory label.
    assert assign_task(conv("<image>\nA?"), ["digits/0001.png"], "llava-665k") == "digits"
    assert assign_task(conv("A?"), [], "llava-665k") == "sharegpt"


def test_task_field_wins_and_unknown_presets_are_refused():
    record = {"source": "mine", "conversations": []}
    assert infer_task(record, ["coco/x.jpg"], "source", "llava-665k") == "mine"
    assert infer_task(record, ["coco/x.jpg"]) == "coco"
    with pytest.raises(ConfigError, match="unknown task preset 'llava665k'.*llava-665k"):
        assign_task(record, [], "llava665k")
    assert set(TASK_PRESETS) == {"image-dir", "llava-665k"}


def test_mini_example_counts(mini_data):
    data = json.loads(Path(mini_data).read_text())
    counts = Counter(assign_task(r, image_list(r, "k"), "llava-665k") for r in data if isinstance(r, dict))
    # No LLaVA-665k directories here: image directories unchanged, text-only records are ShareGPT-like.
    assert counts == {"digits": 64, "shapes": 57, "charts": 48, "ocr": 48, "photos": 31, "sharegpt": 46}


def test_llava_presets_default_to_the_source_tasks():
    assert PRESETS["llava-1.5-7b"].task_preset == PRESETS["llava-1.5-13b"].task_preset == "llava-665k"
    assert PRESETS["qwen2-vl-7b"].task_preset is None
