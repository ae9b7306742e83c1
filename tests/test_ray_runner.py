"""Ray Data runner: same features as the local runner, resumable, workers load their own model."""

import copy
import json

import numpy as np
import pytest

from mmselect.data import read_dataset
from mmselect.features.extract import Extractor, ShardWork, extract_features
from mmselect.features.reducers import make_features
from mmselect.features.store import FeatureSet
from mmselect.runners import RayRunner

pytest.importorskip("ray.data", reason="Ray is not installed: pip install 'mmselect[ray]' (make test installs it)")

NAMES = ["last_token", "answer_nll", "spectrum"]


@pytest.fixture(scope="module")
def ray_session():
    import ray

    runner = RayRunner(workers=2, init_kwargs={"num_cpus": 2}).start()
    yield runner
    ray.shutdown()


@pytest.fixture(scope="module")
def some_samples(mini_data, mini_images):
    return read_dataset(mini_data, image_root=mini_images).samples[:40]


def _assert_same(a: FeatureSet, b: FeatureSet, exact: bool = True) -> None:
    """``exact=False``: Ray workers run torch on one thread each, this process on several, and a
    different thread count sums in a different order (last bits of float32)."""
    same = np.array_equal if exact else (lambda x, y: np.allclose(x, y, rtol=1e-5, atol=1e-6))
    assert list(a.keys) == list(b.keys)
    assert np.array_equal(a.column("n_tokens"), b.column("n_tokens"))
    for name in ("answer_nll", "sve", "sv_top_ratio"):
        assert same(a.column(name), b.column(name)), name
    assert same(a.array("last_token"), b.array("last_token"))


def test_ray_workers_give_the_local_features_and_resume(ray_session, tiny_llava, some_samples, tmp_path):
    options = dict(batch_size=4, shard_size=8, progress=False)
    local, local_rejected = extract_features(some_samples, tiny_llava, NAMES, cache_dir=tmp_path / "local", **options)
    remote, remote_rejected = extract_features(some_samples, tiny_llava, NAMES, cache_dir=tmp_path / "ray",
                                               runner=ray_session, **options)
    _assert_same(local, remote, exact=False)
    assert local_rejected == remote_rejected
    # Interrupted run: two shards lost their done-marker; only those are computed again.
    markers = sorted((tmp_path / "ray").glob("*/*.done"))
    assert len(markers) == 5
    for marker in markers[:2]:
        marker.unlink()
    kept = {m.name: m.stat().st_mtime_ns for m in markers[2:]}
    resumed, _ = extract_features(some_samples, tiny_llava, NAMES, cache_dir=tmp_path / "ray", runner=ray_session, **options)
    _assert_same(remote, resumed)
    after = {m.name: m.stat().st_mtime_ns for m in (tmp_path / "ray").glob("*/*.done")}
    assert len(after) == 5 and all(after[name] == mtime for name, mtime in kept.items())


def test_a_second_model_pass_runs_on_the_workers_too(ray_session, tiny_llava, some_samples, tmp_path):
    """CLIP score is a pass of its own, with its own model: the Ray workers load it and compute it."""
    options = dict(batch_size=4, shard_size=4, progress=False, feature_params={"clip_score": {"model": "tiny-clip"}})
    samples = some_samples[:12]
    local, _ = extract_features(samples, tiny_llava, ["clip_score"], cache_dir=tmp_path / "local", **options)
    remote, _ = extract_features(samples, tiny_llava, ["clip_score"], cache_dir=tmp_path / "ray", runner=ray_session, **options)
    assert list(local.keys) == list(remote.keys)
    assert np.allclose(local.column("clip_score"), remote.column("clip_score"), rtol=1e-5, atol=1e-6, equal_nan=True)
    assert np.isfinite(remote.column("clip_score")).any()
    assert len(list((tmp_path / "ray").glob("aux-*/*.done"))) == 3


def test_a_worker_refuses_a_model_that_differs_from_the_drivers(tiny_llava, some_samples):
    work = ShardWork(Extractor(tiny_llava, make_features(["answer_nll"])), ["answer_nll"], None)
    shipped = copy.deepcopy(work)  # what a worker receives: no model
    assert shipped._extractor is None and work._extractor is not None
    assert shipped(some_samples[:2], lambda n: None).keys == work(some_samples[:2], lambda n: None).keys
    other = copy.deepcopy(work)
    other.load_args = {**other.load_args, "dtype": "bfloat16"}
    with pytest.raises(RuntimeError, match="differs from the driver"):
        other(some_samples[:2], lambda n: None)


def test_a_driver_describes_the_model_without_its_weights(tiny_llava):
    from mmselect.models.registry import load_model

    skeleton = load_model("tiny-llava", device="meta", dtype=tiny_llava.load_args["dtype"])
    assert skeleton.device.type == "meta"
    assert skeleton.describe() == tiny_llava.describe() and skeleton.load_args == tiny_llava.load_args
    names = ["last_token", "coincide", "answer_nll"]
    assert Extractor(skeleton, make_features(names)).spec_hash() == Extractor(tiny_llava, make_features(names)).spec_hash()


def test_cli_extract_with_the_ray_runner(ray_session, some_samples, mini_data, mini_images, tmp_path):
    from typer.testing import CliRunner

    from mmselect.cli import app

    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(s.record) + "\n" for s in some_samples[:12]))
    args = ["extract", str(data), "--image-root", str(mini_images), "--model", "tiny-llava", "--features",
            "answer_nll", "--no-progress", "--shard-size", "4"]
    local = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "local")])
    remote = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "ray"), "--runner", "ray", "--workers", "2"])
    assert local.exit_code == 0 and remote.exit_code == 0, remote.output
    a, b = FeatureSet.load(tmp_path / "local"), FeatureSet.load(tmp_path / "ray")
    assert b.manifest["runner"] == "RayRunner" and a.manifest["runner"] == "LocalRunner"
    assert list(a.keys) == list(b.keys) and np.allclose(a.column("answer_nll"), b.column("answer_nll"), rtol=1e-5)
    refused = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "x"), "--workers", "2"])
    assert refused.exit_code != 0 and "--runner ray" in refused.output
