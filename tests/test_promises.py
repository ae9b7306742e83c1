"""Promises of the README that a user relies on, each checked where a plausible bug would break it:
budget rounding, content keys independent of field order, the shard done-marker, which samples the
perplexity bands and the length ordering pick, the JSON subset byte for byte, ``report.md``, and the
CLI flags ``--task-field`` and ``select --scores``. None of these tests loads a model."""

import json
import math
from fractions import Fraction

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from mmselect import pipeline
from mmselect.budget import Budget
from mmselect.cli import app
from mmselect.data import read_dataset, sample_key
from mmselect.data.rows import row_hash40
from mmselect.features.shards import ExtractionOutput, JsonCodec, NpzCodec, ShardStore
from mmselect.features.store import FeatureSet
from mmselect.methods import get_method

runner = CliRunner()


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def _picked(result) -> list[int]:
    return np.flatnonzero(result.selected).tolist()


# --- budget: a fraction of n is floor(fraction * n), in decimal, not in binary floating point ----
@pytest.mark.parametrize("text,n,expected", [
    ("0.29", 100, 29),  # 0.29 * 100 == 28.999999999999996 in float64
    ("0.57", 100, 57),  # 56.99999999999999
    ("0.58", 100, 58),  # 57.99999999999999
    ("0.07", 100, 7),   # 7.000000000000001 (must not become 8 either)
    ("0.14", 50, 7),    # 7.000000000000001
    ("0.1", 30, 3),     # 3.0000000000000004
    ("29%", 100, 29),
])
def test_fraction_budget_counts_worked_by_hand(text, n, expected):
    assert Budget.parse(text).resolve(n) == expected


def test_every_two_decimal_fraction_resolves_like_exact_decimal_arithmetic():
    for hundredths in range(1, 101):
        text = f"{hundredths / 100:.2f}"
        for n in (100, 300, 1000, 665_298):
            assert Budget.parse(text).resolve(n) == math.floor(Fraction(text) * n), (text, n)


def test_fraction_budget_through_select_cli(tmp_path):
    n = 100
    FeatureSet.from_arrays(keys=[f"{i:07d}-{i:010x}" for i in range(n)],  # distinct contents: no duplicate
                           columns={"answer_nll": np.arange(n, dtype=float), "position": np.arange(n)}).save(
        tmp_path / "feats")
    result = _invoke("select", "--features", tmp_path / "feats", "--method", "perplexity", "-p", "band=low",
                     "--budget", "0.29", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    table = pq.read_table(tmp_path / "out" / "selection.parquet").to_pydict()
    assert sum(table["selected"]) == 29
    # band=low keeps the 29 lowest values: positions 0..28
    assert [p for p, s in zip(table["position"], table["selected"]) if s] == list(range(29))


# --- keys: the content hash does not depend on the order of a record's fields -------------------
RECORD = {"id": "r1", "image": "coco/a.png", "score": 0.5,
          "conversations": [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A cat."}]}


def _reordered(record):
    """The same record with its fields (and the fields of its turns) in reverse order."""
    if isinstance(record, dict):
        return {k: _reordered(record[k]) for k in reversed(list(record))}
    if isinstance(record, list):
        return [_reordered(v) for v in record]
    return record


def test_sample_key_ignores_field_order_but_not_values():
    reordered = _reordered(RECORD)
    assert list(reordered) != list(RECORD)
    assert sample_key(3, reordered) == sample_key(3, RECORD)
    changed = dict(RECORD, conversations=[RECORD["conversations"][0], {"from": "gpt", "value": "A dog."}])
    assert sample_key(3, changed) != sample_key(3, RECORD)
    assert sample_key(4, RECORD) != sample_key(3, RECORD)


@pytest.mark.parametrize("with_float", [True, False])  # the reader hashes records with and without floats differently
@pytest.mark.parametrize("container", ["json", "jsonl"])
def test_reader_keys_ignore_field_order(tmp_path, with_float, container):
    record = {"id": "r1", "conversations": [{"from": "human", "value": "What is it?"}, {"from": "gpt", "value": "A cat."}]}
    if with_float:
        record["score"] = 0.5
    changed = dict(record, id="r2")
    paths = []
    for name, records in (("a", [record, changed]), ("b", [_reordered(record), _reordered(changed)])):
        path = tmp_path / f"{name}.{container}"
        text = json.dumps(records) if container == "json" else "".join(json.dumps(r) + "\n" for r in records)
        path.write_text(text)
        paths.append(path)
    keys = [[s.key for s in read_dataset(p).samples] for p in paths]
    assert keys[0] == keys[1] == [sample_key(0, record), sample_key(1, changed)]
    assert keys[0][0].split("-")[1] != keys[0][1].split("-")[1]


def test_row_hash_ignores_column_order():
    row = {"id": "r1", "question": "q", "answer": "a", "image": {"bytes": b"\x89PNG", "path": None}}
    assert row_hash40(_reordered(row)) == row_hash40(row)
    assert row_hash40(dict(row, answer="b")) != row_hash40(row)
    assert row_hash40(dict(row, image={"bytes": b"\x89PNH", "path": None})) != row_hash40(row)


def test_parquet_keys_ignore_column_order(tmp_path):
    rows = {"id": ["a", "b"], "source": ["s", "s"],
            "conversations": [[{"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": "x"}] for i in range(2)]}
    pq.write_table(pa.table(rows), tmp_path / "one.parquet")
    pq.write_table(pa.table({k: rows[k] for k in reversed(list(rows))}), tmp_path / "two.parquet")
    keys = [[s.key for s in read_dataset(tmp_path / f"{name}.parquet", check_images=False).samples]
            for name in ("one", "two")]
    assert len(keys[0]) == 2 and keys[0] == keys[1]


# --- shards: only the done-marker says a shard is finished ----------------------------------------
@pytest.mark.parametrize("codec", [NpzCodec(), JsonCodec()], ids=["npz", "json"])
def test_shard_without_its_marker_is_not_done(tmp_path, codec):
    store = ShardStore(tmp_path, codec)
    output = ExtractionOutput(["k0", "k1"], {"answer_nll": np.array([0.5, 1.5])})
    # killed between writing the data and the marker: the data files are all there
    codec.write(tmp_path, "shard-a", output)
    assert any(tmp_path.glob("shard-a.*"))
    assert not store.done("shard-a")
    store.write("shard-b", output)
    assert store.done("shard-b")
    np.testing.assert_array_equal(store.read("shard-b").values["answer_nll"], [0.5, 1.5])


# --- the perplexity bands and the length ordering, on a case worked by hand -----------------------
#  nll:      0.9  0.1  0.5  0.3  0.7  0.2      ascending: 1, 5, 3, 2, 4, 0
NLL = np.array([0.9, 0.1, 0.5, 0.3, 0.7, 0.2])


@pytest.mark.parametrize("band,k,expected", [
    ("low", 2, [1, 5]), ("low", 3, [1, 3, 5]),
    ("high", 2, [0, 4]), ("high", 3, [0, 2, 4]),
    # mid: the k ranks starting at (n - k) // 2: k=2 -> ranks 2, 3; k=3 -> ranks 1, 2, 3; k=4 -> ranks 1..4
    ("mid", 2, [2, 3]), ("mid", 3, [2, 3, 5]), ("mid", 4, [2, 3, 4, 5]),
])
def test_perplexity_band_picks(band, k, expected):
    features = FeatureSet.from_arrays(columns={"answer_nll": NLL})
    result = get_method("perplexity", band=band).select(features, k)
    assert _picked(result) == expected
    np.testing.assert_allclose(result.values["perplexity"], np.exp(NLL))


def test_perplexity_default_band_is_mid():
    features = FeatureSet.from_arrays(columns={"answer_nll": NLL})
    assert _picked(get_method("perplexity").select(features, 2)) == [2, 3]


@pytest.mark.parametrize("by", ["n_answer_tokens", "n_tokens", "n_text_chars"])
def test_length_keeps_the_longest(by):
    lengths = np.array([5, 12, 3, 12, 8, 1], dtype=float)
    features = FeatureSet.from_arrays(columns={by: lengths})
    method = get_method("length", by=by)
    assert _picked(method.select(features, 1)) == [1]  # 12 twice: the earlier one
    assert _picked(method.select(features, 2)) == [1, 3]
    assert _picked(method.select(features, 3)) == [1, 3, 4]
    assert _picked(method.select(features, 5)) == [0, 1, 2, 3, 4]


def test_length_reads_the_measure_it_is_given():
    features = FeatureSet.from_arrays(columns={"n_answer_tokens": np.array([1.0, 9.0, 5.0]),
                                               "n_text_chars": np.array([9.0, 1.0, 5.0])})
    assert _picked(get_method("length").select(features, 1)) == [1]
    assert _picked(get_method("length", by="n_text_chars").select(features, 1)) == [0]


# --- the JSON subset: the selected records byte for byte, in source order ------------------------
def _odd_records():
    """Text-only records written by hand in a style no serialiser would reproduce."""
    chunks = []
    for i, length in enumerate((1, 21, 41, 11, 31, 51)):
        answer = "x" * length
        chunks.append(
            f'{{  "id" :"r{i}",\t"weight": 1.50,"source" : "s{i % 2}" ,\n'
            f'     "conversations": [ {{"from":"human", "value": "caf\\u00e9 {i}?"}},\n'
            f'       {{"value": "{answer}", "from" : "gpt"}} ] }}'
        )
    return chunks


def test_json_subset_is_the_input_bytes(tmp_path):
    chunks = _odd_records()
    data = tmp_path / "data.json"
    data.write_bytes(("[\n  " + ",\n  ".join(chunks) + "\n]\n").encode())
    out = tmp_path / "out"
    result = _invoke("run", data, "--method", "length", "-p", "by=n_text_chars", "--budget", "3", "--out", out,
                     "--no-progress")
    assert result.exit_code == 0, result.output
    # the three longest answers: records 5 (51), 2 (41), 4 (31), written in source order; a record is
    # the bytes of its JSON value (the indentation before it belongs to the array)
    expected = "[\n" + ",\n".join(chunks[i] for i in (2, 4, 5)) + "\n]\n"
    assert (out / "subset.json").read_bytes() == expected.encode()


def test_jsonl_subset_is_the_input_lines(tmp_path):
    lines = [c.replace("\n", " ") for c in _odd_records()]
    data = tmp_path / "data.jsonl"
    data.write_bytes(("\n".join(lines) + "\n").encode())
    out = tmp_path / "out"
    result = _invoke("run", data, "--method", "length", "-p", "by=n_text_chars", "--budget", "2", "--out", out,
                     "--no-progress")
    assert result.exit_code == 0, result.output
    assert (out / "subset.jsonl").read_bytes() == (lines[2] + "\n" + lines[5] + "\n").encode()


# --- the CLI flags --task-field and select --scores -----------------------------------------------
def test_task_field_on_run(tmp_path):
    data = tmp_path / "data.json"
    data.write_text("[\n" + ",\n".join(_odd_records()) + "\n]\n")
    out = tmp_path / "out"
    result = _invoke("run", data, "--method", "length", "-p", "by=n_text_chars", "--budget", "3", "--out", out,
                     "--task-field", "source", "--no-progress")
    assert result.exit_code == 0, result.output
    table = pq.read_table(out / "selection.parquet").to_pydict()
    by_position = dict(zip(table["position"], table["task"]))
    assert by_position == {i: f"s{i % 2}" for i in range(6)}
    # selected: records 2, 4 (s0) and 5 (s1)
    assert "| s0 | 3 | 2 | 66.7% |" in (out / "report.md").read_text()
    missing = _invoke("run", data, "--method", "length", "-p", "by=n_text_chars", "--budget", "3",
                      "--out", tmp_path / "o2", "--task-field", "nope", "--no-progress")
    assert missing.exit_code != 0 and "nope" in missing.output


def test_select_scores_flag(tmp_path):
    data = tmp_path / "data.json"
    data.write_text("[\n" + ",\n".join(_odd_records()) + "\n]\n")
    keys = [s.key for s in read_dataset(data).samples]
    FeatureSet.from_arrays(keys=keys, columns={"position": np.arange(6)}).save(tmp_path / "feats")
    scores = tmp_path / "scores.csv"
    # one capability, one style, one source: the sampler keeps the two highest scores above 0
    values = [2, 0, 5, 1, 4, 0]
    scores.write_text("key,score_ocr,styles\n" + "".join(f'{k},{v},"yes/no"\n' for k, v in zip(keys, values)))
    out = tmp_path / "out"
    result = _invoke("select", "--features", tmp_path / "feats", "--method", "mmssr", "--budget", "2",
                     "--scores", scores, "--out", out, "--data", data)
    assert result.exit_code == 0, result.output
    table = pq.read_table(out / "selection.parquet").to_pydict()
    assert sorted(p for p, s in zip(table["position"], table["selected"]) if s) == [2, 4]
    assert [r["id"] for r in json.loads((out / "subset.json").read_text())] == ["r2", "r4"]
    without = _invoke("select", "--features", tmp_path / "feats", "--method", "mmssr", "--budget", "2",
                      "--out", tmp_path / "o2")
    assert without.exit_code == 2 and "score" in without.output


# --- report.md: the numbers it shows ---------------------------------------------------------------
def test_report_md_numbers(tmp_path):
    nll = np.array([0.9, 0.1, 0.5, 0.3, 0.7, 0.2])
    features = FeatureSet.from_arrays(tasks=["a", "b", "a", "b", "a", "a"], columns={"answer_nll": nll})
    pipeline.select(features, method="perplexity", params={"band": "low"}, budget=3, out=tmp_path / "out")
    text = (tmp_path / "out" / "report.md").read_text()
    # low band, k = 3: samples 1 (b), 5 (a), 3 (b)
    assert "| a | 4 | 1 | 25.0% |" in text and "| b | 2 | 2 | 100.0% |" in text
    # scores: preference order 1, 5, 3, 2, 4, 0 -> scores 6, 5, 4, 3, 2, 1 (higher = kept first)
    assert "- all samples: 1 / 2.25 / 3.5 / 4.75 / 6" in text
    assert "- selected: 4 / 4.5 / 5 / 5.5 / 6" in text
    assert "- not selected: 1 / 1.5 / 2 / 2.5 / 3" in text
    assert "## Method diagnostics" in text and "| band | low |" in text
    assert "[0, 3]" in text  # the band's ranks
    assert "| selected | 3 |" in text and "| not selected | 3 |" in text
