"""The select stage around a method: the duplicate guard, several budgets from one fit, trainer
formats, and the task preset a method asks of the model preset."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from mmselect import pipeline
from mmselect.data.readers import read_dataset
from mmselect.errors import BudgetError
from mmselect.features.store import FeatureSet
from mmselect.methods import get_method

# 10 distinct records, then copies of records 1, 4 and 4 again (positions 10, 11, 12)
ANSWERS = [f"answer number {i}" for i in range(10)]


def _record(i: int) -> dict:
    return {"id": f"r{i}", "conversations": [{"from": "human", "value": f"question {i}?"}, {"from": "gpt", "value": ANSWERS[i]}]}


@pytest.fixture
def dataset_with_copies(tmp_path):
    records = [_record(i) for i in range(10)] + [_record(1), _record(4), _record(4)]
    path = tmp_path / "data.json"
    path.write_text(json.dumps(records))
    dataset = read_dataset(path)
    # answer NLL: the copies carry their original's value, so a score-based method ranks them together
    nll = np.array([0.5, 0.1, 0.9, 0.8, 0.2, 0.7, 0.6, 0.3, 0.4, 1.0, 0.1, 0.2, 0.2])
    features = FeatureSet.from_arrays(
        keys=[s.key for s in dataset.samples], tasks=[s.task for s in dataset.samples],
        columns={"position": np.array([s.position for s in dataset.samples]), "answer_nll": nll},
    )
    return path, dataset, features


def _selected_positions(out):
    table = pq.read_table(out / "selection.parquet").to_pydict()
    return sorted(p for p, chosen in zip(table["position"], table["selected"]) if chosen), table


def test_exact_guard_sets_copies_aside_before_the_method(tmp_path, dataset_with_copies):
    path, dataset, features = dataset_with_copies
    out = tmp_path / "out"
    pipeline.select(features, method="perplexity", params={"band": "low"}, budget=4, out=out, dataset=dataset)
    positions, table = _selected_positions(out)
    # lowest NLL among the 10 distinct records: 1 (0.1), 4 (0.2), 7 (0.3), 8 (0.4); no copy of them
    assert positions == [1, 4, 7, 8]
    keys = table["key"]
    assert table["duplicate_of"][10:] == [keys[1], keys[4], keys[4]]
    assert table["duplicate_of"][:10] == [None] * 10
    assert all(np.isnan(table["score"][10:]))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"input_records": 13, "selected": 4, "not_selected": 9, "rejected": 0, "duplicates": 3}
    assert manifest["dedup"]["mode"] == "exact" and manifest["dedup"]["exact"] == 3
    assert [r["id"] for r in json.loads((out / "subset.json").read_text())] == ["r1", "r4", "r7", "r8"]


def test_dedup_none_is_the_method_alone(tmp_path, dataset_with_copies):
    path, dataset, features = dataset_with_copies
    out = tmp_path / "out"
    pipeline.select(features, method="perplexity", params={"band": "low"}, budget=4, out=out, dataset=dataset, dedup="none")
    positions, table = _selected_positions(out)
    direct = get_method("perplexity", band="low").select(features, 4)
    assert positions == sorted(np.flatnonzero(direct.selected).tolist()) == [1, 4, 10, 11]  # copies kept together
    assert "duplicate_of" not in table


def test_select_options_object_equals_the_keywords_and_keywords_take_precedence(tmp_path, dataset_with_copies):
    from mmselect import SelectOptions

    path, dataset, features = dataset_with_copies
    common = dict(method="perplexity", params={"band": "low"}, budget=4, dataset=dataset)
    pipeline.select(features, out=tmp_path / "options", options=SelectOptions(dedup="none", export_format="sharegpt"), **common)
    without_guard, _ = _selected_positions(tmp_path / "options")
    assert without_guard == [1, 4, 10, 11]  # as with dedup="none" given as a keyword (the copies kept together)
    assert (tmp_path / "options" / "subset.sharegpt.json").is_file()
    # the keyword wins over the options object: the exact guard is back, the copies set aside
    pipeline.select(features, out=tmp_path / "keyword", options=SelectOptions(dedup="none"), dedup="exact", **common)
    assert _selected_positions(tmp_path / "keyword")[0] == [1, 4, 7, 8]
    assert json.loads((tmp_path / "keyword" / "manifest.json").read_text())["dedup"]["mode"] == "exact"
    with pytest.raises(TypeError, match="unknown selection option.*'dedupe'"):
        SelectOptions().replace(dedupe="near")


def test_a_budget_the_guard_leaves_too_few_records_for_is_explained(tmp_path, dataset_with_copies):
    path, dataset, features = dataset_with_copies
    with pytest.raises(BudgetError, match="duplicate guard.*3 duplicate.*leaving 10"):
        pipeline.select(features, method="random", budget=12, out=tmp_path / "out", dataset=dataset)


def test_several_budgets_from_one_fit_equal_separate_selections(tmp_path, dataset_with_copies):
    path, dataset, features = dataset_with_copies
    results = pipeline.select(features, method="perplexity", budget="0.2,0.5", out=tmp_path / "many", dataset=dataset)
    assert [r.n_selected for r in results] == [2, 5]
    for budget in ("0.2", "0.5"):
        alone = tmp_path / f"alone-{budget}"
        pipeline.select(features, method="perplexity", budget=budget, out=alone, dataset=dataset)
        assert _selected_positions(tmp_path / "many" / f"budget-{budget}")[0] == _selected_positions(alone)[0]
        assert json.loads((tmp_path / "many" / f"budget-{budget}" / "manifest.json").read_text())["budget"] == budget
    with pytest.raises(BudgetError, match="twice"):
        pipeline.select(features, method="random", budget="0.2,0.2", out=tmp_path / "x", dataset=dataset)


def test_trainer_format_written_beside_the_subset(tmp_path, dataset_with_copies):
    path, dataset, features = dataset_with_copies
    out = tmp_path / "out"
    pipeline.select(features, method="random", budget=3, out=out, dataset=dataset, export_format="sharegpt")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["outputs"]["trainer_subset"] == ["subset.sharegpt.json", "dataset_info.json"]
    exported = json.loads((out / "subset.sharegpt.json").read_text())
    subset = json.loads((out / "subset.json").read_text())
    assert [m["messages"][1]["content"] for m in exported] == [r["conversations"][1]["value"] for r in subset]
    back = read_dataset(out / "subset.sharegpt.json")
    assert len(back.samples) == 3 and not back.rejected


def test_methods_that_split_by_task_take_the_model_presets_task_preset():
    datatailor, random_method = get_method("datatailor"), get_method("random")
    assert pipeline.default_task_preset(None, None, [datatailor], "llava-1.5-7b") == "llava-665k"
    assert pipeline.default_task_preset(None, None, [random_method], "llava-1.5-7b") is None
    assert pipeline.default_task_preset("source", None, [datatailor], "llava-1.5-7b") is None  # the user's field wins
    assert pipeline.default_task_preset(None, "image-dir", [datatailor], "llava-1.5-7b") == "image-dir"
    assert pipeline.default_task_preset(None, None, [datatailor], "qwen2-vl-2b") is None


def test_onevision_style_parquet_to_a_llama_factory_subset_in_one_run(tmp_path, mini_data, mini_images):
    """The README's promise: parquet with embedded images in, a LLaMA-Factory-ready subset out."""
    import io

    import pyarrow as pa
    from PIL import Image

    records = [r for r in json.loads(mini_data.read_text()) if isinstance(r.get("image"), str)][:12]
    rows = [{"id": r["id"], "image": {"bytes": (mini_images / r["image"]).read_bytes(), "path": None},
             "conversations": r["conversations"]} for r in records]
    source = tmp_path / "onevision.parquet"
    pq.write_table(pa.Table.from_pylist(rows), source)
    out = tmp_path / "out"
    pipeline.run(source, method="perplexity", budget=4, out=out, model="tiny-llava", progress=False,
                 export_format="sharegpt")
    info = json.loads((out / "dataset_info.json").read_text())["mmselect_subset"]
    assert info["file_name"] == "subset.sharegpt.json" and info["formatting"] == "sharegpt"
    exported = json.loads((out / "subset.sharegpt.json").read_text())
    assert len(exported) == 4
    kept_rows = pq.read_table(out / "subset.parquet").to_pylist()  # the selected rows, unchanged
    for record, row in zip(exported, kept_rows):
        (image_path,) = record["images"]
        assert image_path.startswith(str(out / "images")) and open(image_path, "rb").read() == row["image"]["bytes"]
        Image.open(io.BytesIO(row["image"]["bytes"])).verify()
        assert record["messages"][1]["content"] == row["conversations"][1]["value"]
    assert len(read_dataset(out / "subset.sharegpt.json").samples) == 4  # and mmselect reads it back
