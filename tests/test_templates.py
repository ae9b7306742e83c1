"""Each template against its family's official training format, written out by hand.

LLaVA-1.5: ``preprocess_multimodal`` moves every ``<image>`` to the front of the turn ("<image>\\n"
+ stripped text), ``conv_vicuna_v1`` joins "SYSTEM USER: q ASSISTANT: a</s>", and ``preprocess_v1``
keeps each answer and its ``</s>`` in the loss. LLaVA-OneVision (LLaVA-NeXT ``preprocess_multimodal``
/ ``preprocess_qwen``): a single placeholder moves to the front, several stay in place; ChatML with
the literal ``<image>``. Qwen2-VL fine-tuning: the text is split at the placeholders, the pieces
stripped, images kept in place; ``<|im_end|>\\n`` of each answer is in the loss.
"""

import dataclasses
import logging
from pathlib import Path

import pytest

from mmselect.data.records import Sample, Turn
from mmselect.errors import ConfigError
from mmselect.features.encode import encode, load_image
from mmselect.models.chat_template import ProcessorChatTemplate
from mmselect.models.templates import TEMPLATES, count_moved_placeholders, resolve_template

VICUNA = (
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives "
    "helpful, detailed, and polite answers to the human's questions."
)
QWEN_SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
VISION = "<|vision_start|><|image_pad|><|vision_end|>"
MINI_IMAGES = Path(__file__).resolve().parents[1] / "examples" / "mini" / "images"


def _sample(turns, images=()):
    return Sample(position=0, key="k", record={}, turns=[Turn(r, t) for r, t in turns], images=list(images),
                  task="t", image_paths=list(images))


ONE = ["a.png"]
TWO = ["a.png", "b.png"]
CASES = {
    "before": ([("user", "<image>\nWhat is the man holding?"), ("assistant", "A bat.")], ONE),
    "after": ([("user", "What is the man holding?\n<image>"), ("assistant", "A bat.")], ONE),
    "middle": ([("user", "Look at <image> and name the animal."), ("assistant", "A cat.")], ONE),
    "two_front": ([("user", "<image>\n<image>\nWhich is larger?"), ("assistant", "The first.")], TWO),
    "two_inside": ([("user", "Compare <image> with <image>."), ("assistant", "Same.")], TWO),
    "multi_turn": ([("user", "Q1?\n<image>"), ("assistant", "A1."), ("user", "Q2?"), ("assistant", "A2.")], ONE),
    "no_placeholder": ([("user", "What is it?"), ("assistant", "A dog.")], ONE),
    "text_only": ([("user", "Add 2 and 3."), ("assistant", "5.")], []),
}

# (text, answer spans, placeholders moved) written from each official format.
EXPECTED = {
    "vicuna_v1": {
        "before": (f"{VICUNA} USER: <image>\nWhat is the man holding? ASSISTANT: A bat.</s>", ["A bat.</s>"], 0),
        "after": (f"{VICUNA} USER: <image>\nWhat is the man holding? ASSISTANT: A bat.</s>", ["A bat.</s>"], 1),
        # The placeholder is removed where it was (leaving two spaces), the text stripped, the image put first.
        "middle": (f"{VICUNA} USER: <image>\nLook at  and name the animal. ASSISTANT: A cat.</s>", ["A cat.</s>"], 1),
        "two_front": (f"{VICUNA} USER: <image>\n<image>\nWhich is larger? ASSISTANT: The first.</s>", ["The first.</s>"], 0),
        "two_inside": (f"{VICUNA} USER: <image>\n<image>\nCompare  with . ASSISTANT: Same.</s>", ["Same.</s>"], 1),
        "multi_turn": (f"{VICUNA} USER: <image>\nQ1? ASSISTANT: A1.</s>USER: Q2? ASSISTANT: A2.</s>", ["A1.</s>", "A2.</s>"], 1),
        "no_placeholder": (f"{VICUNA} USER: <image>\nWhat is it? ASSISTANT: A dog.</s>", ["A dog.</s>"], 0),
        "text_only": (f"{VICUNA} USER: Add 2 and 3. ASSISTANT: 5.</s>", ["5.</s>"], 0),
    },
    "chatml_image": {
        "before": (f"{QWEN_SYSTEM}<|im_start|>user\n<image>\nWhat is the man holding?<|im_end|>\n"
                   "<|im_start|>assistant\nA bat.<|im_end|>\n", ["A bat.<|im_end|>\n"], 0),
        "after": (f"{QWEN_SYSTEM}<|im_start|>user\n<image>\nWhat is the man holding?<|im_end|>\n"
                  "<|im_start|>assistant\nA bat.<|im_end|>\n", ["A bat.<|im_end|>\n"], 1),
        "middle": (f"{QWEN_SYSTEM}<|im_start|>user\n<image>\nLook at  and name the animal.<|im_end|>\n"
                   "<|im_start|>assistant\nA cat.<|im_end|>\n", ["A cat.<|im_end|>\n"], 1),
        "two_front": (f"{QWEN_SYSTEM}<|im_start|>user\n<image>\n<image>\nWhich is larger?<|im_end|>\n"
                      "<|im_start|>assistant\nThe first.<|im_end|>\n", ["The first.<|im_end|>\n"], 0),
        # Several placeholders stay where the record has them (LLaVA-NeXT only moves a single one).
        "two_inside": (f"{QWEN_SYSTEM}<|im_start|>user\nCompare <image> with <image>.<|im_end|>\n"
                       "<|im_start|>assistant\nSame.<|im_end|>\n", ["Same.<|im_end|>\n"], 0),
        "multi_turn": (f"{QWEN_SYSTEM}<|im_start|>user\n<image>\nQ1?<|im_end|>\n<|im_start|>assistant\nA1.<|im_end|>\n"
                       "<|im_start|>user\nQ2?<|im_end|>\n<|im_start|>assistant\nA2.<|im_end|>\n",
                       ["A1.<|im_end|>\n", "A2.<|im_end|>\n"], 1),
        "no_placeholder": (f"{QWEN_SYSTEM}<|im_start|>user\n<image>\nWhat is it?<|im_end|>\n"
                           "<|im_start|>assistant\nA dog.<|im_end|>\n", ["A dog.<|im_end|>\n"], 0),
        "text_only": (f"{QWEN_SYSTEM}<|im_start|>user\nAdd 2 and 3.<|im_end|>\n<|im_start|>assistant\n5.<|im_end|>\n",
                      ["5.<|im_end|>\n"], 0),
    },
    "qwen2_vl": {
        "before": (f"{QWEN_SYSTEM}<|im_start|>user\n{VISION}What is the man holding?<|im_end|>\n"
                   "<|im_start|>assistant\nA bat.<|im_end|>\n", ["A bat.<|im_end|>\n"], 0),
        "after": (f"{QWEN_SYSTEM}<|im_start|>user\nWhat is the man holding?{VISION}<|im_end|>\n"
                  "<|im_start|>assistant\nA bat.<|im_end|>\n", ["A bat.<|im_end|>\n"], 0),
        "middle": (f"{QWEN_SYSTEM}<|im_start|>user\nLook at{VISION}and name the animal.<|im_end|>\n"
                   "<|im_start|>assistant\nA cat.<|im_end|>\n", ["A cat.<|im_end|>\n"], 0),
        "two_front": (f"{QWEN_SYSTEM}<|im_start|>user\n{VISION}{VISION}Which is larger?<|im_end|>\n"
                      "<|im_start|>assistant\nThe first.<|im_end|>\n", ["The first.<|im_end|>\n"], 0),
        "two_inside": (f"{QWEN_SYSTEM}<|im_start|>user\nCompare{VISION}with{VISION}.<|im_end|>\n"
                       "<|im_start|>assistant\nSame.<|im_end|>\n", ["Same.<|im_end|>\n"], 0),
        "multi_turn": (f"{QWEN_SYSTEM}<|im_start|>user\nQ1?{VISION}<|im_end|>\n<|im_start|>assistant\nA1.<|im_end|>\n"
                       "<|im_start|>user\nQ2?<|im_end|>\n<|im_start|>assistant\nA2.<|im_end|>\n",
                       ["A1.<|im_end|>\n", "A2.<|im_end|>\n"], 0),
        "no_placeholder": (f"{QWEN_SYSTEM}<|im_start|>user\n{VISION}What is it?<|im_end|>\n"
                           "<|im_start|>assistant\nA dog.<|im_end|>\n", ["A dog.<|im_end|>\n"], 0),
        "text_only": (f"{QWEN_SYSTEM}<|im_start|>user\nAdd 2 and 3.<|im_end|>\n<|im_start|>assistant\n5.<|im_end|>\n",
                      ["5.<|im_end|>\n"], 0),
    },
}


@pytest.mark.parametrize("template", sorted(EXPECTED))
@pytest.mark.parametrize("case", sorted(CASES))
def test_rendering_matches_the_official_format(template, case):
    turns, images = CASES[case]
    rendered = TEMPLATES[template].render([_sample(turns, images)])
    text, answers, moved = EXPECTED[template][case]
    assert rendered.text == text
    assert [rendered.text[s:e] for s, e in rendered.answer_spans] == answers
    assert rendered.image_paths == images
    assert rendered.placeholders_moved == moved
    assert rendered.placeholders_added == (case == "no_placeholder")


def test_moved_records_are_counted():
    samples = [_sample(*CASES[c]) for c in ("before", "after", "middle", "two_front", "multi_turn", "text_only")]
    assert count_moved_placeholders(TEMPLATES["vicuna_v1"], samples) == 3
    assert count_moved_placeholders(TEMPLATES["chatml_image"], samples) == 3
    assert count_moved_placeholders(TEMPLATES["qwen2_vl"], samples) == 0


def test_images_follow_placeholder_order_across_turns():
    sample = _sample([("user", "First <image>"), ("assistant", "x."), ("user", "<image>\nSecond"), ("assistant", "y.")], TWO)
    for template in TEMPLATES.values():
        rendered = template.render([sample])
        assert rendered.image_paths == TWO
    vicuna = TEMPLATES["vicuna_v1"].render([sample]).text
    assert vicuna.endswith("USER: <image>\nFirst ASSISTANT: x.</s>USER: <image>\nSecond ASSISTANT: y.</s>")


def test_answer_only_view_keeps_the_turn_end_in_the_span():
    sample = _sample(*CASES["after"])
    alone = TEMPLATES["vicuna_v1"].render([sample], include_user=False, include_images=False)
    assert alone.text == f"{VICUNA} ASSISTANT: A bat.</s>" and alone.image_paths == []
    assert [alone.text[s:e] for s, e in alone.answer_spans] == ["A bat.</s>"]


def _image_sample(turns, n_images=1):
    paths = [str(p) for p in sorted((MINI_IMAGES / "digits").glob("*.png"))[:n_images]]
    return _sample(turns, paths)


def _answer_text(bundle, rendered, sample_images):
    batch = encode(bundle, [rendered], [[load_image(p) for p in sample_images]], 4096)
    ids = batch.inputs["input_ids"][0][batch.answer[0]]
    return bundle.tokenizer.decode(ids), int(batch.answer[0].sum())


def test_answer_mask_includes_the_turn_end_and_inner_newlines_on_qwen(tiny_qwen):
    sample = _image_sample([("user", "What digit?\n<image>"), ("assistant", "It is\nseven."), ("user", "Odd?"), ("assistant", "Yes.")])
    rendered = tiny_qwen.template.render([sample])
    decoded, _ = _answer_text(tiny_qwen, rendered, rendered.image_paths)
    # Qwen's fine-tuning labels cover the answer, <|im_end|> and the newline after it.
    assert decoded == "It is\nseven.<|im_end|>\nYes.<|im_end|>\n"


def test_answer_mask_includes_eos_on_llava(tiny_llava):
    sample = _image_sample([("user", "What digit?\n<image>"), ("assistant", "Seven.")])
    rendered = tiny_llava.template.render([sample])
    assert rendered.moved_placeholder
    batch = encode(tiny_llava, [rendered], [[load_image(p) for p in rendered.image_paths]], 4096)
    ids = batch.inputs["input_ids"][0][batch.answer[0]].tolist()
    assert tiny_llava.tokenizer.decode(ids).replace(" ", "") == "Seven.</s>"
    # One more target per turn than the answer's own tokens: the </s> that ends the sequence.
    assert ids[-1] == tiny_llava.tokenizer.eos_token_id and ids.count(tiny_llava.tokenizer.eos_token_id) == 1
    assert bool(batch.answer[0, int(batch.attention[0].sum()) - 1])


# --- the processor's own chat template ----------------------------------------------------------


def test_processor_chat_template_renders_through_apply_chat_template(tiny_qwen):
    template = ProcessorChatTemplate(tiny_qwen.processor)
    sample = _sample([("user", "What is the man holding?\n<image>"), ("assistant", "A bat."), ("user", "Colour?"),
                      ("assistant", "Brown.")], ONE)
    rendered = template.render([sample])
    # The tiny processor's ChatML template (no default system prompt), images where the placeholder was.
    assert rendered.text == (
        f"<|im_start|>user\nWhat is the man holding?{VISION}<|im_end|>\n<|im_start|>assistant\nA bat.<|im_end|>\n"
        "<|im_start|>user\nColour?<|im_end|>\n<|im_start|>assistant\nBrown.<|im_end|>\n"
    )
    # Each answer with the turn-end marker the template writes after it (trailing whitespace excluded).
    assert [rendered.text[s:e] for s, e in rendered.answer_spans] == ["A bat.<|im_end|>", "Brown.<|im_end|>"]
    assert rendered.image_paths == ONE


def test_processor_chat_template_masks_on_a_real_encode(tiny_llava):
    bundle = dataclasses.replace(tiny_llava, template=ProcessorChatTemplate(tiny_llava.processor))
    sample = _image_sample([("user", "<image>\nWhat digit?"), ("assistant", "Seven."), ("user", "Odd?"), ("assistant", "Yes.")])
    rendered = bundle.template.render([sample])
    assert rendered.text == "USER: <image>\nWhat digit? ASSISTANT: Seven.</s>USER: Odd? ASSISTANT: Yes.</s>"
    decoded, _ = _answer_text(bundle, rendered, rendered.image_paths)
    assert decoded.replace(" ", "") == "Seven.</s>Yes.</s>"


def test_demonstrations_are_context_under_the_processor_template(tiny_qwen):
    template = ProcessorChatTemplate(tiny_qwen.processor)
    demo, query = _sample([("user", "q1"), ("assistant", "a1")]), _sample([("user", "q2"), ("assistant", "a2")])
    rendered = template.render([demo, query], label=[False, True])
    assert [rendered.text[s:e] for s, e in rendered.answer_spans] == ["a2<|im_end|>"]


def test_template_by_name_and_unknown_names(tiny_qwen):
    assert resolve_template("vicuna_v1", family="qwen2-vl", processor=tiny_qwen.processor) is TEMPLATES["vicuna_v1"]
    assert resolve_template(None, family="qwen2.5-vl", processor=tiny_qwen.processor) is TEMPLATES["qwen2_vl"]
    assert resolve_template("chat_template", family="qwen2-vl", processor=tiny_qwen.processor).name == "chat_template"
    with pytest.raises(ConfigError, match="unknown template 'vicuna'.*chat_template"):
        resolve_template("vicuna", family="llava", processor=tiny_qwen.processor)


def test_unknown_family_warns_and_names_the_template(tiny_qwen, caplog):
    with caplog.at_level(logging.WARNING, logger="mmselect.models.templates"):
        template = resolve_template(None, family="idefics3", processor=tiny_qwen.processor)
    assert template.name == "chat_template"
    assert "'idefics3'" in caplog.text and "chat template" in caplog.text and "--template" in caplog.text


def test_unknown_family_without_a_chat_template_is_a_clear_error(tiny_qwen):
    processor = dataclasses.make_dataclass("BareProcessor", [("chat_template", object, None), ("tokenizer", object, None)])()
    with pytest.raises(ConfigError, match="no chat template.*--template"):
        resolve_template(None, family="idefics3", processor=processor)


def test_load_model_takes_a_template_name(tmp_path):
    from mmselect.models.registry import load_model

    bundle = load_model("tiny-qwen2-vl", device="cpu", template="chat_template")
    assert bundle.template.name == "chat_template" and bundle.load_args["template"] == "chat_template"
    assert bundle.describe()["template"] == "chat_template"


def test_moved_count_equals_the_renderings(mini_data, mini_images):
    from mmselect.data import read_dataset

    samples = read_dataset(mini_data, image_root=mini_images).samples
    moved = [_sample([("user", "What digit?\n<image>"), ("assistant", "7.")], ONE), _sample(*CASES["middle"])]
    samples = list(samples) + moved
    for template in TEMPLATES.values():
        rendered = sum(template.render([s]).moved_placeholder for s in samples)
        assert count_moved_placeholders(template, samples) == rendered
    assert count_moved_placeholders(TEMPLATES["vicuna_v1"], samples) == 2  # mini puts <image> first everywhere
