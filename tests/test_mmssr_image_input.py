"""mmSSR's scorer sees each image as one base-resolution crop, as the official inference does.

The official ``llava/eval/model_ss.py`` preprocesses an image with the SigLIP processor alone (a
straight resize to the tower's resolution, no tiles); LLaVA-NeXT's single-crop branch projects the
tower features and, under ``spatial_unpad``, appends the ``image_newline`` vector once. Checked here
on the tiny random LLaVA-OneVision model (SigLIP 32 px, patch 8, "full" strategy): every image
becomes (32 / 8)**2 + 1 = 17 embeddings.
"""

from __future__ import annotations

import logging
import os
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from PIL import Image

from mmselect.errors import ConfigError
from mmselect.features import mmssr_image_input as mi
from mmselect.features import mmssr_scoring as ms
from mmselect.features.mmssr_feature import MMSSRScoresFeature

# Tiny OneVision: image_size 32, patch_size 8, vision_feature_select_strategy "full".
PATCHES = (32 // 8) ** 2
OFFICIAL_IMAGE_TOKENS = PATCHES + 1  # + the image_newline row of the single-crop branch


def _image(height, width, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


def _prompt(processor, n_images, text="what is in the picture? a cat"):
    messages = ms.build_messages([("user", "<image>\n" * n_images + text), ("assistant", "a cat")], n_images, "ocr")
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def _greedy(processor, max_new_tokens=5):
    from transformers import GenerationConfig

    return GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=processor.tokenizer.pad_token_id)


@pytest.fixture(scope="module")
def onevision(tiny_onevision):
    return tiny_onevision.model, tiny_onevision.processor


def test_the_tiny_config_is_the_one_the_hand_count_assumes(onevision):
    model, processor = onevision
    vision = model.config.vision_config
    assert (vision.image_size, vision.patch_size, model.config.vision_feature_select_strategy) == (32, 8, "full")
    assert mi.base_resolution(processor.image_processor) == (32, 32)


def test_base_crop_gives_the_official_number_of_image_tokens(onevision):
    model, processor = onevision
    image_id = model.config.image_token_id
    wide = _image(48, 64)
    inputs = mi.base_crop_inputs(model, processor, [_prompt(processor, 1)], [[wide]])
    assert int((inputs["input_ids"] == image_id).sum()) == OFFICIAL_IMAGE_TOKENS == 17
    two = mi.base_crop_inputs(model, processor, [_prompt(processor, 2)], [[wide, _image(20, 90, seed=1)]])
    assert int((two["input_ids"] == image_id).sum()) == 2 * 17
    # The model's own processor adds the any-resolution tiles to the one image: many more tokens.
    tiled = processor(text=[_prompt(processor, 1)], images=[wide], return_tensors="pt")
    assert int((tiled["input_ids"] == image_id).sum()) > 3 * 17
    with pytest.raises(ValueError, match="image placeholders"):
        mi.base_crop_inputs(model, processor, [_prompt(processor, 1)], [[wide, wide]])


def test_the_base_crop_is_the_whole_image_resized_straight_and_normalised(onevision):
    _, processor = onevision
    image_processor = processor.image_processor
    images = [_image(48, 64), _image(90, 20, seed=2)]
    pixels = mi.base_crop_pixel_values(image_processor, images)
    assert tuple(pixels.shape) == (2, 3, 32, 32)
    mean = np.asarray(image_processor.image_mean, dtype=np.float64)[:, None, None]
    std = np.asarray(image_processor.image_std, dtype=np.float64)[:, None, None]
    for image, crop in zip(images, pixels):
        # The official SigLIP preprocess: resize to (32, 32) bicubic, ignoring the aspect ratio; /255; normalise.
        resized = np.asarray(image.resize((32, 32), Image.BICUBIC), dtype=np.float64).transpose(2, 0, 1)
        expected = (resized / 255.0 - mean) / std
        np.testing.assert_allclose(crop.numpy(), expected, atol=1e-5)


def test_inputs_embeds_carry_the_projected_base_crop_and_the_newline(onevision):
    model, processor = onevision
    image = _image(48, 64)
    inputs = mi.base_crop_inputs(model, processor, [_prompt(processor, 1)], [[image]])
    pixels = mi.base_crop_pixel_values(processor.image_processor, [image])
    with torch.no_grad():
        # Computed directly: tower -> last hidden state (vision_feature_layer -1, "full") -> projector.
        hidden = model.model.vision_tower(pixels.to(model.device), output_hidden_states=True).hidden_states[-1]
        projected = model.model.multi_modal_projector(hidden)[0]
        token_embeddings = model.get_input_embeddings()(inputs["input_ids"])[0]
    positions = torch.nonzero(inputs["input_ids"][0] == model.config.image_token_id).flatten()
    assert positions.tolist() == list(range(int(positions[0]), int(positions[0]) + 17))  # one contiguous run
    embeds = inputs["inputs_embeds"][0]
    torch.testing.assert_close(embeds[positions[:PATCHES]], projected)
    torch.testing.assert_close(embeds[positions[PATCHES]], model.model.image_newline.detach())
    text = torch.ones(len(embeds), dtype=torch.bool)
    text[positions] = False
    torch.testing.assert_close(embeds[text], token_embeddings[text])


def test_base_crops_equal_the_models_own_one_crop_branch(onevision):
    # transformers' OneVision gives each image of a multi-image sample one crop (+ image_newline); for
    # square images its pad-to-square is a no-op, so its input must be exactly the base-crop input.
    model, processor = onevision
    images = [_image(40, 40, seed=3), _image(24, 24, seed=4)]
    text = _prompt(processor, 2)
    own = processor(text=[text], images=[images], return_tensors="pt").to(model.device)
    ours = mi.base_crop_inputs(model, processor, [text], [images])
    assert torch.equal(own["input_ids"], ours["input_ids"])
    torch.testing.assert_close(own["pixel_values"][:, 0].cpu(), mi.base_crop_pixel_values(processor.image_processor, images))
    with torch.no_grad():
        own_features = model.model.get_image_features(
            pixel_values=own["pixel_values"], image_sizes=own["image_sizes"], batch_num_images=own["batch_num_images"],
            return_dict=True,
        ).pooler_output
        ours_features = mi.base_crop_features(model, mi.base_crop_pixel_values(processor.image_processor, images))
    torch.testing.assert_close(torch.stack(list(own_features)), ours_features)
    config = _greedy(processor, 6)
    with torch.no_grad():
        reference = model.generate(**own, generation_config=config)[:, own["input_ids"].shape[1]:]
    assert torch.equal(mi.generate_from_base_crops(model, processor, [text], [images], config), reference)


def test_generation_from_inputs_embeds_is_the_greedy_forward_on_the_same_embeddings(onevision):
    model, processor = onevision
    requests = [
        (_prompt(processor, 1, "what colour is the mat?"), [_image(48, 64, seed=5)]),
        (_prompt(processor, 1, "describe"), [_image(30, 70, seed=6)]),
        (_prompt(processor, 2, "compare the two"), [_image(50, 50, seed=7), _image(64, 32, seed=8)]),
    ]
    steps = 5
    config = _greedy(processor, steps)
    batched = mi.generate_from_base_crops(model, processor, [t for t, _ in requests], [i for _, i in requests], config)
    embed = model.get_input_embeddings()
    manual = []
    for text, images in requests:
        inputs = mi.base_crop_inputs(model, processor, [text], [images])
        embeds, picked = inputs["inputs_embeds"], []
        with torch.no_grad():
            for _ in range(steps):  # greedy decoding by full forwards, no cache
                mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
                token = int(model(inputs_embeds=embeds, attention_mask=mask).logits[0, -1].argmax())
                picked.append(token)
                embeds = torch.cat([embeds, embed(torch.tensor([[token]], device=embeds.device))], dim=1)
        manual.append(picked)
    assert batched.tolist() == manual  # left-padded batch == each prompt alone == plain forwards
    assert len({tuple(m) for m in manual}) > 1  # the prompts lead to different tokens


def test_generate_replies_defaults_to_base_crops_and_keeps_the_processor_option(onevision, monkeypatch):
    model, processor = onevision
    requests = [(ms.build_messages([("user", "<image>\nwhat?"), ("assistant", "a cat")], 1, "ocr"), [_image(48, 64)])]
    calls = []
    original = mi.generate_from_base_crops
    monkeypatch.setattr(mi, "generate_from_base_crops", lambda *a, **k: calls.append(1) or original(*a, **k))
    default = ms.generate_replies(model, processor, requests, max_new_tokens=4, progress=False)
    assert calls == [1]
    tiles = ms.generate_replies(model, processor, requests, max_new_tokens=4, progress=False, image_input="processor")
    assert calls == [1]  # the processor path does not build base crops
    assert isinstance(default[0], str) and isinstance(tiles[0], str)
    text = processor.apply_chat_template(requests[0][0], add_generation_prompt=True, tokenize=False)
    expected = processor.tokenizer.batch_decode(
        original(model, processor, [text], [requests[0][1]], _greedy(processor, 4)), skip_special_tokens=True
    )[0].strip()
    assert default == [expected]
    with pytest.raises(ConfigError, match="image_input"):
        ms.generate_replies(model, processor, requests, progress=False, image_input="tiles")


def test_base_crops_batched_equal_one_by_one(onevision):
    model, processor = onevision
    samples = [
        ([("user", "<image>\nwhat is in the picture?"), ("assistant", "a cat")], [_image(48, 64, seed=9)]),
        ([("user", "what is it?"), ("assistant", "a mat")], [_image(70, 30, seed=10)]),
        ([("user", "<image>\ndescribe"), ("assistant", "a red mat")], [_image(40, 40, seed=11).convert("L")]),
        ([("user", "no image here"), ("assistant", "text only")], []),
    ]
    batched = ms.score_samples(model, processor, samples, ["ocr"], batch_size=4, max_new_tokens=4,
                               style_max_new_tokens=4, progress=False)
    single = ms.score_samples(model, processor, samples, ["ocr"], batch_size=1, max_new_tokens=4,
                              style_max_new_tokens=4, progress=False)
    assert batched.replies == single.replies
    assert len(set(batched.replies["ocr"])) > 1


def test_which_families_take_the_base_crop(onevision, tiny_qwen, tiny_llava, caplog, monkeypatch):
    model, _ = onevision
    monkeypatch.setattr(mi, "_warned_fallbacks", set())
    assert mi.effective_image_input(model) == "base_crop"
    assert mi.effective_image_input(model, "processor") == "processor"
    with caplog.at_level(logging.WARNING, logger="mmselect.features.mmssr_image_input"):
        assert mi.effective_image_input(tiny_llava.model) == "processor"  # one crop already: no warning
        assert not caplog.records
        assert mi.effective_image_input(tiny_qwen.model) == "processor"
        assert mi.effective_image_input(tiny_qwen.model) == "processor"
    assert len(caplog.records) == 1 and "qwen2_vl" in caplog.records[0].getMessage()  # once per family
    with pytest.raises(ConfigError, match="base_crop"):
        mi.check_image_input("anyres")


def test_the_image_input_is_part_of_the_feature_cache_key():
    bundle = SimpleNamespace(describe=lambda: {"model": "m"})
    context = SimpleNamespace(bundle=bundle, model=lambda name: bundle)
    default = MMSSRScoresFeature().cache_spec(context)
    tiles = MMSSRScoresFeature(image_input="processor").cache_spec(context)
    assert default["image_input"] == "base_crop" and tiles["image_input"] == "processor"
    assert {k: v for k, v in default.items() if k != "image_input"} == {k: v for k, v in tiles.items() if k != "image_input"}
    with pytest.raises(ConfigError, match="image_input"):
        MMSSRScoresFeature(image_input="tiles").cache_spec(context)
