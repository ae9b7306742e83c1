"""The arena world's things: its closed vocabulary, what an image shows (coloured shapes on a 4x4 grid
of 8-pixel cells, or one of scikit-learn's handwritten digits) and how it is drawn."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..models.templates import VICUNA_SYSTEM

IMAGE_SIZE = 32
CELL = 8
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 200, 40),
    "blue": (40, 90, 235),
    "yellow": (230, 220, 40),
    "purple": (160, 50, 210),
    "orange": (245, 140, 20),
}
SHAPES = ("circle", "square", "triangle")
NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TRAIN_DIGITS = range(0, 1400)
TEST_DIGITS = range(1400, 1797)

# Two phrasings per task: base records use either, near duplicates the other one, the test set the first.
QUESTIONS = {
    "color": ("what color is the {shape} ?", "which color does the {shape} have ?"),
    "shape": ("what shape is the {color} object ?", "which shape has the {color} color ?"),
    "count": ("how many shapes are there ?", "count the shapes in the image ."),
    "position_x": ("is the {shape} on the left or right ?", "is the {shape} on the left side or the right side ?"),
    "position_y": ("is the {shape} at the top or bottom ?", "is the {shape} at the top side or the bottom side ?"),
    "caption": ("describe the image .", "what is in the image ?"),
    "digit": ("what digit is this ?", "which digit is shown ?"),
    "arithmetic": ("what is {a} plus {b} ?", "how much is {a} plus {b} ?"),
}
TRIVIAL_PREFIX = "the answer is {answer} ."
# Every record carries this short system message; it replaces the template's long default system
# prompt, which would more than double the sequence length (and the training cost).
SYSTEM_MESSAGE = "answer briefly ."




def vocabulary() -> list[str]:
    """Every word any record or the conversation template can contain (the tokenizer's vocabulary)."""
    words: set[str] = set(VICUNA_SYSTEM.split()) | {"USER:", "ASSISTANT:"}
    fillers = {"shape": SHAPES, "color": tuple(COLORS), "a": NUMBERS, "b": NUMBERS, "answer": ()}
    for phrasings in QUESTIONS.values():
        for phrasing in phrasings:
            words.update(w for w in phrasing.split() if not w.startswith("{"))
    words.update(w for w in TRIVIAL_PREFIX.split() if not w.startswith("{"))
    words.update(SYSTEM_MESSAGE.split())
    for values in fillers.values():
        words.update(values)
    words.update(("left", "right", "top", "bottom", "a", "and"))
    return sorted(words)


@dataclass
class Scene:
    """What an image shows: objects (shape, colour, row, column) or a digit; ``jitter`` shifts pixels."""

    objects: list[tuple[str, str, int, int]] = field(default_factory=list)
    digit: int | None = None  # index into load_digits
    jitter: tuple[int, int] = (0, 0)
    shade: int = 0  # added to every colour channel (near duplicates)


@dataclass
class Item:
    task: str
    scene: Scene | None  # None: text-only
    turns: list[tuple[str, str]]  # (question, answer)
    phrasing: int = 0
    pathology: str = "clean"
    source: int | None = None  # index of the record a duplicate was made from
    meta: dict[str, Any] = field(default_factory=dict)


# --- rendering -------------------------------------------------------------------------------------
_DIGITS: np.ndarray | None = None


def digits() -> tuple[np.ndarray, np.ndarray]:
    global _DIGITS
    if _DIGITS is None:
        from sklearn.datasets import load_digits

        data = load_digits()
        _DIGITS = (data.images, data.target)
    return _DIGITS


def render(scene: Scene) -> Image.Image:
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (0, 0, 0))
    dx, dy = scene.jitter
    if scene.digit is not None:
        pixels = digits()[0][scene.digit]
        glyph = Image.fromarray(np.round(pixels * (255.0 / 16.0)).astype(np.uint8), mode="L")
        glyph = glyph.resize((24, 24), Image.BILINEAR)
        tint = max(0, min(255, 255 + scene.shade))
        image.paste(Image.new("RGB", (24, 24), (tint, tint, tint)), (4 + dx, 4 + dy), glyph)
        return image
    draw = ImageDraw.Draw(image)
    for shape, colour, row, col in scene.objects:
        rgb = tuple(max(0, min(255, c + scene.shade)) for c in COLORS[colour])
        cx, cy = col * CELL + CELL // 2 + dx, row * CELL + CELL // 2 + dy
        if shape == "circle":
            draw.ellipse((cx - 3, cy - 3, cx + 3, cy + 3), fill=rgb)
        elif shape == "square":
            draw.rectangle((cx - 3, cy - 3, cx + 2, cy + 2), fill=rgb)
        else:
            draw.polygon([(cx, cy - 3), (cx - 3, cy + 3), (cx + 3, cy + 3)], fill=rgb)
    return image


def caption_of(objects) -> str:
    return " and ".join(f"a {colour} {shape}" for shape, colour, _, _ in objects)
