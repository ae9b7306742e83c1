"""Model presets (short name -> HF id, revision, template, defaults) and the one loading function.

Any other Hugging Face id or local directory loads through ``AutoModelForImageTextToText``.
``trust_remote_code`` is off unless the caller asks for it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from .hub import call_loading, check_model_source
from .templates import Template, resolve_template


@dataclass(frozen=True)
class ModelPreset:
    name: str
    hf_id: str
    family: str  # "llava" | "qwen2-vl" | "qwen2.5-vl" | "llava-onevision"
    template: str
    revision: str | None = None  # a commit from revisions.json; None: the hub's default branch
    dtype: str = "bfloat16"
    description: str = ""
    tiny: bool = False
    notes: dict[str, Any] = field(default_factory=dict)
    # Task preset (mmselect.data.tasks.TASK_PRESETS) DataTailor uses with this model when the user names
    # no --task-field: the LLaVA-1.5 models are fed LLaVA-1.5's own mix, whose ten sources are its tasks.
    task_preset: str | None = None
    # A model assembled from public parts on first use (a recipe in mmselect.models.stage1.RECIPES);
    # hf_id then names the repository that defines it (its pinned commit is the part's revision).
    assemble: str | None = None


PRESETS: dict[str, ModelPreset] = {}

# Commits the presets are pinned to (HF id -> 40-hex commit), written by scripts/pin_revisions.py on
# a machine with hub access. A preset without a pin loads the default branch; every manifest records
# the commit that was actually loaded, and --revision reproduces it.
REVISIONS_FILE = Path(__file__).with_name("revisions.json")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def load_revisions(path: str | os.PathLike = REVISIONS_FILE) -> dict[str, str]:
    """The pinned commits in ``path``; anything but full 40-hex commit hashes is refused."""
    pins = json.loads(Path(path).read_text())
    bad = {hf_id: sha for hf_id, sha in pins.items() if not isinstance(sha, str) or not _COMMIT.match(sha)}
    if bad:
        raise ConfigError(f"{path}: revisions must be full 40-hex commit hashes, got {bad}")
    return pins


def register_preset(preset: ModelPreset) -> ModelPreset:
    if preset.revision is None and not preset.tiny:
        preset = replace(preset, revision=_PINNED.get(preset.hf_id))
    PRESETS[preset.name] = preset
    return preset


_PINNED = load_revisions()


for _preset in [
    ModelPreset("llava-1.5-7b", "llava-hf/llava-1.5-7b-hf", "llava", "vicuna_v1",
                description="LLaVA-1.5 7B (Vicuna-7B + CLIP-L/336), 32 layers, 4096-d", task_preset="llava-665k"),
    ModelPreset("llava-1.5-13b", "llava-hf/llava-1.5-13b-hf", "llava", "vicuna_v1",
                description="LLaVA-1.5 13B (Vicuna-13B + CLIP-L/336), 40 layers, 5120-d", task_preset="llava-665k"),
    ModelPreset("llava-1.5-7b-stage1", "liuhaotian/llava-v1.5-mlp2x-336px-pretrain-vicuna-7b-v1.5", "llava",
                "vicuna_v1", description="LLaVA-1.5 7B after stage 1, before instruction tuning (DataTailor's "
                "feature model): Vicuna-7B-v1.5 + CLIP-L/336 + the released stage-1 projector, assembled on first "
                "use (`mmselect assemble-stage1`)", task_preset="llava-665k", assemble="llava-1.5-7b-stage1"),
    ModelPreset("llava-onevision-qwen2-0.5b", "llava-hf/llava-onevision-qwen2-0.5b-ov-hf", "llava-onevision",
                "chatml_image", description="LLaVA-OneVision 0.5B (Qwen2-0.5B + SigLIP), 24 layers, 896-d"),
    ModelPreset("llava-onevision-qwen2-7b", "llava-hf/llava-onevision-qwen2-7b-ov-hf", "llava-onevision",
                "chatml_image", description="LLaVA-OneVision 7B (Qwen2-7B + SigLIP), 28 layers, 3584-d"),
    ModelPreset("qwen2-vl-2b", "Qwen/Qwen2-VL-2B-Instruct", "qwen2-vl", "qwen2_vl",
                description="Qwen2-VL 2B Instruct, 28 layers, 1536-d"),
    ModelPreset("qwen2-vl-7b", "Qwen/Qwen2-VL-7B-Instruct", "qwen2-vl", "qwen2_vl",
                description="Qwen2-VL 7B Instruct, 28 layers, 3584-d"),
    ModelPreset("qwen2.5-vl-3b", "Qwen/Qwen2.5-VL-3B-Instruct", "qwen2.5-vl", "qwen2_vl",
                description="Qwen2.5-VL 3B Instruct, 36 layers, 2048-d"),
    ModelPreset("qwen2.5-vl-7b", "Qwen/Qwen2.5-VL-7B-Instruct", "qwen2.5-vl", "qwen2_vl",
                description="Qwen2.5-VL 7B Instruct, 28 layers, 3584-d"),
    # mmSSR's released scorer/styler (LLaVA-OneVision-7B fine-tunes, ChatML). They are published in the
    # original LLaVA-NeXT layout; a checkpoint converted to the transformers layout loads like any other.
    ModelPreset("mmssr-7b-scorer", "mengyaolyu/mmssr-7b-scorer", "llava-onevision", "chatml_image",
                description="mmSSR capability scorer (`--feature-param mmssr-scores.scorer=mmssr-7b-scorer`)"),
    ModelPreset("mmssr-7b-styler", "mengyaolyu/mmssr-7b-styler", "llava-onevision", "chatml_image",
                description="mmSSR interaction-style tagger (`--feature-param mmssr-scores.styler=mmssr-7b-styler`)"),
    ModelPreset("tiny-llava", "tiny-llava", "llava", "vicuna_v1", dtype="float32", tiny=True,
                description="offline test model, random weights (selections carry no meaning)"),
    ModelPreset("tiny-qwen2-vl", "tiny-qwen2-vl", "qwen2-vl", "qwen2_vl", dtype="float32", tiny=True,
                description="offline test model, random weights (selections carry no meaning)"),
    ModelPreset("tiny-qwen2.5-vl", "tiny-qwen2.5-vl", "qwen2.5-vl", "qwen2_vl", dtype="float32", tiny=True,
                description="offline test model, random weights (selections carry no meaning)"),
    ModelPreset("tiny-llava-onevision", "tiny-llava-onevision", "llava-onevision", "chatml_image", dtype="float32",
                tiny=True, description="offline test model, random weights (selections carry no meaning)"),
]:
    register_preset(_preset)


def list_models() -> dict[str, str]:
    return {name: f"{p.hf_id}: {p.description}" if not p.tiny else p.description for name, p in PRESETS.items()}


def describe_revision(preset: ModelPreset) -> str:
    if preset.tiny:
        return "built locally"
    return preset.revision[:12] if preset.revision else "unpinned"


@dataclass
class ModelBundle:
    """A loaded model with what extraction needs to feed it."""

    model: Any
    processor: Any
    template: Template
    name: str
    source: str
    revision: str | None
    family: str
    # How to load exactly this model again elsewhere (a runner's worker): load_model(**load_args).
    load_args: dict[str, Any] = field(default_factory=dict)

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def context_length(self) -> int:
        """Tokens the language model takes (``max_position_embeddings`` of its text config)."""
        config = self.model.config
        text = getattr(config, "text_config", None) or config
        return int(getattr(text, "max_position_embeddings", None) or 4096)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "revision": self.revision,
            "family": self.family,
            "template": self.template.name,
            "template_revision": self.template.revision,
            "class": type(self.model).__name__,
            "dtype": str(next(self.model.parameters()).dtype).replace("torch.", ""),
        }


    def manifest_entry(self) -> dict[str, Any]:
        """:meth:`describe` (which keys the shard cache) and what else the manifest records."""
        entry = {**self.describe(), "processor_class": type(self.processor).__name__}
        if self.load_args.get("device_map") is not None:
            entry["device_map"] = self.load_args["device_map"]
        return entry


def _family_from_config(config) -> str:
    model_type = getattr(config, "model_type", "")
    return {"llava": "llava", "qwen2_vl": "qwen2-vl", "qwen2_5_vl": "qwen2.5-vl", "llava_onevision": "llava-onevision"}.get(
        model_type, model_type
    )


def _load_processor(source: str, family: str, revision: str | None, trust_remote_code: bool):
    from transformers import AutoProcessor

    processor = None
    try:
        processor = AutoProcessor.from_pretrained(source, revision=revision, trust_remote_code=trust_remote_code)
    except Exception:
        processor = None
    if processor is not None and hasattr(processor, "image_processor"):
        return processor
    # Without torchvision, AutoProcessor silently falls back to a bare tokenizer for Qwen2(.5)-VL and
    # LLaVA-OneVision (their video processors need it); load the image-only processor instead.
    from .processors import image_only_llava_onevision_processor, image_only_qwen2_5_vl_processor, image_only_qwen2_vl_processor

    image_only = {
        "qwen2-vl": image_only_qwen2_vl_processor,
        "qwen2.5-vl": image_only_qwen2_5_vl_processor,
        "llava-onevision": image_only_llava_onevision_processor,
    }.get(family)
    if image_only is not None:
        return image_only().from_pretrained(source, revision=revision)
    raise ConfigError(
        f"could not load an image processor for {source}: AutoProcessor returned "
        f"{type(processor).__name__ if processor is not None else 'nothing'}"
    )


def resolve_device(device: str) -> str:
    """``auto``: the first CUDA GPU when there is one, else the CPU; anything else as given."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: torch sees no CUDA GPU (torch {torch.__version__})")
    return device


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        return getattr(torch, dtype)
    except AttributeError:
        raise ConfigError(f"unknown dtype {dtype!r}") from None


def load_model(
    name_or_path: str,
    *,
    revision: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
    template: str | None = None,
    device_map: str | dict | None = None,
) -> ModelBundle:
    """Load a preset, a Hugging Face id or a local directory.

    Tiny presets are built locally on first use (no download). ``device="auto"``: the first CUDA
    GPU if there is one; ``"meta"``: no weights (describing the model, not running it). ``dtype="auto"``: bfloat16 on a GPU, float32 on the CPU (bfloat16 is
    slower than float32 on most CPUs).
    ``template``: a template name (``vicuna_v1``, ``qwen2_vl``, ``chatml_image``, or ``chat_template``
    for the processor's own ``apply_chat_template``); default: the preset's, else the model family's,
    else the processor's chat template with a warning.
    ``device_map``: ``"auto"`` spreads a model larger than one GPU over every GPU (and the CPU) with
    ``accelerate`` (``pip install 'mmselect[multi-gpu]'``); ``device`` is then ignored.
    """
    from transformers import AutoConfig, AutoModelForImageTextToText

    from ..logs import VERBOSE, quiet_libraries, verbosity

    quiet_libraries(verbose=verbosity() >= VERBOSE)  # no "Loading weights" bars outside -v
    device = resolve_device(device)  # with device_map: only the dtype's default follows it

    preset = PRESETS.get(name_or_path)
    if preset is not None and preset.tiny:
        from .tiny import build_tiny_model

        _warn_random_weights(preset.name)
        source = str(build_tiny_model(preset.name))
    elif preset is not None and preset.assemble:
        from .stage1 import assembled_directory

        source = str(assembled_directory(preset.assemble, projector_revision=revision or preset.revision))
    elif preset is not None:
        source = preset.hf_id
    else:
        source = name_or_path
        if not Path(source).exists() and "/" not in source:
            raise ConfigError(
                f"unknown model {name_or_path!r}: not a preset ({', '.join(PRESETS)}), "
                "not a local directory, not a Hugging Face id (owner/name)"
            )
    revision = revision or (preset.revision if preset else None)
    if not (preset and (preset.tiny or preset.assemble)):
        check_model_source(source, revision)  # a wrong id or an unreachable hub: one line, before any download
    config = call_loading(source, AutoConfig.from_pretrained, source, revision=revision, trust_remote_code=trust_remote_code)
    family = preset.family if preset else _family_from_config(config)
    kwargs: dict[str, Any] = {"revision": revision, "trust_remote_code": trust_remote_code}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    torch_dtype = resolve_dtype(dtype if not (preset and preset.tiny and dtype == "auto") else "float32", device)
    if device_map is not None and device != "meta":
        try:
            import accelerate  # noqa: F401
        except ImportError:
            raise ConfigError("--device-map needs accelerate: pip install 'mmselect[multi-gpu]'") from None
        model = AutoModelForImageTextToText.from_pretrained(source, dtype=torch_dtype, device_map=device_map, **kwargs)
    elif device == "meta":
        # Structure and dtype without weights: for a process that describes the model but never runs
        # it (the driver of a Ray run), so it needs neither a GPU nor the memory for the weights.
        with torch.device("meta"):
            model = AutoModelForImageTextToText.from_config(
                config, dtype=torch_dtype, **{k: v for k, v in kwargs.items() if k != "revision"}
            )
    else:
        model = AutoModelForImageTextToText.from_pretrained(source, dtype=torch_dtype, **kwargs)
        model.to(device)
    model.eval()
    processor = _load_processor(source, family, revision, trust_remote_code)
    # --template NAME, else the preset's, else the family's; other families: the processor's chat template.
    resolved_template = resolve_template(template or (preset.template if preset else None), family=family, processor=processor)
    resolved_revision = getattr(config, "_commit_hash", None) or revision
    load_args = {
        "name_or_path": name_or_path,
        "revision": resolved_revision,
        "dtype": str(torch_dtype).replace("torch.", ""),
        "trust_remote_code": trust_remote_code,
        "attn_implementation": attn_implementation,
        "template": resolved_template.name,
    }
    if device_map is not None:
        load_args["device_map"] = device_map
    return ModelBundle(
        model=model,
        processor=processor,
        template=resolved_template,
        name=preset.name if preset else name_or_path,
        source=source if not (preset and preset.tiny) else preset.name,
        revision=resolved_revision if not (preset and preset.tiny) else f"tiny-v{_tiny_version()}",
        family=family,
        load_args=load_args,
    )


def _warn_random_weights(name: str) -> None:
    from ..logs import log

    log.warning(f"model {name} is a random-weight test model: its features and selections carry no meaning. "
                "Pass --model with a real model (`mmselect models` lists the presets).")


def _tiny_version() -> str:
    from .tiny import TINY_VERSION

    return TINY_VERSION


def offline_environment() -> None:
    """Never reach the hub when running on tiny models only (tests, demo)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
