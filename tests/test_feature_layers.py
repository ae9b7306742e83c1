"""The ``layer`` option of the last-layer features and the post-norm features, against
``output_hidden_states`` of the tiny models."""

import numpy as np
import pytest
import torch

from mmselect.data import read_dataset
from mmselect.errors import ConfigError
from mmselect.features.encode import encode, load_image
from mmselect.features.extract import extract_features
from mmselect.features.reducers import layer_point
from mmselect.features.registry import get_feature
from mmselect.features.spectrum import spectrum_stats


@pytest.fixture(scope="module")
def samples(mini_data, mini_images):
    ds = read_dataset(mini_data, image_root=mini_images)
    return [s for s in ds.samples if s.n_images == 1][:2] + [s for s in ds.samples if s.n_images == 0][:2]


def test_layer_points():
    assert layer_point(None, 8) == layer_point("last", 8) == ("block", 7)
    assert layer_point("penultimate", 8) == ("block", 6)
    assert layer_point("final", 8) == ("final", None)
    assert layer_point(3, 8) == ("block", 3) and layer_point(-2, 8) == ("block", 6)
    for bad in (8, -9, "second", True):
        with pytest.raises(ConfigError, match="layer="):
            layer_point(bad, 8)
    assert get_feature("spectrum", layer="penultimate").option("layer") == "penultimate"
    assert get_feature("last_token").option("layer") == "last"


@pytest.mark.parametrize("which", ["tiny_llava", "tiny_qwen"])
def test_layers_match_hidden_states(which, samples, request, tmp_path):
    bundle = request.getfixturevalue(which)
    rendered = [bundle.template.render([s]) for s in samples]
    batch = encode(bundle, rendered, [[load_image(p) for p in r.image_paths] for r in rendered], 2048).to(bundle.device)
    with torch.no_grad():
        hidden = bundle.model(**batch.inputs, output_hidden_states=True).hidden_states
    last = batch.attention.long().cumsum(1).argmax(1)
    rows = torch.arange(len(samples))
    mask = batch.attention.unsqueeze(-1).float()

    names = ["last_token", "spectrum", "last_token_final", "mean_embed_final"]
    params = {"last_token": {"layer": "penultimate"}, "spectrum": {"layer": "penultimate"}}
    fs, rejected = extract_features(samples, bundle, names, feature_params=params, cache_dir=tmp_path,
                                    batch_size=4, progress=False)
    assert rejected == [] and list(fs.keys) == [s.key for s in samples]
    # hidden_states[-1]: after the final norm; hidden_states[-2]: output of the second-to-last block
    final, penultimate = hidden[-1].float(), hidden[-2].float()
    np.testing.assert_allclose(fs.array("last_token_final"), final[rows, last].cpu().numpy(), atol=1e-5)
    mean_final = (final * mask).sum(1) / mask.sum(1)
    np.testing.assert_allclose(fs.array("mean_embed_final"), mean_final.cpu().numpy(), atol=1e-5)
    np.testing.assert_allclose(fs.array("last_token"), penultimate[rows, last].cpu().numpy(), atol=1e-5)
    sve, top = spectrum_stats(penultimate, batch.attention)
    np.testing.assert_allclose(fs.column("sve"), sve.cpu().numpy(), rtol=1e-5)
    np.testing.assert_allclose(fs.column("sv_top_ratio"), top.cpu().numpy(), rtol=1e-5)

    # the default layer (the last block, before the final norm) is neither of them
    default, _ = extract_features(samples, bundle, ["last_token"], cache_dir=tmp_path / "default", batch_size=4,
                                  progress=False)
    assert not np.allclose(default.array("last_token"), fs.array("last_token"), atol=1e-3)
    assert not np.allclose(default.array("last_token"), fs.array("last_token_final"), atol=1e-3)
