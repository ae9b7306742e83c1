"""mmSSR prompts, reply parsing and batched generation with tiny random Qwen2-VL and LLaVA models."""

from __future__ import annotations

import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from PIL import Image

from mmselect.features import mmssr_scoring as ms

# --- prompts ------------------------------------------------------------------------------------------


def test_question_prefix_is_a_prefix_not_a_character_set():
    # The official strip('Question: ') turns "...station" into "...sta" and eats a leading "Q".
    text = ms.format_conversation([("user", "<image>\nHow far is the station"), ("assistant", "Two stops.")])
    assert text == "Question: How far is the station Answer: Two stops."
    text = ms.format_conversation([("user", "Question: Quiet question?"), ("assistant", "Yes")])
    assert text == "Question: Quiet question? Answer: Yes"
    text = ms.format_conversation([("user", "<image>\nimage quality: is it noisy"), ("assistant", "no")])
    assert text.startswith("Question: image quality: is it noisy Answer:")


def test_hint_turns_are_kept_verbatim_and_turns_are_joined_by_lines():
    turns = [
        ("system", "ignored"),
        ("user", "<image>\nHint: look closely.\nQuestion: what colour?"),
        ("assistant", "Red."),
        ("user", "And the size?"),
        ("assistant", "Small."),
        ("user", "Last one"),
    ]
    assert ms.format_conversation(turns) == (
        "Hint: look closely.\nQuestion: what colour? Answer: Red.\n"
        "Question: And the size? Answer: Small.\n"
        "Question: Last one Answer: "
    )


def test_image_placeholders_are_removed_as_placeholders():
    assert ms.strip_image_placeholders("<image>\nWhat is it?") == ("What is it?", 1)
    assert ms.strip_image_placeholders("What is it?\n<image>") == ("What is it?", 1)
    assert ms.strip_image_placeholders("left <image> right") == ("left right", 1)
    assert ms.strip_image_placeholders("<image><image>\nmage") == ("mage", 2)
    assert ms.strip_image_placeholders("no placeholder <imag") == ("no placeholder <imag", 0)


def test_messages_layout_and_tails():
    messages = ms.build_messages([("user", "<image>\nWhat?"), ("assistant", "A cat.")], 2, "ocr")
    assert messages[0] == {"role": "system", "content": [{"type": "text", "text": "You are a helpful assistant."}]}
    user = messages[1]
    assert user["role"] == "user"
    assert user["content"][:2] == [{"type": "image"}, {"type": "image"}]
    assert user["content"][2]["text"] == (
        "Question: What? Answer: A cat.\nOn a scale of 0 to 5, how do you rate the helpfulness of the VQA "
        "instance in training a Multimodal Large Language Model for optical character recognition?"
    )
    style = ms.build_messages([("user", "Q")], 0, "style")[1]["content"]
    assert style == [
        {
            "type": "text",
            "text": "Question: Q Answer: \nInteraction style candidates: [multi-choice, coordinate, yes/no, "
            "word/short-phrase, short description, detailed description, comparison, "
            "chain-of-thought (step-by-step), specified style]\nStyles: ",
        }
    ]
    assert len(ms.CAPABILITIES) == 14 and len(ms.STYLE_CANDIDATES) == 9
    assert ms.capability_name("logical deduction") == "logic"
    assert ms.resolve_capabilities({"medical": "medical imaging"}) == {"medical": "medical imaging"}
    assert ms.capability_name("Medical Imaging!") == "medical_imaging"
    with pytest.raises(ValueError):
        ms.format_conversation([("narrator", "x")])


def test_parse_score_and_styles():
    assert ms.parse_score("3") == 3.0
    assert ms.parse_score(" 5\n") == 5.0
    assert ms.parse_score("0") == 0.0
    for bad in ("6", "-1", "3.5", "three", "", "3/5", "1_0", None):
        assert math.isnan(ms.parse_score(bad)), bad
    assert ms.parse_styles("yes/no, multi-choice,yes/no , ") == (["yes/no", "multi-choice"], 0)
    assert ms.parse_styles("chain-of-thought (step-by-step), poetry") == (
        ["chain-of-thought (step-by-step)", "poetry"],
        1,
    )
    assert ms.parse_styles("") == ([], 0)


# --- tiny offline models ---------------------------------------------------------------------------------
_CORPUS = [
    "Question: what is in the picture? Answer: a cat on a red mat. 0 1 2 3 4 5",
    ms.build_prompt_text([("user", "what is it?"), ("assistant", "a cat")], "spatial"),
    ms.build_prompt_text([("user", "what is it?"), ("assistant", "a cat")], "style"),
    "You are a helpful assistant. system user assistant",
]


def _tokenizer(extra):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<pad>", "<unk>", "<s>", "</s>", *extra],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_CORPUS * 50, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>",
        additional_special_tokens=list(extra),
    )


def _chat_template(image_text: str) -> str:
    return (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
        "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}" + image_text + "{% else %}"
        "{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )


@pytest.fixture(scope="module")
def tiny_qwen():
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    from transformers.processing_utils import ProcessorMixin

    class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            self.image_token, self.video_token = "<|image_pad|>", "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    vision = ["<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"]
    tok = _tokenizer(vision + ["<|im_start|>", "<|im_end|>"])
    ids = dict(
        zip(
            ["image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"],
            tok.convert_tokens_to_ids(vision),
        )
    )
    processor = ImageOnlyQwen2VLProcessor(
        Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=112 * 112),
        tok,
        chat_template=_chat_template("<|vision_start|><|image_pad|><|vision_end|>"),
    )
    torch.manual_seed(0)
    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            rope_parameters={"rope_type": "default", "rope_theta": 1e4, "mrope_section": [2, 3, 3]},
        ),
        vision_config=dict(depth=2, embed_dim=32, hidden_size=64, num_heads=4, mlp_ratio=2),
        **ids,
    )
    model = Qwen2VLForConditionalGeneration(config).eval()
    return model, processor


@pytest.fixture(scope="module")
def tiny_llava():
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tok = _tokenizer(["<image>", "<|im_start|>", "<|im_end|>"])
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tok, patch_size=8, vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=_chat_template("<image>"),
    )
    torch.manual_seed(1)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8
        ),
        text_config=LlamaConfig(
            vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
        ),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        image_seq_length=16,
    )
    model = LlavaForConditionalGeneration(config).eval()
    return model, processor


def _images(count, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (48 + 8 * i, 64, 3), dtype=np.uint8)) for i in range(count)]


def _samples():
    images = _images(5)
    return [
        ([("user", "<image>\nwhat is in the picture?"), ("assistant", "a cat")], [images[0]]),
        ([("user", "<image>\nHint: red.\nwhat colour is the mat?"), ("assistant", "red"),
          ("user", "and the cat?"), ("assistant", "a cat on a red mat")], [images[1]]),
        ([("user", "what is it?"), ("assistant", "a mat")], [images[2]]),
        ([("user", "<image>\ndescribe"), ("assistant", "a red mat, a cat, a picture of a cat on a red mat")],
         [images[3]]),
        ([("user", "<image>\nwhere?"), ("assistant", "on the mat")], [images[4].convert("L")]),  # greyscale
    ]


def _requests(task="spatial"):
    return [(ms.build_messages(turns, len(images), task), images) for turns, images in _samples()]


@pytest.mark.parametrize("which", ["tiny_qwen", "tiny_llava"])
def test_generate_replies_batched_equals_one_by_one(which, request):
    model, processor = request.getfixturevalue(which)
    requests = [(m, [im.convert("RGB") for im in ims]) for m, ims in _requests()]
    batched = ms.generate_replies(model, processor, requests, batch_size=3, max_new_tokens=6, progress=False)
    single = ms.generate_replies(model, processor, requests, batch_size=1, max_new_tokens=6, progress=False)
    assert len(batched) == len(requests) and all(isinstance(r, str) for r in batched)
    assert batched == single
    assert len(set(batched)) > 1  # replies differ between requests (the test is not vacuous)
    assert processor.tokenizer.padding_side == "right"  # restored after left padding
    assert ms.generate_replies(model, processor, [], progress=False) == []


def test_generate_replies_keeps_request_order(tiny_qwen):
    model, processor = tiny_qwen
    requests = [(m, [im.convert("RGB") for im in ims]) for m, ims in _requests()]
    forward = ms.generate_replies(model, processor, requests, batch_size=2, max_new_tokens=5, progress=True)
    backward = ms.generate_replies(model, processor, requests[::-1], batch_size=2, max_new_tokens=5, progress=False)
    assert backward == forward[::-1]


def test_generate_replies_refuses_unusable_processors(tiny_qwen):
    model, processor = tiny_qwen
    requests = _requests()[:1]
    with pytest.raises(ValueError, match="chat_template"):
        ms.generate_replies(model, processor.tokenizer, requests, progress=False)  # tokenizer without template
    tokenizer = processor.tokenizer
    tokenizer.chat_template = processor.chat_template
    try:
        with pytest.raises(ValueError, match="cannot process images"):
            ms.generate_replies(model, tokenizer, requests, progress=False)
    finally:
        tokenizer.chat_template = None


def test_score_samples_with_tiny_model(tiny_qwen, tmp_path):
    model, processor = tiny_qwen
    samples = _samples()
    image_path = tmp_path / "img.png"
    _images(1, seed=3)[0].save(image_path)
    samples.append(([("user", "<image>\nfrom a file"), ("assistant", "a cat")], [str(image_path)]))
    samples.append(([("user", "<image>\nbroken"), ("assistant", "x")], [str(tmp_path / "missing.png")]))
    out = ms.score_samples(
        model, processor, samples, ["spatial", "optical character recognition"], batch_size=4, max_new_tokens=4,
        style_max_new_tokens=6, progress=False,
    )
    n = len(samples)
    assert set(out.columns) == {"score_spatial", "score_ocr", "styles"}
    for name in ("spatial", "ocr"):
        column = out.columns[f"score_{name}"]
        assert column.shape == (n,) and column.dtype == float
        assert len(out.replies[name]) == n
        # Every value is the parse of its reply; the count of NaN is reported.
        expected = np.array([ms.parse_score(r) for r in out.replies[name]])
        expected[-1] = np.nan  # unreadable image
        assert np.array_equal(column, expected, equal_nan=True)
        assert out.stats["unparsable_scores"][name] == int(np.isnan(column).sum())
    assert out.stats["image_errors"] == 1 and out.stats["image_error_examples"][0]["position"] == n - 1
    assert out.replies["spatial"][-1] == ""
    assert len(out.columns["styles"]) == n and out.columns["styles"][-1] == []
    assert all(isinstance(s, list) for s in out.columns["styles"])
    # A shard scored alone gives the same values (greedy, independent shards).
    shard = ms.score_samples(model, processor, samples[2:4], ["spatial"], styles=False, batch_size=4,
                             max_new_tokens=4, progress=False)
    assert np.array_equal(shard.columns["score_spatial"], out.columns["score_spatial"][2:4], equal_nan=True)
    assert "styles" not in shard.columns


def test_score_samples_counts_unparsable_replies(monkeypatch):
    scripted = {"spatial": ["3", "x", "7", " 0 "], "style": ["yes/no, haiku", "", "multi-choice", "comparison"]}

    def fake_generate(model, processor, requests, *, description="", **kwargs):
        assert len(requests) == 4
        return list(scripted["spatial" if description.endswith(ms.CAPABILITIES["spatial"]) else "style"])

    monkeypatch.setattr(ms, "generate_replies", fake_generate)
    samples = [([("user", "q"), ("assistant", "a")], [])] * 4
    out = ms.score_samples(None, None, samples, ["spatial"], progress=False)
    assert np.array_equal(out.columns["score_spatial"], [3, np.nan, np.nan, 0], equal_nan=True)
    assert out.stats["unparsable_scores"] == {"spatial": 2}
    assert list(out.columns["styles"]) == [["yes/no", "haiku"], [], ["multi-choice"], ["comparison"]]
    assert out.stats["unknown_styles"] == 1 and out.stats["unknown_style_examples"] == ["haiku"]
    assert out.stats["styles_empty"] == 1


def test_presets():
    assert ms.SCORER_MODEL == "mengyaolyu/mmssr-7b-scorer"
    assert ms.STYLER_MODEL == "mengyaolyu/mmssr-7b-styler"
