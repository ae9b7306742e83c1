"""The forward FLOP count: a tiny config worked by hand, and parity with torch's FLOP counter on
real forward passes of the tiny models."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from mmselect.flops import count_forward_flops, datasheet_peak_tflops


def _tiny_llava_config():
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    return LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=4, intermediate_size=8, num_hidden_layers=1,
                                       num_attention_heads=1, image_size=4, patch_size=2),
        text_config=LlamaConfig(hidden_size=8, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2,
                                num_key_value_heads=1, vocab_size=10),
        vision_feature_layer=-2,
    )


def test_count_on_a_config_worked_by_hand():
    # Decoder layer: head size 8/2 = 4, width 2*4 = 8; q 8*8 + k,v 2*8*(1*4) + o 8*8 = 192 weights,
    # gated MLP 3*8*16 = 384: 576 weights. Two samples of 3 and 5 tokens, one image (4 tokens).
    count = count_forward_flops(_tiny_llava_config(), [3, 5], [4], lm_head_tokens=2)
    assert count.language == 2 * 576 * 2 * 8 == 18432
    # Attention: 4 * layers * width * seq^2 per sample (decoder) + 4 * 1 * 4 * 5^2 (vision, 4 patches + class token).
    assert count.attention == 4 * 2 * 8 * (3**2 + 5**2) + 4 * 1 * 4 * 5**2 == 2576
    assert count.lm_head == 2 * 8 * 10 * 2 == 320
    # Vision: patch embedding 3*2*2 -> 4 on 4 patches; one layer of 4*4^2 + 2*4*8 = 128 weights on 5 tokens.
    assert count.vision == 2 * 12 * 4 * 4 + 2 * 128 * 5 == 1664
    # Projector 4 -> 8 -> 8 on the 4 patch tokens (the class token is dropped).
    assert count.projector == 2 * (4 * 8 + 8 * 8) * 4 == 768
    assert count.total == 23760
    # Stopping after the first decoder layer halves the decoder's share.
    early = count_forward_flops(_tiny_llava_config(), [3, 5], [4], layers_run=1)
    assert early.language == 9216 and early.attention == 2576 - 1088 and early.lm_head == 0


@pytest.fixture(scope="module")
def mini_samples(mini_data, mini_images):
    from mmselect.data import read_dataset

    samples = read_dataset(mini_data, image_root=mini_images).samples
    return [s for s in samples if s.n_images == 2][:1] + [s for s in samples if s.n_images == 0][:1]


@pytest.mark.parametrize("name", ["tiny-llava", "tiny-qwen2-vl"])
def test_count_equals_torch_flop_counter_on_a_real_forward(name, mini_samples):
    """Eager attention runs as plain matmuls, so torch's counter sees every FLOP the count claims."""
    from mmselect.features.extractor import Extractor
    from mmselect.features.reducers import make_features
    from mmselect.models.registry import load_model

    bundle = load_model(name, device="cpu", attn_implementation="eager")
    extractor = Extractor(bundle, make_features(["last_token"], {}), num_workers=0)
    for sample in mini_samples:  # one sample per pass: no padding
        batch = extractor.prepare([sample], "full").batch
        tokens = int(batch.attention.sum())
        grid = batch.inputs.get("image_grid_thw")
        n_images = sample.n_images
        if grid is not None:  # Qwen2-VL: patches per image / 4 merged into one token
            per_image = [int(g.prod()) // 4 for g in grid]
        else:
            per_image = [int(batch.image.sum()) // n_images] * n_images if n_images else []
        assert sum(per_image) == int(batch.image.sum())
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            bundle.model(**batch.inputs, use_cache=False)  # every layer and the LM head on every token
        expected = count_forward_flops(bundle.model.config, [tokens], per_image, lm_head_tokens=tokens)
        assert counter.get_total_flops() == expected.total, (name, sample.key)


def test_unsupported_vision_towers_are_refused():
    from transformers import Qwen2_5_VLConfig

    with pytest.raises(NotImplementedError, match="qwen2_5_vl"):
        count_forward_flops(Qwen2_5_VLConfig(), [10], [4])


def test_datasheet_peaks_by_device_name():
    assert datasheet_peak_tflops("NVIDIA H200") == 989.0
    assert datasheet_peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert datasheet_peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert datasheet_peak_tflops("NVIDIA L40S") == 362.0
    assert datasheet_peak_tflops("NVIDIA L4") == 121.0
    assert datasheet_peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert datasheet_peak_tflops("Some Accelerator") is None
