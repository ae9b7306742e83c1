"""An interrupted extraction resumes from its finished shards and ends identical to a clean run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from mmselect.features.store import FeatureSet

REPO = Path(__file__).resolve().parents[1]


def _extract_cmd(out: Path, data: Path, images: Path) -> list[str]:
    return [
        sys.executable, "-m", "mmselect.cli", "extract", str(data), "--image-root", str(images),
        "--model", "tiny-llava", "--features", "last_token,answer_nll,spectrum", "--out", str(out),
        "--shard-size", "8", "--batch-size", "4", "--no-progress",
    ]


def _assert_same(a: FeatureSet, b: FeatureSet) -> None:
    assert list(a.keys) == list(b.keys)
    for name in ("answer_nll", "sve", "n_tokens"):
        assert np.array_equal(a.column(name), b.column(name)), name
    assert np.array_equal(a.array("last_token"), b.array("last_token"))


def test_kill_9_then_rerun_skips_finished_shards(tmp_path, mini_data, mini_images, _tiny_model_cache):
    env = dict(os.environ, MMSELECT_CACHE=str(_tiny_model_cache), HF_HUB_OFFLINE="1")
    records = json.loads(mini_data.read_text())[:120]
    mini_data = tmp_path / "data.json"
    mini_data.write_text(json.dumps(records, indent=1))
    clean, interrupted = tmp_path / "clean", tmp_path / "interrupted"
    subprocess.run(_extract_cmd(clean, mini_data, mini_images), check=True, env=env, cwd=REPO, capture_output=True)

    process = subprocess.Popen(_extract_cmd(interrupted, mini_data, mini_images), env=env, cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    done_markers = []
    while time.time() < deadline and process.poll() is None:
        done_markers = list(interrupted.glob("cache/*/*.done"))
        if len(done_markers) >= 3:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the extraction finished before it could be interrupted"
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished_before = {p.name: p.stat().st_mtime_ns for p in interrupted.glob("cache/*/*.done")}
    total_shards = len(list(clean.glob("cache/*/*.done")))
    assert 3 <= len(finished_before) < total_shards
    assert not (interrupted / "samples.parquet").exists()

    subprocess.run(_extract_cmd(interrupted, mini_data, mini_images), check=True, env=env, cwd=REPO, capture_output=True)
    after = {p.name: p.stat().st_mtime_ns for p in interrupted.glob("cache/*/*.done")}
    assert len(after) == total_shards
    # Shards finished before the kill were read back, not recomputed.
    assert all(after[name] == mtime for name, mtime in finished_before.items())
    _assert_same(FeatureSet.load(clean), FeatureSet.load(interrupted))


def test_changed_feature_spec_does_not_reuse_shards(tmp_path, mini_data, mini_images, tiny_llava):
    from mmselect.data import read_dataset
    from mmselect.features.extract import extract_features

    samples = read_dataset(mini_data, image_root=mini_images).samples[:12]
    extract_features(samples, tiny_llava, ["answer_nll"], cache_dir=tmp_path, shard_size=6, progress=False)
    extract_features(samples, tiny_llava, ["answer_nll", "el2n"], cache_dir=tmp_path, shard_size=6, progress=False)
    spec_dirs = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(spec_dirs) == 2
    assert all(len(list(d.glob("*.done"))) == 2 for d in spec_dirs)
