"""Stage-1 LLaVA-1.5 assembly, on tiny parts built like the real ones (a Llama directory, a CLIP vision
directory, an mlp2x_gelu projector .bin with the official key names)."""

import pytest
import torch
from PIL import Image

from mmselect.errors import ConfigError
from mmselect.models import stage1
from mmselect.models.registry import PRESETS, load_model
from mmselect.models.stage1 import PROJECTOR_KEYS, assemble_stage1, load_projector

TEXT, VISION = 32, 16


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from mmselect.models.tiny import _tokenizer

    root = tmp_path_factory.mktemp("stage1-parts")
    torch.manual_seed(0)
    tokenizer = _tokenizer([])
    llm = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=TEXT, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))
    llm.save_pretrained(root / "llm")
    tokenizer.save_pretrained(root / "llm")
    tower = CLIPVisionModel(CLIPVisionConfig(hidden_size=VISION, intermediate_size=32, num_hidden_layers=3,
                                             num_attention_heads=2, image_size=28, patch_size=14))
    tower.save_pretrained(root / "clip")
    CLIPImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}).save_pretrained(root / "clip")
    projector = {
        "model.mm_projector.0.weight": torch.randn(TEXT, VISION),
        "model.mm_projector.0.bias": torch.randn(TEXT),
        "model.mm_projector.2.weight": torch.randn(TEXT, TEXT),
        "model.mm_projector.2.bias": torch.randn(TEXT),
    }
    torch.save(projector, root / "mm_projector.bin")
    return {"root": root, "llm": llm.eval(), "tower": tower.eval(), "projector": projector, "vocab": len(tokenizer)}


@pytest.fixture(scope="module")
def assembled(parts):
    root = parts["root"]
    return assemble_stage1(str(root / "llm"), str(root / "clip"), str(root / "mm_projector.bin"), root / "stage1",
                           dtype="float32")


def test_assembled_directory_loads_through_the_model_loader(parts, assembled):
    bundle = load_model(str(assembled), device="cpu")
    assert bundle.family == "llava" and bundle.template.name == "vicuna_v1"
    assert type(bundle.model).__name__ == "LlavaForConditionalGeneration"
    projector = bundle.model.model.multi_modal_projector
    for official, name in PROJECTOR_KEYS.items():
        assert torch.equal(projector.get_parameter(name), parts["projector"][official]), official
    # Language model and vision tower are the parts' own weights; new vocabulary rows only append.
    vocab = parts["vocab"]
    assert torch.equal(bundle.model.get_input_embeddings().weight[:vocab], parts["llm"].get_input_embeddings().weight)
    assert torch.equal(bundle.model.lm_head.weight[:vocab], parts["llm"].lm_head.weight)
    # Added rows (<image>, 64-alignment) are the mean of the original rows: deterministic.
    added = bundle.model.get_input_embeddings().weight[vocab:]
    assert added.shape[0] > 0 and (vocab + added.shape[0]) % 64 == 0
    assert torch.allclose(added, parts["llm"].get_input_embeddings().weight.mean(0).expand_as(added), atol=1e-6)
    for name, value in parts["tower"].state_dict().items():
        assert torch.equal(bundle.model.model.vision_tower.state_dict()[name], value), name
    config = bundle.model.config
    assert (config.vision_feature_layer, config.vision_feature_select_strategy) == (-2, "default")
    assert bundle.tokenizer.convert_tokens_to_ids("<image>") == config.image_token_index
    assert (assembled / "STAGE1.md").is_file()


def test_image_features_are_the_stage1_projection_of_clip_layer_minus_two(parts, assembled):
    bundle = load_model(str(assembled), device="cpu")
    image = Image.new("RGB", (40, 20), (200, 30, 30))  # not square: padded with the mean colour first
    pixels = bundle.processor.image_processor(image, return_tensors="pt")["pixel_values"]
    assert tuple(pixels.shape[-2:]) == (28, 28)
    top_row = pixels[0, :, 0, :]  # padding rows: the normalised mean colour, i.e. about zero
    assert float(top_row.abs().max()) < 0.02
    with torch.no_grad():
        hidden = parts["tower"](pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
        w = parts["projector"]
        first = hidden @ w["model.mm_projector.0.weight"].T + w["model.mm_projector.0.bias"]
        expected = torch.nn.functional.gelu(first) @ w["model.mm_projector.2.weight"].T + w["model.mm_projector.2.bias"]
        got = bundle.model.model.get_image_features(pixel_values=pixels)
        got = got.pooler_output if hasattr(got, "pooler_output") else got
        got = torch.cat(list(got)) if isinstance(got, (list, tuple)) else got
    assert torch.allclose(got.reshape(expected.shape), expected, atol=1e-5)


def test_projector_files_are_checked(parts, tmp_path):
    weights = dict(parts["projector"])
    del weights["model.mm_projector.2.bias"]
    torch.save(weights, tmp_path / "missing.bin")
    with pytest.raises(ConfigError, match="no tensor 'model.mm_projector.2.bias'"):
        load_projector(tmp_path / "missing.bin")
    # Anything but tensors (a pickled object) is refused by the weights-only loader.
    torch.save({**parts["projector"], "extra": Image.new("RGB", (1, 1))}, tmp_path / "pickled.bin")
    with pytest.raises(ConfigError, match="not a tensors-only checkpoint"):
        load_projector(tmp_path / "pickled.bin")
    wrong = {k: (torch.randn(TEXT, VISION + 1) if k.endswith("0.weight") else v) for k, v in parts["projector"].items()}
    torch.save(wrong, tmp_path / "wrong.bin")
    root = parts["root"]
    with pytest.raises(ConfigError, match=r"linear_1.weight has shape \(32, 17\)"):
        assemble_stage1(str(root / "llm"), str(root / "clip"), str(tmp_path / "wrong.bin"), tmp_path / "out")


def test_preset_assembles_into_the_cache_on_first_use(parts, tmp_path, monkeypatch):
    root = parts["root"]
    preset = PRESETS["llava-1.5-7b-stage1"]
    assert preset.assemble in stage1.RECIPES and preset.task_preset == "llava-665k"
    monkeypatch.setenv("MMSELECT_CACHE", str(tmp_path))
    monkeypatch.setitem(stage1.RECIPES, preset.assemble,
                        stage1.Stage1Recipe(str(root / "llm"), str(root / "clip"), str(root / "mm_projector.bin")))
    monkeypatch.setattr(stage1, "assemble_stage1", _no_hub_revision(stage1.assemble_stage1))
    bundle = load_model("llava-1.5-7b-stage1", device="cpu", dtype="float32")
    assert bundle.name == "llava-1.5-7b-stage1" and bundle.template.name == "vicuna_v1"
    assert str(tmp_path) in bundle.source and (tmp_path / "stage1").is_dir()


def _no_hub_revision(assemble):
    # Local parts have no hub revision to pass on.
    def wrapped(*args, projector_revision=None, **kwargs):
        return assemble(*args, dtype="float32", **kwargs)

    return wrapped


def test_cli_assembles_a_directory(parts, tmp_path):
    from typer.testing import CliRunner

    from mmselect.cli import app

    root = parts["root"]
    out = tmp_path / "cli-stage1"
    result = CliRunner().invoke(app, ["assemble-stage1", "--llm", str(root / "llm"), "--vision", str(root / "clip"),
                                      "--projector", str(root / "mm_projector.bin"), "--dtype", "float32", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "config.json").is_file() and "--model" in result.output
    again = CliRunner().invoke(app, ["assemble-stage1", "--llm", str(root / "llm"), "--vision", str(root / "clip"),
                                     "--projector", str(root / "mm_projector.bin"), "--out", str(out)])
    assert again.exit_code == 2 and "not empty" in again.output
