"""The arena on small worlds: deterministic data with the configured pathology rates, a reference
model that round-trips through save_pretrained and mmselect's loader, an end-to-end run through the
real select path that resumes only what is missing, and a harness that tells oracle from anti-oracle."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from mmselect.arena import model as M
from mmselect.arena.config import ArenaConfig, TrainingConfig, WorldConfig, config_from_dict, load_config
from mmselect.arena.generation import generate_items, pathology_counts
from mmselect.arena.world import tree_digest, write_world
from mmselect.data.readers import read_dataset
from mmselect.errors import ConfigError

SMALL_WORLD = dict(pool_size=300, stage1_size=140, test_per_task=12, wrong_answer_rate=0.3, duplicate_rate=0.1,
                   near_duplicate_rate=0.1, mismatch_rate=0.05, trivial_rate=0.05)
SMALL_TRAINING = dict(stage1_steps=60, stage1_batch_size=16, steps=30, batch_size=16, extract_batch_size=32, lr=2e-3, threads=1)


def test_world_is_byte_identical_from_its_seed_and_has_the_configured_rates(tmp_path):
    config = WorldConfig(**SMALL_WORLD)
    first = write_world(config, tmp_path / "a")
    second = write_world(config, tmp_path / "b")
    assert tree_digest(first.root) == tree_digest(second.root)
    other = write_world(WorldConfig(**{**SMALL_WORLD, "seed": 1}), tmp_path / "c")
    assert tree_digest(other.root) != tree_digest(first.root)

    truth = first.pathologies()
    dataset = read_dataset(first.data("pool"), image_root=first.image_root, verify_images=True)
    assert not dataset.rejected and dataset.n_records == 300 == len(truth)
    assert set(truth) == {s.key for s in dataset.samples}
    expected = {"duplicate": 30, "near_duplicate": 30, "wrong_answer": 90, "mismatch": 15, "trivial": 15}
    assert pathology_counts(config) == expected
    found = {p: sum(1 for t in truth.values() if t["pathology"] == p) for p in (*expected, "clean")}
    assert found == {**expected, "clean": 300 - sum(expected.values())}

    records = json.loads(first.data("pool").read_text())
    by_key = {s.key: s for s in dataset.samples}
    for key, item in truth.items():
        record = records[item["position"]]
        if item["pathology"] == "duplicate":
            source = records[truth[item["source"]]["position"]]
            assert record == source  # byte for byte, image included
        if item["pathology"] == "near_duplicate":
            source = records[truth[item["source"]]["position"]]
            assert record["conversations"][1]["value"] != source["conversations"][1]["value"]  # paraphrased
            assert record.get("image") != source.get("image") or "image" not in record
        if item["pathology"] == "trivial":
            question, answer = record["conversations"][1]["value"], record["conversations"][2]["value"]
            assert f"the answer is {answer} ." in question
        assert by_key[key].task == ("text" if item["task"] == "arithmetic" else item["task"])
    # Task imbalance: colour is 4x as frequent as every other task among the generated records.
    base = [t for t in truth.values() if t["pathology"] not in ("duplicate", "near_duplicate")]
    colour = sum(1 for t in base if t["task"] == "color")
    shape = sum(1 for t in base if t["task"] == "shape")
    assert abs(colour - 4 * shape) <= 4
    # Multi-turn and text-only records are among them.
    assert any(len(r["conversations"]) > 3 for r in records)
    assert any("image" not in r for r in records)


def test_wrong_answers_differ_from_the_truth_and_stay_in_the_task_vocabulary():
    from mmselect.arena.scenes import COLORS, NUMBERS, SHAPES

    vocabulary = {
        "color": set(COLORS), "shape": set(SHAPES), "count": set(NUMBERS[1:5]),
        "position": {"left", "right", "top", "bottom"}, "digit": set(NUMBERS), "arithmetic": set(NUMBERS),
    }
    config = WorldConfig(**SMALL_WORLD)
    assert all(item.pathology == "clean" for item in generate_items(config.clean(), "clean_pool"))
    corrupted = [item for item in generate_items(config, "pool") if item.pathology in ("wrong_answer", "mismatch")]
    assert len(corrupted) == 90 + 15
    for item in corrupted:
        answer, truth = item.turns[0][1], item.meta["truth"]
        assert answer != truth
        if item.task == "caption":
            assert answer.startswith("a ") and all(w in set(COLORS) | set(SHAPES) | {"a", "and"} for w in answer.split())
        else:
            assert answer in vocabulary[item.task] and truth in vocabulary[item.task]
        if item.task == "position":
            assert {answer, truth} in ({"left", "right"}, {"top", "bottom"})


def test_config_files_and_errors(tmp_path):
    path = tmp_path / "arena.toml"
    path.write_text("[world]\npool_size = 500\nwrong_answer_rate = 0.1\n[world.task_weights]\ncolor = 2\n[training]\nsteps = 7\n")
    config = load_config(path)
    assert config.world.pool_size == 500 and config.world.wrong_answer_rate == 0.1 and config.training.steps == 7
    assert config.world.task_weights == {"color": 2.0}
    with pytest.raises(ConfigError, match="unknown setting"):
        config_from_dict({"world": {"pool": 5}})
    with pytest.raises(ConfigError, match="sum to less than 1"):
        config_from_dict({"world": {"wrong_answer_rate": 0.9, "duplicate_rate": 0.2}})


def test_reference_model_round_trips_through_save_pretrained_and_the_loader(tmp_path):
    from PIL import Image

    from mmselect.models.registry import load_model

    world = write_world(WorldConfig(**SMALL_WORLD), tmp_path / "world")
    tokenizer = M.build_tokenizer()
    processor = M.build_processor(tokenizer)
    model = M.build_model(tokenizer, TrainingConfig(**SMALL_TRAINING)).eval()
    directory = M.save_reference(model, processor, tmp_path / "reference")
    bundle = load_model(str(directory), device="cpu")
    assert bundle.family == "llava" and bundle.template.name == M.TEMPLATE.name
    assert type(bundle.model).__name__ == "LlavaForConditionalGeneration"

    samples = read_dataset(world.data("pool"), image_root=world.image_root).samples
    sample = next(s for s in samples if s.image_paths and s.rounds == 2)
    encoded = M.encode_sample(sample, tokenizer)
    rendered = M.TEMPLATE.render([sample])
    inputs = bundle.processor(text=[rendered.text], images=[Image.open(rendered.image_paths[0]).convert("RGB")], return_tensors="pt")
    # The training tensors are what the saved processor produces for the same record.
    assert inputs["input_ids"][0].tolist() == encoded.ids.tolist()
    assert (inputs["input_ids"][0] == tokenizer.convert_tokens_to_ids("<image>")).sum() == 16
    assert torch.equal(inputs["pixel_values"][0], torch.from_numpy(encoded.image))
    labelled = tokenizer.convert_ids_to_tokens([int(i) for i in encoded.labels if i != -100])
    answers = [t.text for t in sample.turns if t.role == "assistant"]
    assert labelled == [w for a in answers for w in (*a.split(), "</s>")]
    with torch.no_grad():
        batch = M.collate([encoded], tokenizer.pad_token_id)
        batch.pop("labels")
        assert torch.allclose(model(**batch).logits, bundle.model(**batch).logits)


def test_wsd_schedule():
    factor = M.wsd_lambda(100, 0.1, 0.2)
    assert [round(factor(s), 3) for s in (0, 9, 10, 79, 80, 90, 99)] == [0.1, 1.0, 1.0, 1.0, 1.0, 0.5, 0.05]


@pytest.fixture(scope="module")
def small_arena(tmp_path_factory):
    from mmselect.arena import run_arena

    out = tmp_path_factory.mktemp("arena")
    config = config_from_dict({"world": SMALL_WORLD, "training": SMALL_TRAINING})
    summary = run_arena(out, config=config, methods=["perplexity", "length"], budgets=["0.2"], seeds=1, progress=False)
    return out, config, summary


def test_arena_runs_end_to_end_through_select_and_writes_results(small_arena):
    out, _, summary = small_arena
    rows_by_condition = {row["condition"]: row for row in summary["conditions"]}
    conditions = set(rows_by_condition)
    assert conditions == {"full", "full-clean-world", "random", "perplexity", "length", "oracle", "anti-oracle"}
    assert (out / "results.md").is_file() and json.loads((out / "results.json").read_text())["complete"]
    for method in ("random", "perplexity", "length"):
        selection = out / "runs" / method / "b0.2" / "s0" / "selection"
        manifest = json.loads((selection / "manifest.json").read_text())
        counts = manifest["counts"]
        assert manifest["method"] == method and counts["input_records"] == 300
        assert counts["selected"] + counts["not_selected"] + counts["rejected"] == 300
        assert 50 <= counts["selected"] <= 60  # 20 % of the usable records
        subset = json.loads((selection / "subset.json").read_text())
        assert len(subset) == counts["selected"]
        assert rows_by_condition[method]["n_train"] == counts["selected"]
    rows = {row["condition"]: row for row in summary["conditions"]}
    # The references read the hidden labels: oracle takes clean records only, anti-oracle wrong answers first.
    assert rows["oracle"]["robustness"]["clean"] == pytest.approx(300 / 120, abs=1e-3)
    assert rows["oracle"]["robustness"]["wrong_answer"] == 0
    assert rows["anti-oracle"]["robustness"]["wrong_answer"] == pytest.approx(1 / 0.3, abs=1e-3)
    assert rows["full"]["robustness"] == {k: 1.0 for k in rows["full"]["robustness"]}
    for row in summary["conditions"]:
        assert 0 <= row["mean"]["macro_mean"] <= 1
    assert rows["random"]["vs_random"]["difference"] == 0


def test_harness_discriminates_oracle_from_anti_oracle(small_arena):
    _, _, summary = small_arena
    rows = {row["condition"]: row for row in summary["conditions"]}
    assert rows["oracle"]["mean"]["macro_mean"] > rows["anti-oracle"]["mean"]["macro_mean"]


def test_resume_redoes_only_missing_runs_and_ends_identical(small_arena, tmp_path):
    from mmselect.arena import run_arena

    out, config, summary = small_arena
    copy = tmp_path / "arena"
    shutil.copytree(out, copy)
    interrupted = copy / "runs" / "perplexity" / "b0.2" / "s0"
    (interrupted / "done.json").unlink()  # as if killed before the run finished
    markers = {p: p.stat().st_mtime_ns for p in copy.glob("runs/**/done.json")}
    again = run_arena(copy, config=config, methods=["perplexity", "length"], budgets=["0.2"], seeds=1, progress=False)
    assert all(p.stat().st_mtime_ns == t for p, t in markers.items())
    assert (interrupted / "done.json").is_file()

    def accuracies(s):
        return {(r["condition"], r["budget"], r["seed"]): r["accuracy"] for r in s["runs"]}

    assert accuracies(again) == accuracies(summary)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "train_seconds"} for r in rows]  # noqa: E731
    assert strip(again["conditions"]) == strip(summary["conditions"])


def test_the_duplicate_guard_is_a_condition_of_its_own_beside_the_default(small_arena, tmp_path):
    from mmselect.arena import run_arena

    out, config, summary = small_arena
    copy = tmp_path / "arena"
    shutil.copytree(out, copy)
    markers = {p: p.stat().st_mtime_ns for p in copy.glob("runs/**/done.json")}
    unguarded = run_arena(copy, config=config, methods=["perplexity", "length"], budgets=["0.2"], seeds=1, progress=False,
                          dedup="none")
    # full data and the references do not select: reused; random and the method select again without the guard
    assert all(p.stat().st_mtime_ns == t for p, t in markers.items())
    for method in ("random", "perplexity", "length"):
        manifest = json.loads((copy / "runs" / method / "b0.2-dedup-none" / "s0" / "selection" / "manifest.json").read_text())
        assert manifest["dedup"]["mode"] == "none" and manifest["counts"]["duplicates"] == 0
    assert json.loads((copy / "results-dedup-none.json").read_text())["dedup"] == "none"
    assert "duplicate guard (random and the methods): `none`" in (copy / "results-dedup-none.md").read_text()
    assert json.loads((copy / "results.json").read_text())["dedup"] == "exact"  # the default's results stay
    # under the default guard no two selected records have the same content (the key's hash part)
    guarded = json.loads((copy / "runs" / "random" / "b0.2" / "s0" / "selection" / "manifest.json").read_text())
    assert guarded["counts"]["duplicates"] > 0
    for method in ("random", "perplexity", "length"):
        import pyarrow.parquet as pq

        table = pq.read_table(copy / "runs" / method / "b0.2" / "s0" / "selection" / "selection.parquet").to_pydict()
        hashes = [key.rsplit("-", 1)[-1] for key, chosen in zip(table["key"], table["selected"]) if chosen]
        assert len(hashes) == len(set(hashes))
    assert {r["condition"] for r in unguarded["conditions"]} == {"full", "full-clean-world", "random", "perplexity", "length",
                                                             "oracle", "anti-oracle"}
