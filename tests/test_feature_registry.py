"""The features registry, --feature-param, `mmselect features`, the shard store protocol, and the
rule that the generic layers name no method and no feature."""

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mmselect.cli import app
from mmselect.data import read_dataset
from mmselect.errors import ConfigError
from mmselect.features import registry
from mmselect.features.context import ExtractOptions
from mmselect.features.extract import extract_features
from mmselect.features.registry import (
    Feature,
    FeatureOption,
    FeatureOutput,
    parse_feature_params,
    register_feature,
    resolve_features,
)
from mmselect.features.shards import ExtractionOutput, JsonCodec, NpzCodec, ShardIndex, ShardStore
from mmselect.features.store import FeatureSet

REPO = Path(__file__).resolve().parents[1]
GENERIC = ["src/mmselect/pipeline.py", "src/mmselect/dedup.py", "src/mmselect/select_options.py",
           "src/mmselect/select_outputs.py", *sorted(
    str(p.relative_to(REPO)) for p in (REPO / "src/mmselect").glob("cli*.py")), *sorted(
    str(p.relative_to(REPO)) for p in (REPO / "src/mmselect/features").glob("extract*.py"))]


def test_generic_layers_name_no_method_and_no_feature():
    pattern = re.compile(r"[\"'](mmssr|mmssr-scores|clip_score|clipper|coincide|datatailor)[\"']")
    hits = [f"{path}:{n}: {line.strip()}" for path in GENERIC
            for n, line in enumerate((REPO / path).read_text().splitlines(), 1) if pattern.search(line)]
    assert len(GENERIC) >= 3 and hits == []


def test_importing_mmselect_loads_no_model_code():
    code = ("import sys, mmselect; assert callable(mmselect.select) and callable(mmselect.run); "
            "print(sorted(m for m in ('torch', 'transformers', 'mmselect.features.hook_features') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_unknown_features_and_options_fail_early_listing_what_exists():
    with pytest.raises(ConfigError, match=r"unknown feature 'nope'.*last_token.*clip_score.*user-scores"):
        resolve_features(["last_token", "nope"])
    with pytest.raises(ConfigError, match=r"feature 'coincide' has no option\(s\) \['layer'\]; its options: layers"):
        resolve_features(["coincide"], {"coincide": {"layer": 3}})
    with pytest.raises(ConfigError, match="unknown feature 'cocinide'"):
        resolve_features(["last_token"], {"cocinide": {"layers": [1]}})


def test_extract_refuses_a_bad_option_before_reading_or_loading_anything(tmp_path):
    from mmselect import pipeline

    with pytest.raises(ConfigError, match="has no option"):
        pipeline.extract(tmp_path / "missing.json", out=tmp_path / "f", model="no-such-model", features=["visual_mean"],
                         feature_params={"visual_mean": {"layers": 2}})
    assert not (tmp_path / "f").exists()


def test_features_a_feature_reads_run_first_and_are_added():
    names = [f.name for f in resolve_features(["clipper", "last_token"])]
    assert names == ["answer_nll", "clipper", "last_token"]


def test_feature_param_items_parse_as_json_when_they_can():
    params = parse_feature_params(["coincide.layers=[3, 7]", "clip_score.model=openai/clip", "mmssr-scores.max_new_tokens=8",
                                   "clipper.pairing=same-task"])
    assert params == {"coincide": {"layers": [3, 7]}, "clip_score": {"model": "openai/clip"},
                      "mmssr-scores": {"max_new_tokens": 8}, "clipper": {"pairing": "same-task"}}
    for bad in ("coincide=3", "layers=3", ".layers=3", "coincide.layers"):
        with pytest.raises(ConfigError, match="NAME.KEY=VALUE"):
            parse_feature_params([bad])


def test_a_taken_name_is_refused(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTERED", dict(registry._REGISTERED))

    class Again(Feature):
        name = "last_token"

    with pytest.raises(ConfigError, match="'last_token' is taken"):
        register_feature(Again)


def test_methods_imply_feature_options():
    from mmselect.methods import get_method

    assert get_method("mmssr", capabilities=["ocr", "score_logic"]).feature_params() == {
        "mmssr-scores": {"capabilities": ["ocr", "logic"]}}
    assert get_method("mmssr").feature_params() == {} and get_method("perplexity").feature_params() == {}


def test_extract_options_are_typed():
    options = ExtractOptions(batch_size=4).replace(model="tiny-qwen2-vl", max_length=None)
    assert (options.model, options.batch_size, options.max_length) == ("tiny-qwen2-vl", 4, None)
    with pytest.raises(TypeError, match="batchsize"):
        options.replace(batchsize=2)


@pytest.fixture(scope="module")
def samples(mini_data, mini_images):
    return read_dataset(mini_data, image_root=mini_images).samples[:10]


def test_a_registered_feature_reads_another_and_runs_through_the_runner(monkeypatch, tiny_llava, samples, tmp_path):
    monkeypatch.setattr(registry, "_REGISTERED", dict(registry._REGISTERED))
    calls = []

    class CountingRunner:
        remote = False

        def run_shards(self, shards, **kwargs):
            from mmselect.runners import LocalRunner

            calls.append(kwargs["description"])
            return LocalRunner().run_shards(shards, **kwargs)

    @register_feature
    class DoubledNLL(Feature):
        name = "doubled_nll"
        summary = "twice the answer NLL, plus an offset"
        columns = ("doubled_nll",)
        needs = ("model", "answer_nll")
        options = {"offset": FeatureOption(0.0, "added to every value")}

        def run(self, samples, context):
            values = 2 * context.columns["answer_nll"] + self.option("offset")
            return FeatureOutput(columns={"doubled_nll": values}, info={"doubled": len(samples)})

    fs, rejected = extract_features(samples, tiny_llava, ["doubled_nll"], feature_params={"doubled_nll": {"offset": 1.5}},
                                    cache_dir=tmp_path, batch_size=5, progress=False, runner=CountingRunner())
    assert rejected == [] and calls == ["extract answer_nll"]
    assert np.array_equal(fs.column("doubled_nll"), 2 * fs.column("answer_nll") + 1.5)
    assert fs.manifest["doubled"] == len(samples)


def test_every_codec_writes_the_done_marker_last(tmp_path):
    output = ExtractionOutput(["a", "b"], {"x": np.array([1.0, np.nan])}, [{"key": "c", "reason": "r"}], {"errors": 2})
    lists = ExtractionOutput(["a", "b"], {"styles": np.array([["u", "v"], []], dtype=object), "s": np.array([np.nan, 3.0])})
    for codec, written in ((NpzCodec(), output), (JsonCodec(), output), (JsonCodec(), lists)):
        store = ShardStore(tmp_path / type(codec).__name__, codec)
        assert not store.done("shard-1")
        store.write("shard-1", written)
        assert store.done("shard-1")
        back = store.read("shard-1")
        assert back.keys == written.keys and back.rejected == written.rejected and back.info == written.info
        for name, values in written.values.items():
            if values.dtype == object:
                assert [list(v) for v in back.values[name]] == [list(v) for v in values]
            else:
                assert np.array_equal(back.values[name], values, equal_nan=True)
        # A payload without its marker (a run killed before the marker) is not a finished shard.
        (store.directory / "shard-1.done").unlink()
        assert not store.done("shard-1") and not list(store.directory.glob("*.tmp*"))


def test_shard_index_gathers_in_any_order():
    outputs = [ExtractionOutput(["k2", "k0"], {"v": np.array([2.0, 0.0])}), ExtractionOutput([], {}),
               ExtractionOutput(["k1"], {"v": np.array([1.0])})]
    index = ShardIndex(outputs)
    assert "k1" in index and "k3" not in index
    assert index.gather("v", ["k0", "k1", "k2"]).tolist() == [0.0, 1.0, 2.0]


def test_feature_set_key_index():
    fs = FeatureSet.from_arrays(keys=["k0", "k1", "k2"], columns={"x": np.arange(3.0)})
    assert fs.row_of == {"k0": 0, "k1": 1, "k2": 2} and fs.rows_for(["k2", "k0"]).tolist() == [2, 0]


def test_work_units_ship_without_their_models(samples):
    from mmselect.features.clip_feature import ClipWork

    work = ClipWork("tiny-clip", "cpu", batch_size=4)
    first = work(samples[:3], lambda n: None)
    shipped = copy.deepcopy(work)
    assert work._loaded is not None and shipped._loaded is None
    again = shipped(samples[:3], lambda n: None)
    assert again.keys == first.keys and np.array_equal(again.values["clip_score"], first.values["clip_score"], equal_nan=True)


runner = CliRunner()


def test_cli_feature_param_replaces_the_per_feature_flags(tmp_path, mini_data, mini_images):
    records = json.loads(mini_data.read_text())[:8]
    data = tmp_path / "data.json"
    data.write_text(json.dumps(records))
    base = ["extract", str(data), "--image-root", str(mini_images), "--model", "tiny-llava", "--features", "visual_mean",
            "--no-progress", "--batch-size", "4"]
    new = runner.invoke(app, [*base, "--out", str(tmp_path / "new"), "--feature-param", "visual_mean.layer=1"])
    old = runner.invoke(app, [*base, "--out", str(tmp_path / "old"), "--visual-layer", "1"])
    default = runner.invoke(app, [*base, "--out", str(tmp_path / "default")])
    assert new.exit_code == old.exit_code == default.exit_code == 0, new.output + old.output
    a, b, c = (FeatureSet.load(tmp_path / name) for name in ("new", "old", "default"))
    assert np.array_equal(a.array("visual_mean"), b.array("visual_mean"))
    assert not np.allclose(a.array("visual_mean"), c.array("visual_mean"))  # layer 1, not the default layer 0
    assert a.manifest["extraction"]["features"]["visual_mean"]["params"] == {"layer": 1}
    bad = runner.invoke(app, [*base, "--out", str(tmp_path / "bad"), "--feature-param", "visual_mean.layers=1"])
    assert bad.exit_code == 2 and "has no option" in bad.output and "layer" in bad.output
    assert "--clip-model" not in runner.invoke(app, ["extract", "--help"]).output


def test_cli_lists_features_with_options_and_readers():
    result = runner.invoke(app, ["features"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.startswith("│") and line.split("│")[1].strip()}
    for name in ("tokens", "last_token", "coincide", "answer_nll", "clipper", "clip_score", "mmssr-scores", "user-scores"):
        assert name in rows, name
    assert "layers=None" in rows["coincide"] and "coincide" in rows["coincide"].split("│")[4]
    assert "m=4" in rows["clipper"] and "clip-score" in rows["clip_score"] and "mmssr" in rows["mmssr-scores"]
    assert "length" in rows["tokens"]


def test_user_scores_feature_during_extraction(tmp_path, mini_data, mini_images):
    from mmselect import pipeline

    records = json.loads(mini_data.read_text())[:6]
    data = tmp_path / "data.json"
    data.write_text(json.dumps(records))
    scores = tmp_path / "scores.jsonl"
    scores.write_text("".join(json.dumps({"position": i, "score_ocr": i / 2, "styles": ["x"]}) + "\n" for i in range(6)))
    fs = pipeline.extract(data, out=tmp_path / "f", features=["tokens", "user-scores"], image_root=mini_images,
                          feature_params={"user-scores": {"path": str(scores)}}, progress=False)
    assert fs.n == 6 and fs.column("score_ocr").tolist() == [i / 2 for i in range(6)]
    assert [list(s) for s in fs.column("styles")] == [["x"]] * 6


def test_cli_run_takes_feature_params_too(tmp_path, mini_data, mini_images):
    records = json.loads(mini_data.read_text())[:12]
    data = tmp_path / "data.json"
    data.write_text(json.dumps(records))
    args = ["run", str(data), "--image-root", str(mini_images), "--model", "tiny-llava", "--method", "coincide",
            "-p", "n_clusters=2", "--budget", "4", "--no-progress"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "o"), "--feature-param", "coincide.layers=[0,1]"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "o" / "features" / "manifest.json").read_text())
    assert manifest["extraction"]["features"]["coincide"]["params"] == {"layers": [0, 1]}
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["counts"]["selected"] == 4
    bad = runner.invoke(app, [*args, "--out", str(tmp_path / "bad"), "--feature-param", "coincide=1"])
    assert bad.exit_code == 2 and "NAME.KEY=VALUE" in bad.output
