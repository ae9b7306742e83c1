"""CLIP score features with a tiny random CLIP: agreement with a by-hand computation through
``get_image_features`` / ``get_text_features``, NaN for text-only records, multi-image means,
truncation, and a save/reload round trip."""

import numpy as np
import pytest
import torch
from PIL import Image

from mmselect.features.clip_score import clip_scores, load_clip
from mmselect.features.store import FeatureSet
from mmselect.methods import get_method
from mmselect.models.tiny_clip import REAL_CLIP_MODEL, TINY_CLIP_MAX_POSITIONS, build_tiny_clip


@pytest.fixture(scope="module")
def tiny_clip():
    return build_tiny_clip(seed=0)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (30 + 10 * i, 45, 3), dtype=np.uint8)) for i in range(3)]


def _unit(output):
    tensor = output if isinstance(output, torch.Tensor) else output.pooler_output
    return torch.nn.functional.normalize(tensor, dim=-1)


def _by_hand(model, processor, image, text):
    with torch.no_grad():
        pixels = processor.image_processor(images=[image], return_tensors="pt")["pixel_values"]
        tokens = processor.tokenizer([text], return_tensors="pt", truncation=True, max_length=TINY_CLIP_MAX_POSITIONS)
        image_emb = _unit(model.get_image_features(pixel_values=pixels))[0]
        text_emb = _unit(model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]))[0]
    return float(image_emb @ text_emb)


def test_clip_scores_match_a_manual_computation(tiny_clip, images):
    model, processor = tiny_clip
    texts = ["a photo of a cat", "text only record", "what is in the picture?", "two images of a dog"]
    entries = [images[0], None, images[1].convert("L"), [images[1], images[2]]]
    scores = clip_scores(model, processor, entries, texts, batch_size=2)
    assert scores.shape == (4,) and scores.dtype == np.float64
    assert scores[0] == pytest.approx(_by_hand(model, processor, images[0], texts[0]), abs=1e-5)
    assert np.isnan(scores[1])
    grey = images[1].convert("L").convert("RGB")
    assert scores[2] == pytest.approx(_by_hand(model, processor, grey, texts[2]), abs=1e-5)
    mean = (_by_hand(model, processor, images[1], texts[3]) + _by_hand(model, processor, images[2], texts[3])) / 2
    assert scores[3] == pytest.approx(mean, abs=1e-5)
    assert np.all(np.abs(scores[[0, 2, 3]]) <= 1.0)
    # the batch size does not change the result; different texts give different scores
    assert np.allclose(clip_scores(model, processor, entries, texts, batch_size=32), scores, atol=1e-5, equal_nan=True)
    other = clip_scores(model, processor, [images[0]], ["red green blue yellow"])
    assert abs(other[0] - scores[0]) > 1e-4


def test_long_texts_are_truncated_to_the_text_positions(tiny_clip, images):
    model, processor = tiny_clip
    long_text = "describe the image in detail " * 30
    ids = processor.tokenizer(long_text)["input_ids"]
    assert len(ids) > TINY_CLIP_MAX_POSITIONS  # would not fit the position table untruncated
    score = clip_scores(model, processor, [images[0]], [long_text])[0]
    assert score == pytest.approx(_by_hand(model, processor, images[0], long_text), abs=1e-5)
    assert np.isnan(clip_scores(model, processor, [None, []], ["a", "b"])).all()
    with pytest.raises(ValueError):
        clip_scores(model, processor, [images[0]], ["a", "b"])


def test_tiny_clip_is_seeded_and_round_trips(tiny_clip, images, tmp_path):
    model, processor = tiny_clip
    again, _ = build_tiny_clip(seed=0)
    other, _ = build_tiny_clip(seed=1)
    state, state_again, state_other = model.state_dict(), again.state_dict(), other.state_dict()
    assert all(torch.equal(state[key], state_again[key]) for key in state)
    assert not all(torch.equal(state[key], state_other[key]) for key in state)
    texts = ["a photo of a cat", "the sky", "a car"]
    entries = [images[0], images[1], [images[2], images[0]]]
    before = clip_scores(model, processor, entries, texts)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded_model, loaded_processor = load_clip(tmp_path)
    assert type(loaded_processor.image_processor).__name__ == "CLIPImageProcessorPil"
    assert np.allclose(clip_scores(loaded_model, loaded_processor, entries, texts), before, atol=1e-6)


def test_clip_score_feature_feeds_the_method(tiny_clip, images):
    model, processor = tiny_clip
    texts = ["a cat", "a dog", "no image", "a tree", "the sky"]
    entries = [images[0], images[1], None, images[2], [images[0], images[1]]]
    scores = clip_scores(model, processor, entries, texts)
    fs = FeatureSet.from_arrays(columns={"clip_score": scores})
    result = get_method("clip-score").select(fs, 2)
    expected = set(np.argsort(-np.nan_to_num(scores, nan=-np.inf), kind="stable")[:2].tolist())
    assert set(np.flatnonzero(result.selected).tolist()) == expected
    assert 2 not in expected
    assert get_method("clip-score").extract_features() == ["clip_score"]
    assert REAL_CLIP_MODEL == "openai/clip-vit-large-patch14"
