"""Presets, loading by path, templates: the wiring real models use, checked offline."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from mmselect.data.records import Sample, Turn
from mmselect.errors import ConfigError
from mmselect.models.registry import PRESETS, load_model
from mmselect.models.templates import TEMPLATES
from mmselect.models.tiny import build_tiny_model

REQUIRED = {
    "llava-1.5-7b": ("llava-hf/llava-1.5-7b-hf", "vicuna_v1"),
    "llava-1.5-13b": ("llava-hf/llava-1.5-13b-hf", "vicuna_v1"),
    "llava-onevision-qwen2-0.5b": ("llava-hf/llava-onevision-qwen2-0.5b-ov-hf", "chatml_image"),
    "llava-onevision-qwen2-7b": ("llava-hf/llava-onevision-qwen2-7b-ov-hf", "chatml_image"),
    "qwen2-vl-2b": ("Qwen/Qwen2-VL-2B-Instruct", "qwen2_vl"),
    "qwen2-vl-7b": ("Qwen/Qwen2-VL-7B-Instruct", "qwen2_vl"),
    "qwen2.5-vl-3b": ("Qwen/Qwen2.5-VL-3B-Instruct", "qwen2_vl"),
    "qwen2.5-vl-7b": ("Qwen/Qwen2.5-VL-7B-Instruct", "qwen2_vl"),
}


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_presets_map_to_hub_ids_and_templates(name):
    preset = PRESETS[name]
    assert (preset.hf_id, preset.template) == REQUIRED[name]
    assert preset.template in TEMPLATES and not preset.tiny


def _sample(turns, images=()):
    return Sample(position=0, key="k", record={}, turns=[Turn(r, t) for r, t in turns], images=list(images),
                  task="t", image_paths=list(images))


def test_vicuna_template_renders_the_llava_training_format():
    sample = _sample([("user", "<image>\nWhat is it?"), ("assistant", "A cat."), ("user", "Colour?"), ("assistant", "Red.")], ["a.png"])
    rendered = TEMPLATES["vicuna_v1"].render([sample])
    system = TEMPLATES["vicuna_v1"].system
    assert rendered.text == f"{system} USER: <image>\nWhat is it? ASSISTANT: A cat.</s>USER: Colour? ASSISTANT: Red.</s>"
    # The training loss covers each answer and its turn-end </s> (preprocess_v1).
    assert [rendered.text[s:e] for s, e in rendered.answer_spans] == ["A cat.</s>", "Red.</s>"]
    assert rendered.image_paths == ["a.png"]


def test_qwen_template_and_image_without_placeholder():
    sample = _sample([("system", "Be brief."), ("user", "What is it?"), ("assistant", "A dog.")], ["b.png"])
    rendered = TEMPLATES["qwen2_vl"].render([sample])
    assert rendered.text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"
        "What is it?<|im_end|>\n<|im_start|>assistant\nA dog.<|im_end|>\n"
    )
    # Answer only (IFD's denominator): no instruction, no image.
    alone = TEMPLATES["qwen2_vl"].render([sample], include_user=False, include_images=False)
    assert "What is it?" not in alone.text and alone.image_paths == []
    assert [alone.text[s:e] for s, e in alone.answer_spans] == ["A dog.<|im_end|>\n"]


def test_demonstration_answers_are_context_not_targets():
    demo = _sample([("user", "q1"), ("assistant", "a1")])
    query = _sample([("user", "q2"), ("assistant", "a2")])
    rendered = TEMPLATES["vicuna_v1"].render([demo, query], label=[False, True])
    assert [rendered.text[s:e] for s, e in rendered.answer_spans] == ["a2</s>"]
    assert rendered.text.index("a1") < rendered.text.index("q2")


@pytest.mark.parametrize("tiny,family,template", [
    ("tiny-llava", "llava", "vicuna_v1"), ("tiny-qwen2-vl", "qwen2-vl", "qwen2_vl"),
    ("tiny-qwen2.5-vl", "qwen2.5-vl", "qwen2_vl"), ("tiny-llava-onevision", "llava-onevision", "chatml_image"),
])
def test_local_directory_loads_through_auto_classes(tmp_path, tiny, family, template):
    directory = build_tiny_model(tiny, tmp_path / tiny)
    bundle = load_model(str(directory), device="cpu")
    assert bundle.family == family and bundle.template.name == template
    assert hasattr(bundle.processor, "image_processor")  # never a bare tokenizer
    assert bundle.describe()["dtype"] == "float32"


def test_tiny_models_are_deterministic(tmp_path):
    import torch

    first = load_model(str(build_tiny_model("tiny-llava", tmp_path / "a")))
    second = load_model(str(build_tiny_model("tiny-llava", tmp_path / "b")))
    for (name, a), (_, b) in zip(first.model.state_dict().items(), second.model.state_dict().items()):
        assert torch.equal(a, b), name


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(ConfigError, match="not a preset"):
        load_model("llava-9000")


def _pin_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("pin_revisions", Path(__file__).resolve().parents[1] / "scripts/pin_revisions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _FakeHub:
    def __init__(self, commits):
        self.commits = commits

    def model_info(self, hf_id):
        return SimpleNamespace(sha=self.commits[hf_id])


def test_pin_script_writes_full_commits_that_presets_then_load(tmp_path, monkeypatch):
    from mmselect.models import registry

    script = _pin_script()
    hf_ids = sorted({p.hf_id for p in PRESETS.values() if not p.tiny})
    commits = {hf_id: f"{i:040x}" for i, hf_id in enumerate(hf_ids, start=1)}
    path = tmp_path / "revisions.json"
    path.write_text("{}")
    hub = _FakeHub(commits)
    assert script.main(["--check"], api=hub, path=path) == 1  # nothing pinned yet
    assert script.main([], api=hub, path=path) == 0
    assert registry.load_revisions(path) == commits
    assert script.main(["--check"], api=hub, path=path) == 0
    assert script.main(["--check"], api=_FakeHub({**commits, hf_ids[0]: "f" * 40}), path=path) == 1
    # A preset registered with pins in force carries its commit; an explicit revision wins.
    monkeypatch.setattr(registry, "_PINNED", commits)
    monkeypatch.setattr(registry, "PRESETS", dict(registry.PRESETS))
    pinned = registry.register_preset(registry.ModelPreset("pinned", hf_ids[0], "llava", "vicuna_v1"))
    explicit = registry.register_preset(registry.ModelPreset("explicit", hf_ids[0], "llava", "vicuna_v1", revision="main"))
    assert pinned.revision == commits[hf_ids[0]] and explicit.revision == "main"


def test_revisions_file_refuses_anything_but_full_commits(tmp_path):
    from mmselect.models.registry import REVISIONS_FILE, load_revisions

    load_revisions(REVISIONS_FILE)  # the shipped file is valid
    for bad in ("main", "a272c74", "A" * 40, 7):
        path = tmp_path / "revisions.json"
        path.write_text(json.dumps({"llava-hf/llava-1.5-7b-hf": bad}))
        with pytest.raises(ConfigError, match="40-hex"):
            load_revisions(path)
