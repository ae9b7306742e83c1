"""The stage-1 LLaVA-1.5 model (before instruction tuning), assembled from its public parts.

DataTailor extracts its features from LLaVA-1.5-7B after stage 1 (projector pre-training) and before
instruction tuning: the Vicuna-7B-v1.5 language model, the CLIP ViT-L/14-336 vision tower (second-to-
last layer, patch tokens) and the released stage-1 projector ``mm_projector.bin`` (two linear layers
with a GELU between them). No such checkpoint is published in the transformers layout, so
:func:`assemble_stage1` builds one: a ``LlavaForConditionalGeneration`` directory with its processor,
which ``--model DIR`` then loads like any other.

The projector file is read with ``torch.load(weights_only=True)`` only; anything but tensors is refused.
Images are padded to a square of the image-mean colour before resizing, as the LLaVA-1.5 training code
does with ``image_aspect_ratio=pad`` (the setting of DataTailor's extraction run).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ConfigError

IMAGE_TOKEN = "<image>"
PROJECTOR_KEYS = {  # official LLaVA key -> LlavaMultiModalProjector parameter
    "model.mm_projector.0.weight": "linear_1.weight",
    "model.mm_projector.0.bias": "linear_1.bias",
    "model.mm_projector.2.weight": "linear_2.weight",
    "model.mm_projector.2.bias": "linear_2.bias",
}


@dataclass(frozen=True)
class Stage1Recipe:
    llm: str
    vision: str
    projector: str  # a local file, or "owner/name:file" on the hub


RECIPES = {
    "llava-1.5-7b-stage1": Stage1Recipe(
        llm="lmsys/vicuna-7b-v1.5",
        vision="openai/clip-vit-large-patch14-336",
        projector="liuhaotian/llava-v1.5-mlp2x-336px-pretrain-vicuna-7b-v1.5:mm_projector.bin",
    ),
}


def resolve_projector(projector: str, revision: str | None = None) -> Path:
    """A local projector file, or ``owner/name:file`` (``mm_projector.bin`` if no file) from the hub."""
    if Path(projector).is_file():
        return Path(projector)
    repo, _, filename = projector.partition(":")
    if repo.count("/") != 1 or Path(projector).exists():
        raise ConfigError(f"projector {projector!r}: not a file, not a Hugging Face repo (owner/name[:file])")
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo, filename or "mm_projector.bin", revision=revision))
    except Exception as err:
        raise ConfigError(
            f"projector {projector!r}: not a local file, and the hub download failed "
            f"({type(err).__name__}: {str(err).splitlines()[0][:200]})"
        ) from None


def load_projector(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The projector's tensors under the LlavaMultiModalProjector names (``linear_1.weight``, ...)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ConfigError(
            f"{path}: not a tensors-only checkpoint ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
            "only files torch.load(weights_only=True) accepts are read"
        ) from None
    if not isinstance(state, dict):
        raise ConfigError(f"{path}: expected a dict of tensors, got {type(state).__name__}")
    mapped = {}
    for official, name in PROJECTOR_KEYS.items():
        # Also accept the keys without the "model." prefix (projectors saved from the submodule).
        value = state.get(official, state.get(official.removeprefix("model."), None))
        if not isinstance(value, torch.Tensor):
            raise ConfigError(
                f"{path}: no tensor {official!r} (an mlp2x_gelu projector has {', '.join(PROJECTOR_KEYS)}); "
                f"found {sorted(state)[:8]}"
            )
        mapped[name] = value
    return mapped


def _image_processor(vision: str, image_size: int):
    """LLaVA-1.5's image preprocessing: pad to a square of the mean colour, then CLIP's resize."""
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

    try:
        clip = CLIPImageProcessorPil.from_pretrained(vision)
        mean, std, crop = clip.image_mean, clip.image_std, clip.crop_size
        crop = {"height": crop["height"], "width": crop["width"]} if isinstance(crop, dict) else {
            "height": crop.height, "width": crop.width}
    except Exception:  # no preprocessor config next to the tower: CLIP's defaults at its size
        mean, std, crop = None, None, {"height": image_size, "width": image_size}
    kwargs = {"image_mean": mean, "image_std": std} if mean is not None else {}
    return LlavaImageProcessorPil(
        size={"shortest_edge": crop["height"]}, crop_size=crop, do_pad=True, **kwargs
    )


def assemble_stage1(
    llm: str,
    vision: str,
    projector: str,
    out: str | os.PathLike,
    *,
    dtype: str = "bfloat16",
    projector_revision: str | None = None,
) -> Path:
    """Build the stage-1 LLaVA-1.5 model in the transformers layout and save it to ``out``.

    ``llm``: the Vicuna language model (directory or hub id); ``vision``: the CLIP model (directory or
    hub id); ``projector``: the stage-1 ``mm_projector.bin`` (file or ``owner/name[:file]``).
    """
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        CLIPVisionModel,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} exists and is not empty; choose a new --out directory")
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise ConfigError(f"unknown dtype {dtype!r}")
    weights = load_projector(resolve_projector(projector, projector_revision))

    tokenizer = AutoTokenizer.from_pretrained(llm)
    if tokenizer.pad_token is None:
        # LLaVA's v1 training pads with the unknown token.
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    language = AutoModelForCausalLM.from_pretrained(llm, dtype=torch_dtype)
    original_vocab = language.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > original_vocab:
        # The <image> row is never read (image features replace it); 64-aligned like llava-hf's models.
        # New rows are the mean of the old ones: deterministic, and a mean output row adds an ordinary
        # logit rather than an outlier to the softmax over the original vocabulary.
        language.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64, mean_resizing=False)
        with torch.no_grad():
            for matrix in {id(m): m for m in (language.get_input_embeddings().weight,
                                              language.get_output_embeddings().weight)}.values():
                matrix[original_vocab:] = matrix[:original_vocab].float().mean(0).to(matrix.dtype)
    tower = CLIPVisionModel.from_pretrained(vision, dtype=torch_dtype)

    vision_config, text_config = tower.config, language.config
    expected = {
        "linear_1.weight": (text_config.hidden_size, vision_config.hidden_size),
        "linear_2.weight": (text_config.hidden_size, text_config.hidden_size),
    }
    for name, shape in expected.items():
        if tuple(weights[name].shape) != shape:
            raise ConfigError(
                f"projector {projector}: {name} has shape {tuple(weights[name].shape)}, the language model "
                f"({llm}) and vision tower ({vision}) need {shape}"
            )
    patches = (vision_config.image_size // vision_config.patch_size) ** 2
    config = LlavaConfig(
        vision_config=vision_config.to_dict(),
        text_config=text_config.to_dict(),
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default",  # patch tokens, CLS dropped
        vision_feature_layer=-2,
        image_seq_length=patches,
        multimodal_projector_bias=True,
    )
    config.text_config.pad_token_id = tokenizer.pad_token_id
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    # Move the loaded parts in (no second copy of the weights); the projector is new.
    model.model.language_model = language.model
    model.lm_head = language.lm_head
    model.model.vision_tower = tower
    projector_module = type(model.model.multi_modal_projector)(config)
    projector_module.load_state_dict({k: v.to(torch.float32) for k, v in weights.items()})
    model.model.multi_modal_projector = projector_module.to(torch_dtype)
    model.eval()

    processor = LlavaProcessor(
        image_processor=_image_processor(vision, vision_config.image_size),
        tokenizer=tokenizer,
        patch_size=vision_config.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    partial = out.with_name(f"{out.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    processor.save_pretrained(partial)
    (partial / "STAGE1.md").write_text(
        "Stage-1 LLaVA-1.5 (before instruction tuning), assembled by mmselect.\n\n"
        f"- language model: {llm}\n- vision tower: {vision}\n- projector: {projector}\n"
    )
    try:
        if out.exists():
            out.rmdir()  # an empty directory the caller made
        partial.rename(out)
    except OSError:
        if not (out / "config.json").is_file():
            raise
        shutil.rmtree(partial, ignore_errors=True)  # another process finished the same model first
    return out


def stage1_cache_dir() -> Path:
    base = os.environ.get("MMSELECT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "mmselect")
    return Path(base) / "stage1"


def assembled_directory(name: str, *, projector_revision: str | None = None) -> Path:
    """The assembled model of recipe ``name`` in the mmselect cache, built on first use."""
    recipe = RECIPES[name]
    suffix = f"-{projector_revision[:12]}" if projector_revision else ""
    target = stage1_cache_dir() / f"{name}{suffix}"
    if (target / "config.json").is_file():
        return target
    return assemble_stage1(recipe.llm, recipe.vision, recipe.projector, target, projector_revision=projector_revision)
