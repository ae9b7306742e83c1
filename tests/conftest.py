import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

REPO = Path(__file__).resolve().parents[1]
# The tiny-model fixtures load on this device: MMSELECT_TEST_DEVICE=cuda runs the extraction tests on
# a GPU (CI has none, so the default is the CPU).
TEST_DEVICE = os.environ.get("MMSELECT_TEST_DEVICE", "cpu")
MINI = REPO / "examples" / "mini"


@pytest.fixture(scope="session", autouse=True)
def _tiny_model_cache(tmp_path_factory):
    """Tiny models are built once per test session into a temporary cache."""
    cache = tmp_path_factory.mktemp("mmselect-cache")
    previous = os.environ.get("MMSELECT_CACHE")
    os.environ["MMSELECT_CACHE"] = str(cache)
    yield cache
    if previous is None:
        os.environ.pop("MMSELECT_CACHE", None)
    else:
        os.environ["MMSELECT_CACHE"] = previous


@pytest.fixture(scope="session")
def mini_data():
    return MINI / "data.json"


@pytest.fixture(scope="session")
def mini_images():
    return MINI / "images"


@pytest.fixture
def image_dir(tmp_path):
    """A small image root with a few real PNGs under two sources."""
    from PIL import Image

    root = tmp_path / "images"
    for source, colour in (("coco", (200, 20, 20)), ("gqa", (20, 200, 20))):
        (root / source).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (40 + 8 * i, 36), tuple(min(255, c + 10 * i) for c in colour)).save(root / source / f"{i}.png")
    return root


@pytest.fixture(scope="session")
def tiny_llava():
    from mmselect.models.registry import load_model

    return load_model("tiny-llava", device=TEST_DEVICE)


@pytest.fixture(scope="session")
def tiny_qwen():
    from mmselect.models.registry import load_model

    return load_model("tiny-qwen2-vl", device=TEST_DEVICE)


@pytest.fixture(scope="session")
def tiny_qwen25():
    from mmselect.models.registry import load_model

    return load_model("tiny-qwen2.5-vl", device=TEST_DEVICE)


@pytest.fixture(scope="session")
def tiny_onevision():
    from mmselect.models.registry import load_model

    return load_model("tiny-llava-onevision", device=TEST_DEVICE)


def copy_mini(tmp_path: Path) -> tuple[Path, Path]:
    data = tmp_path / "data.json"
    shutil.copy(MINI / "data.json", data)
    return data, MINI / "images"
