"""Features from a second model (CLIP score, mmSSR generations) through the pipeline, offline."""

import json

import numpy as np
import pytest

from mmselect import pipeline
from mmselect.errors import NonFiniteFeaturesError
from mmselect.features.store import FeatureSet


@pytest.fixture
def small_data(tmp_path, mini_data):
    records = json.loads(mini_data.read_text())
    picked = [r for r in records if "image" in r][:8] + [r for r in records if "image" not in r][:4]
    path = tmp_path / "small.json"
    path.write_text(json.dumps(picked))
    return path


def test_clip_score_extraction_and_selection(tmp_path, small_data, mini_images):
    from mmselect.features.clip_score import clip_scores
    from mmselect.features.encode import load_image
    from mmselect.models.tiny_clip import build_tiny_clip

    feats = pipeline.extract(small_data, out=tmp_path / "f", model="tiny-llava", features=["clip_score"],
                             image_root=mini_images, feature_params={"clip_score": {"model": "tiny-clip"}}, progress=False)
    scores = feats.column("clip_score")
    has_image = feats.column("n_images") > 0
    assert np.isnan(scores[~has_image]).all() and np.isfinite(scores[has_image]).all()
    # Same values as scoring the first record directly with the same tiny CLIP.
    from mmselect.data import read_dataset

    first = read_dataset(small_data, image_root=mini_images).samples[0]
    model, processor = build_tiny_clip()
    question = " ".join(t.text.replace("<image>", "").strip() for t in first.turns if t.role == "user")
    direct = clip_scores(model, processor, [[load_image(p) for p in first.image_paths]], [question])
    assert abs(direct[0] - scores[0]) < 1e-6
    result = pipeline.select(FeatureSet.load(tmp_path / "f"), method="clip-score", budget=3, out=tmp_path / "o")
    assert result.n_selected == 3 and has_image[result.selected].all()


def test_mmssr_run_with_no_parsable_score_stops_with_an_error(tmp_path, small_data, mini_images, caplog):
    out = tmp_path / "out"
    # A random model's replies are not scores: extraction keeps every one as NaN and warns with
    # examples; selection refuses, rather than select by the fill rule alone.
    with caplog.at_level("WARNING"), pytest.raises(NonFiniteFeaturesError, match="every score is NaN"):
        pipeline.run(small_data, method="mmssr", budget=5, out=out, model="tiny-qwen2-vl",
                     params={"capabilities": ["ocr", "spatial"]}, image_root=mini_images, progress=False)
    feats = FeatureSet.load(out / "features")
    assert {"score_ocr", "score_spatial", "styles"} <= set(feats.column_names)
    manifest = json.loads((out / "features" / "manifest.json").read_text())
    assert manifest["mmssr"]["unparsable_scores_total"] == 2 * feats.n
    assert manifest["mmssr"]["unparsable_scores"] == {"ocr": feats.n, "spatial": feats.n}
    examples = manifest["mmssr"]["unparsable_examples"]
    assert examples and {e["capability"] for e in examples} <= {"ocr", "spatial"}
    assert set(e["key"] for e in examples) <= set(feats.keys)
    warning = [r.getMessage() for r in caplog.records if r.name == "mmselect.features.mmssr"]
    assert len(warning) == 1 and f"ocr: {feats.n}, spatial: {feats.n} of {feats.n}" in warning[0]
    assert repr(examples[0]["reply"]) in warning[0]


def test_user_brought_scores_skip_generation(tmp_path, small_data, mini_images):
    feats = pipeline.extract(small_data, out=tmp_path / "f", model="tiny-llava", features=["tokens"],
                             image_root=mini_images, progress=False)
    rows = ["position,score_ocr,score_logic,styles"]
    for i, position in enumerate(feats.column("position")):
        rows.append(f'{position},{i % 6},{(5 * i) % 6},"yes/no, multi-choice"')
    scores = tmp_path / "scores.csv"
    scores.write_text("\n".join(rows) + "\n")
    result = pipeline.select(tmp_path / "f", method="mmssr", budget=4, out=tmp_path / "o", scores=scores, data=small_data)
    assert result.n_selected == 4
    # Nothing scored above the threshold 0 comes after something that is: picks have positive scores.
    ocr = np.array([i % 6 for i in range(feats.n)], dtype=float)
    logic = np.array([(5 * i) % 6 for i in range(feats.n)], dtype=float)
    assert (np.maximum(ocr, logic)[result.selected] > 0).all()
