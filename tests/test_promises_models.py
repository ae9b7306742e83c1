"""Promises that need a (tiny, offline) model: how the model is loaded (``--trust-remote-code`` off
by default, ``--revision`` passed on and recorded), the ``mean_embed``, ``spectrum`` and
``coincide_embed`` features against a direct computation from the model's own activations, a run
resumed after a kill between a shard's data and its done-marker, and mmSSR from generated replies
to the selection."""

import json
import math
import re

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from mmselect import pipeline
from mmselect.cli import app
from mmselect.data import read_dataset
from mmselect.features import mmssr_scoring
from mmselect.features.encode import encode, load_image
from mmselect.features.extract import extract_features
from mmselect.features.hooks import decoder_layers
from mmselect.features.reducers import coincide_layers
from mmselect.features.store import FeatureSet
from mmselect.models.tiny import build_tiny_model

runner = CliRunner()


@pytest.fixture(scope="module")
def samples(mini_data, mini_images):
    """Two image and two text-only samples of different lengths: one padded batch."""
    ds = read_dataset(mini_data, image_root=mini_images)
    return [s for s in ds.samples if s.n_images == 1][:2] + [s for s in ds.samples if s.n_images == 0][:2]


# --- loading: --trust-remote-code off unless given, --revision passed on and recorded -------------
@pytest.fixture
def loader_calls(monkeypatch):
    """Every from_pretrained call of transformers' auto classes, with its keyword arguments."""
    import transformers

    calls = []
    for name in ("AutoConfig", "AutoModelForImageTextToText", "AutoProcessor"):
        cls = getattr(transformers, name)
        original = cls.from_pretrained

        def spy(*args, _original=original, _name=name, **kwargs):
            calls.append((_name, kwargs))
            return _original(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", spy)
    return calls


def _text_data(tmp_path, mini_data):
    records = [r for r in json.loads(mini_data.read_text()) if "image" not in r][:6]
    path = tmp_path / "data.json"
    path.write_text(json.dumps(records))
    return path


@pytest.mark.parametrize("flags,trusted", [((), False), (("--trust-remote-code",), True)])
def test_trust_remote_code_only_with_the_flag(tmp_path, mini_data, loader_calls, flags, trusted):
    model_dir = build_tiny_model("tiny-llava", tmp_path / "model")
    result = runner.invoke(app, ["run", str(_text_data(tmp_path, mini_data)), "--model", str(model_dir), "--method",
                                 "length", "--budget", "2", "--out", str(tmp_path / "out"), "--no-progress", *flags],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    loaded = {name for name, _ in loader_calls}
    assert {"AutoConfig", "AutoModelForImageTextToText"} <= loaded
    assert all(kwargs.get("trust_remote_code", False) is trusted for _, kwargs in loader_calls)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["config"]["options"]["trust_remote_code"] is trusted


def test_revision_is_passed_to_the_loader_and_recorded(tmp_path, mini_data, loader_calls):
    commit = "0123456789abcdef0123456789abcdef01234567"
    model_dir = build_tiny_model("tiny-llava", tmp_path / "model")
    result = runner.invoke(app, ["run", str(_text_data(tmp_path, mini_data)), "--model", str(model_dir), "--method",
                                 "length", "--budget", "2", "--out", str(tmp_path / "out"), "--no-progress",
                                 "--revision", commit], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert loader_calls and all(kwargs.get("revision") == commit for _, kwargs in loader_calls)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["model"]["revision"] == commit
    assert manifest["config"]["options"]["revision"] == commit


# --- mean_embed, spectrum and coincide_embed against the model's own activations -----------------
def _direct_spectrum(matrix: torch.Tensor) -> tuple[float, float]:
    """Entropy of the normalised singular values (natural log) and the top value's share."""
    sigma = torch.linalg.svdvals(matrix.double())
    p = sigma / sigma.sum()
    p = p[p > 0]
    return float(-(p * p.log()).sum()), float(sigma[0] / sigma.sum())


@pytest.mark.parametrize("which", ["tiny_llava", "tiny_qwen"])
def test_mean_embed_spectrum_coincide_match_a_direct_computation(which, samples, request, tmp_path):
    bundle = request.getfixturevalue(which)
    layers = decoder_layers(bundle.model)
    chosen = coincide_layers(len(layers))
    captured = {}

    def keep(name):
        def hook(module, args, output):
            captured[name] = (output[0] if isinstance(output, tuple) else output).float()
        return hook

    handles = [layers[-1].register_forward_hook(keep("last"))]
    handles += [layers[i].self_attn.o_proj.register_forward_hook(keep(f"o_proj{i}")) for i in chosen]
    rendered = [bundle.template.render([s]) for s in samples]
    batch = encode(bundle, rendered, [[load_image(p) for p in r.image_paths] for r in rendered], 2048).to(bundle.device)
    try:
        with torch.no_grad():
            bundle.model(**batch.inputs)
    finally:
        for handle in handles:
            handle.remove()
    assert batch.attention.sum(1).unique().numel() == len(samples)  # every sample has its own length: padding

    fs, rejected = extract_features(samples, bundle, ["mean_embed", "spectrum", "coincide"], cache_dir=tmp_path,
                                    batch_size=4, progress=False)
    assert rejected == [] and list(fs.keys) == [s.key for s in samples]
    scale = 1 / math.sqrt(2 * len(chosen))
    for row, sample in enumerate(samples):
        real = batch.attention[row]
        tokens = captured["last"][row][real]  # this sample's tokens, padding left out
        np.testing.assert_allclose(fs.array("mean_embed")[row], tokens.mean(0).cpu().numpy(), atol=1e-5)
        sve, top = _direct_spectrum(tokens)
        assert fs.column("sve")[row] == pytest.approx(sve, rel=1e-5)
        assert fs.column("sv_top_ratio")[row] == pytest.approx(top, rel=1e-5)

        image = batch.image[row]
        start = int(image.nonzero()[0, 0]) if image.any() else 0
        text = real & ~image & (torch.arange(len(real), device=real.device) >= start)
        parts = []
        for i in chosen:
            out = captured[f"o_proj{i}"][row]
            visual = torch.tanh(out[image].mean(0)) if image.any() else torch.zeros(out.shape[-1], device=out.device)
            textual = torch.tanh(out[text].mean(0))
            parts += [visual / visual.norm() if image.any() else visual, textual / textual.norm()]
        expected = torch.cat(parts) * scale
        np.testing.assert_allclose(fs.array("coincide_embed")[row], expected.cpu().numpy(), atol=1e-5)
        assert (sample.n_images == 0) == (not image.any())


# --- resume: a shard whose marker was never written is computed again -----------------------------
def test_shard_killed_before_its_marker_is_recomputed(samples, tiny_llava, tmp_path):
    clean, _ = extract_features(samples, tiny_llava, ["answer_nll"], cache_dir=tmp_path / "clean", shard_size=2,
                                progress=False)
    cache = tmp_path / "cache"
    extract_features(samples, tiny_llava, ["answer_nll"], cache_dir=cache, shard_size=2, progress=False)
    marker = min(cache.glob("*/*.done"))
    name = marker.name[: -len(".done")]
    # The run died after the shard's data was written but before its marker: here the data files
    # hold values the finished computation would not give (a half-written payload).
    data = marker.with_name(name + ".npz")
    with np.load(data) as stored:
        wrong = {k: stored[k] + 100.0 for k in stored.files}
    np.savez(data, **wrong)
    marker.unlink()
    resumed, _ = extract_features(samples, tiny_llava, ["answer_nll"], cache_dir=cache, shard_size=2, progress=False)
    np.testing.assert_allclose(resumed.column("answer_nll"), clean.column("answer_nll"), rtol=1e-6)
    assert marker.exists()


# --- mmSSR end to end: replies -> parsed scores -> the sampler -> the subset ---------------------
def test_mmssr_run_selects_from_the_scorer_replies(tmp_path, mini_data, mini_images, monkeypatch):
    records = [r for r in json.loads(mini_data.read_text()) if str(r.get("image", "")).startswith("shapes/")][:6]
    for i, record in enumerate(records):  # a marker per record, so the scripted scorer knows whom it answers
        record["conversations"][0]["value"] = f"<image>\nQuestion Q{i}: what is shown?"
    data = tmp_path / "data.json"
    data.write_text(json.dumps(records))
    # scorer replies per record: parsed as 3, 5, 0, 4, 2, NaN
    replies = {0: "3", 1: " 5 ", 2: "0", 3: "4", 4: "2", 5: "five"}
    asked = []

    def scripted_generate(model, processor, requests, *, description="", **kwargs):
        answers = []
        for messages, _images in requests:
            marker = int(re.search(r"Q(\d+)", json.dumps(messages)).group(1))
            asked.append((description, marker))
            answers.append("yes/no" if description.endswith(mmssr_scoring.STYLE_TASK) else replies[marker])
        return answers

    monkeypatch.setattr(mmssr_scoring, "generate_replies", scripted_generate)
    out = tmp_path / "out"
    result = pipeline.run(data, method="mmssr", budget=3, out=out, model="tiny-qwen2-vl", image_root=mini_images,
                          params={"capabilities": ["ocr"]}, progress=False)
    assert len(asked) == 2 * len(records)  # one score and one style reply per record
    table = pq.read_table(out / "selection.parquet").to_pydict()
    # one capability, one style, one source: the three highest scores above 0 -> records 1 (5), 3 (4), 0 (3)
    assert sorted(p for p, s in zip(table["position"], table["selected"]) if s) == [0, 1, 3]
    assert result.n_selected == 3
    assert [r["conversations"][0]["value"] for r in json.loads((out / "subset.json").read_text())] == [
        records[i]["conversations"][0]["value"] for i in (0, 1, 3)]
    features = FeatureSet.load(out / "features")
    by_position = dict(zip(features.column("position").tolist(), features.column("score_ocr").tolist()))
    assert [by_position[i] for i in range(5)] == [3.0, 5.0, 0.0, 4.0, 2.0] and math.isnan(by_position[5])
