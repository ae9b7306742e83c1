"""Task (source) label of a record: an explicit field, else a task preset.

Presets (``TASK_PRESETS``):

* ``image-dir`` (default): the first directory of the first image path (``coco/train2017/x.jpg`` ->
  ``coco``), ``text`` for text-only records.
* ``llava-665k``: the ten source datasets of LLaVA-1.5's instruction mix (``llava_v1_5_mix665k.json``),
  recovered from each record's own content -- its image directory and the response-format prompts
  each source uses -- so it holds for any order and any subset of the file. Records from other
  directories keep their ``image-dir`` label. The mapping is in ``LLAVA_665K_RULES`` and
  docs/methods/datatailor.md.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any, Callable

from ..errors import ConfigError

TEXT_ONLY_TASK = "text"
NO_DIRECTORY_TASK = "default"

# Response-format prompts of LLaVA-1.5's academic VQA sources (LLaVA-1.5 paper, Table 7).
SHORT_ANSWER_PROMPT = "answer the question using a single word or phrase"
MULTIPLE_CHOICE_PROMPT = "answer with the option's letter from the given choices directly"
CAPTION_PROMPT = "provide a one-sentence caption for the provided image"
# Region-level prompts of RefCOCO and Visual Genome (region description / grounding).
REGION_PROMPTS = (
    "please provide a short description for this region",
    "please provide the bounding box coordinate of the region this sentence describes",
)
# VQAv2 records hold every question of one COCO image (at least three); OK-VQA has about one per image.
VQAV2_MIN_ROUNDS = 3

# Image directories of the mix (the first path component that names one decides).
LLAVA_665K_DIRECTORIES = {"gqa": "gqa", "ocr_vqa": "ocr_vqa", "textvqa": "textcaps", "vg": "vg", "coco": "coco"}

# What each llava-665k task is, in order of the published mixture (LLaVA-1.5, Table 7 and the
# corrected counts of the released file). The rule column is how a record is recognised.
LLAVA_665K_RULES = {
    "llava_instruct": ("LLaVA-Instruct-158K (conversation, detail, complex reasoning)", 157_712,
                       "coco image, none of the prompts below"),
    "sharegpt": ("ShareGPT text-only conversations", 40_688, "no image"),
    "vqav2": ("VQAv2", 82_783, f"coco image, short-answer prompt, >= {VQAV2_MIN_ROUNDS} questions"),
    "gqa": ("GQA", 72_140, "gqa/ image"),
    "okvqa": ("OK-VQA", 8_998, f"coco image, short-answer prompt, < {VQAV2_MIN_ROUNDS} questions"),
    "ocr_vqa": ("OCR-VQA", 80_000, "ocr_vqa/ image"),
    "aokvqa": ("A-OKVQA", 66_160, "coco image, multiple-choice letter prompt"),
    "textcaps": ("TextCaps", 21_953, "textvqa/ image"),
    "refcoco": ("RefCOCO", 48_447, "coco image, region description / bounding-box prompt"),
    "vg": ("Visual Genome", 86_417, "vg/ image"),
}


def _directory_task(images: list[str]) -> str:
    if not images:
        return TEXT_ONLY_TASK
    parts = PurePosixPath(images[0].replace("\\", "/")).parts
    parts = [p for p in parts if p not in ("", ".", "/")]
    return parts[0] if len(parts) > 1 else NO_DIRECTORY_TASK


def _user_texts(record: dict[str, Any]) -> list[str]:
    """The user turns' texts, from ``conversations`` (LLaVA) or ``messages`` (sharegpt layout)."""
    turns = record.get("conversations", record.get("messages"))
    if not isinstance(turns, list):
        return []
    texts = []
    for turn in turns:
        if not isinstance(turn, dict):
            continue
        role = str(turn.get("from", turn.get("role", ""))).lower()
        text = turn.get("value", turn.get("content"))
        if role in ("human", "user") and isinstance(text, str):
            texts.append(text.lower())
    return texts


def llava_665k_task(record: dict[str, Any], images: list[str]) -> str:
    """The LLaVA-1.5 mix source of a record (see ``LLAVA_665K_RULES``)."""
    if not images:
        return "sharegpt"
    path = [p for p in PurePosixPath(images[0].replace("\\", "/")).parts if p not in ("", ".", "/")]
    directory = next((LLAVA_665K_DIRECTORIES[p] for p in path[:-1] if p in LLAVA_665K_DIRECTORIES), None)
    if directory is None:
        return _directory_task(images)
    if directory != "coco":
        return directory
    questions = _user_texts(record)
    if any(prompt in text for text in questions for prompt in REGION_PROMPTS):
        return "refcoco"
    if any(MULTIPLE_CHOICE_PROMPT in text for text in questions):
        return "aokvqa"
    if any(SHORT_ANSWER_PROMPT in text for text in questions):
        return "vqav2" if len(questions) >= VQAV2_MIN_ROUNDS else "okvqa"
    return "llava_instruct"


TASK_PRESETS: dict[str, Callable[[dict[str, Any], list[str]], str]] = {
    "image-dir": lambda record, images: _directory_task(images),
    "llava-665k": llava_665k_task,
}


def assign_task(record: dict[str, Any], image_paths: list[str], preset: str = "image-dir") -> str:
    """The task of ``record`` under ``preset`` (a name in ``TASK_PRESETS``); ``image_paths`` as written
    in the record."""
    try:
        rule = TASK_PRESETS[preset]
    except KeyError:
        raise ConfigError(f"unknown task preset {preset!r}; known: {', '.join(TASK_PRESETS)}") from None
    return rule(record, image_paths)


def infer_task(
    record: dict[str, Any], images: list[str], task_field: str | None = None, task_preset: str = "image-dir"
) -> str:
    """``task_field`` if given and present; else the task under ``task_preset`` (default: the first
    directory of the first image path, ``coco/train2017/x.jpg`` -> ``coco``; ``text`` for text-only
    records)."""
    if task_field:
        value = record.get(task_field)
        if value not in (None, ""):
            return str(value)
    return assign_task(record, images, task_preset)
