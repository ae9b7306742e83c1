"""A visual-instruction world whose truth is known, written as LLaVA JSON + PNG files.

Seven tasks over procedural 32x32 images (coloured shapes on a 4x4 grid of 8-pixel cells, one shape
per cell, and scikit-learn's handwritten digits) plus a text-only task, with a closed answer
vocabulary so exact match is exact. The pool carries pathologies at the configured rates; which
record has which is written to ``pathologies.json``, a sidecar no selection method reads.

Splits: ``stage1`` (clean, balanced: trains the reference model), ``pool`` (what methods select
from), ``clean_pool`` (the pool's world without pathologies) and ``test`` (clean, balanced,
held-out digits, single-turn, the canonical phrasing).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..data.readers import read_dataset
from ..models.templates import VICUNA_SYSTEM
from .config import PATHOLOGIES, TASKS, WorldConfig

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
SPLITS = ("stage1", "pool", "clean_pool", "test")


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


def _digits() -> tuple[np.ndarray, np.ndarray]:
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
        pixels = _digits()[0][scene.digit]
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


# --- generation ------------------------------------------------------------------------------------
class _Generator:
    def __init__(self, rng: np.random.Generator, digit_indices: range):
        self.rng = rng
        self.digit_indices = np.asarray(digit_indices)

    def pick(self, options, size=None, replace=True):
        return self.rng.choice(len(options), size=size, replace=replace) if size else int(self.rng.integers(len(options)))

    def cells(self, n: int, distinct_columns: bool = False) -> list[tuple[int, int]]:
        if distinct_columns:
            cols = self.rng.choice(4, size=n, replace=False)
            return [(int(self.rng.integers(4)), int(c)) for c in cols]
        flat = self.rng.choice(16, size=n, replace=False)
        return [(int(f) // 4, int(f) % 4) for f in flat]

    def objects(self, n: int, distinct_shapes: bool, distinct_colors: bool, distinct_columns: bool = False):
        shapes = [SHAPES[i] for i in (self.rng.choice(3, n, replace=False) if distinct_shapes else self.rng.integers(3, size=n))]
        names = list(COLORS)
        colours = [names[i] for i in (self.rng.choice(6, n, replace=False) if distinct_colors else self.rng.integers(6, size=n))]
        return [(s, c, r, k) for s, c, (r, k) in zip(shapes, colours, self.cells(n, distinct_columns))]

    def item(self, task: str, phrasing: int, multi_turn: bool) -> Item:
        rng = self.rng
        if task in ("color", "shape"):
            objects = self.objects(int(rng.integers(1, 4)), True, True)
            turns = []
            for ask in ([task, "shape" if task == "color" else "color"] if multi_turn else [task]):
                shape, colour, _, _ = objects[int(rng.integers(len(objects)))]
                if ask == "color":
                    turns.append((QUESTIONS["color"][phrasing].format(shape=shape), colour))
                else:
                    turns.append((QUESTIONS["shape"][phrasing].format(color=colour), shape))
            return Item(task, Scene(objects), turns, phrasing)
        if task == "count":
            objects = self.objects(int(rng.integers(1, 5)), False, False)
            return Item(task, Scene(objects), [(QUESTIONS["count"][phrasing], NUMBERS[len(objects)])], phrasing)
        if task == "position":
            objects = self.objects(int(rng.integers(1, 3)), True, False)
            shape, _, row, col = objects[int(rng.integers(len(objects)))]
            axis = "position_x" if rng.random() < 0.5 else "position_y"
            answer = ("left" if col < 2 else "right") if axis == "position_x" else ("top" if row < 2 else "bottom")
            return Item(task, Scene(objects), [(QUESTIONS[axis][phrasing].format(shape=shape), answer)], phrasing,
                        meta={"axis": axis})
        if task == "caption":
            objects = sorted(self.objects(int(rng.integers(1, 3)), False, False, distinct_columns=True), key=lambda o: o[3])
            return Item(task, Scene(objects), [(QUESTIONS["caption"][phrasing], caption_of(objects))], phrasing)
        if task == "digit":
            index = int(self.digit_indices[int(rng.integers(len(self.digit_indices)))])
            label = int(_digits()[1][index])
            return Item(task, Scene(digit=index), [(QUESTIONS["digit"][phrasing], NUMBERS[label])], phrasing)
        if task == "arithmetic":
            a = int(rng.integers(10))
            b = int(rng.integers(10 - a))
            question = QUESTIONS["arithmetic"][phrasing].format(a=NUMBERS[a], b=NUMBERS[b])
            return Item(task, None, [(question, NUMBERS[a + b])], phrasing)
        raise ValueError(task)

    def wrong_answer(self, item: Item) -> str:
        """A task-appropriate wrong answer to the first question."""
        truth = item.turns[0][1]
        if item.task == "position":
            return {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}[truth]
        if item.task == "caption":
            while True:
                n = int(self.rng.integers(1, 3))
                other = caption_of(sorted(self.objects(n, False, False, distinct_columns=True), key=lambda o: o[3]))
                if other != truth:
                    return other
        options = {
            "color": list(COLORS), "shape": list(SHAPES), "count": list(NUMBERS[1:5]),
            "digit": list(NUMBERS), "arithmetic": list(NUMBERS),
        }[item.task]
        options = [o for o in options if o != truth]
        return options[int(self.rng.integers(len(options)))]


def caption_of(objects) -> str:
    return " and ".join(f"a {colour} {shape}" for shape, colour, _, _ in objects)


def _counts(config: WorldConfig, n: int) -> dict[str, int]:
    weights = np.array([config.task_weights.get(t, 0.0) for t in TASKS], dtype=float)
    raw = weights / weights.sum() * n
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    return dict(zip(TASKS, counts.tolist()))


def pathology_counts(config: WorldConfig) -> dict[str, int]:
    """Records per pathology in the pool: ``round(rate x pool_size)`` each."""
    return {p: int(round(getattr(config, f"{p}_rate") * config.pool_size)) for p in PATHOLOGIES}


def _balanced(n: int) -> dict[str, int]:
    return dict(zip(TASKS, [n // len(TASKS) + (1 if i < n % len(TASKS) else 0) for i in range(len(TASKS))]))


def generate_items(config: WorldConfig, split: str) -> list[Item]:
    """The records of one split, in final order (pathologies placed, pool shuffled)."""
    rng = np.random.default_rng([config.seed, SPLITS.index(split)])
    gen = _Generator(rng, TEST_DIGITS if split == "test" else TRAIN_DIGITS)
    if split == "test":
        items = []
        for task in TASKS:
            items += [gen.item(task, 0, False) for _ in range(config.test_per_task)]
        return items
    if split == "stage1":
        tasks = [t for t, n in _balanced(config.stage1_size).items() for _ in range(n)]
        return [gen.item(t, int(rng.integers(2)), t in ("color", "shape") and rng.random() < config.multi_turn_rate)
                for t in tasks]
    source_config = config.clean() if split == "clean_pool" else config
    counts = pathology_counts(source_config)
    n_base = config.pool_size - counts["duplicate"] - counts["near_duplicate"]
    tasks = [t for t, n in _counts(config, n_base).items() for _ in range(n)]
    base = [gen.item(t, int(rng.integers(2)), t in ("color", "shape") and rng.random() < config.multi_turn_rate)
            for t in tasks]
    order = rng.permutation(n_base)
    wrong = order[: counts["wrong_answer"]]
    rest = order[counts["wrong_answer"]:]
    with_image = [i for i in rest if base[i].scene is not None]
    mismatch = with_image[: counts["mismatch"]]
    trivial = [i for i in rest if i not in set(mismatch)][: counts["trivial"]]
    for i in wrong:
        item = base[i]
        item.meta = {**item.meta, "truth": item.turns[0][1]}
        item.turns[0] = (item.turns[0][0], gen.wrong_answer(item))
        item.pathology = "wrong_answer"
    by_task: dict[str, list[int]] = {}
    for i, item in enumerate(base):
        by_task.setdefault(item.task, []).append(i)
    for i in mismatch:
        item = base[i]
        peers = by_task[item.task]
        for _ in range(100):
            other = base[peers[int(rng.integers(len(peers)))]]
            if other.turns[0][1] != item.turns[0][1] and other.pathology == "clean" and _same_question_kind(item, other):
                break
        else:  # nothing suitable: fall back to a task-appropriate wrong answer
            other = None
        answer = other.turns[0][1] if other is not None else gen.wrong_answer(item)
        item.meta = {**item.meta, "truth": item.turns[0][1]}
        item.turns[0] = (item.turns[0][0], answer)
        item.pathology = "mismatch"
    for i in trivial:
        item = base[i]
        question, answer = item.turns[0]
        item.turns[0] = (f"{TRIVIAL_PREFIX.format(answer=answer)} {question}", answer)
        item.pathology = "trivial"
    extra: list[Item] = []
    for i in rng.choice(n_base, size=counts["duplicate"], replace=True):
        extra.append(Item(base[i].task, base[i].scene, list(base[i].turns), base[i].phrasing, "duplicate", int(i), base[i].meta))
    image_sources = [i for i, item in enumerate(base) if item.scene is not None] or list(range(n_base))
    for j in rng.choice(len(image_sources), size=counts["near_duplicate"], replace=True):
        i = image_sources[int(j)]
        extra.append(_near_duplicate(base[i], int(i), rng))
    items = base + extra
    final = rng.permutation(len(items))
    index_of = {int(old): new for new, old in enumerate(final)}
    ordered = [items[int(old)] for old in final]
    for item in ordered:
        if item.source is not None:
            item.source = index_of[item.source]
    return ordered


def _same_question_kind(a: Item, b: Item) -> bool:
    return a.meta.get("axis") == b.meta.get("axis")


def _near_duplicate(item: Item, source: int, rng: np.random.Generator) -> Item:
    """Re-rendered with a pixel shift and a shade change, every question in the other phrasing."""
    other = 1 - item.phrasing
    turns = [(_rephrase(q, item, other), a) for q, a in item.turns]
    scene = item.scene
    if scene is not None:
        shift = (int(rng.integers(-1, 2)), int(rng.integers(-1, 2)))
        if shift == (0, 0):
            shift = (1, 0)
        scene = Scene(scene.objects, scene.digit, shift, int(rng.integers(-25, 0)))
    return Item(item.task, scene, turns, other, "near_duplicate", source, item.meta)


def _rephrase(question: str, item: Item, phrasing: int) -> str:
    prefix = ""
    if question.startswith("the answer is "):
        head, _, question = question.partition(" . ")
        prefix = head + " . "
    for kind, phrasings in QUESTIONS.items():
        for template in phrasings:
            match = _match(template, question)
            if match is not None:
                return prefix + phrasings[phrasing].format(**match)
    return prefix + question


def _match(template: str, text: str) -> dict[str, str] | None:
    t_words, words = template.split(), text.split()
    if len(t_words) != len(words):
        return None
    found = {}
    for t, w in zip(t_words, words):
        if t.startswith("{"):
            found[t[1:-1]] = w
        elif t != w:
            return None
    return found


# --- writing ---------------------------------------------------------------------------------------
def item_record(item: Item, image: str | None, record_id: str) -> dict[str, Any]:
    conversations = [{"from": "system", "value": SYSTEM_MESSAGE}]
    for turn, (question, answer) in enumerate(item.turns):
        text = f"<image>\n{question}" if image is not None and turn == 0 else question
        conversations += [{"from": "human", "value": text}, {"from": "gpt", "value": answer}]
    record: dict[str, Any] = {"id": record_id}
    if image is not None:
        record["image"] = image
    record["conversations"] = conversations
    return record


def _write_json(records: list[dict[str, Any]], path: Path) -> None:
    path.write_text("[\n" + ",\n".join(json.dumps(r, sort_keys=False) for r in records) + "\n]\n", encoding="utf-8")


@dataclass
class World:
    """A world on disk: ``<root>/{stage1,pool,clean_pool,test}.json``, ``images/``, ``pathologies.json``."""

    root: Path

    @property
    def image_root(self) -> Path:
        return self.root / "images"

    def data(self, split: str) -> Path:
        return self.root / f"{split}.json"

    @property
    def sidecar(self) -> Path:
        return self.root / "pathologies.json"

    def pathologies(self) -> dict[str, dict[str, Any]]:
        """key -> {"pathology", "task", "source"}: the hidden truth (never given to a method)."""
        return json.loads(self.sidecar.read_text())["records"]

    def tasks_of(self, split: str) -> list[str]:
        return json.loads((self.root / "tasks.json").read_text())[split]


def write_world(config: WorldConfig, root: str | Path) -> World:
    """Generate every split and write it under ``root`` (replacing what is there)."""
    config.validate()
    root = Path(root)
    if root.exists():
        shutil.rmtree(root)
    (root / "images").mkdir(parents=True)
    tasks: dict[str, list[str]] = {}
    sidecar: dict[str, Any] = {}
    for split in SPLITS:
        items = generate_items(config, split)
        records: list[dict[str, Any] | None] = []
        for index, item in enumerate(items):
            if item.pathology == "duplicate":
                records.append(None)  # filled below: byte for byte the record it was copied from
                continue
            image = None
            if item.scene is not None:
                image = f"{item.task}/{split}-{index:06d}.png"
                (root / "images" / item.task).mkdir(exist_ok=True)
                render(item.scene).save(root / "images" / image)
            records.append(item_record(item, image, f"{split}-{index:06d}"))
        for index, item in enumerate(items):
            if item.pathology == "duplicate":
                records[index] = records[item.source]
        _write_json(records, root / f"{split}.json")
        tasks[split] = [item.task for item in items]
        if split == "pool":
            dataset = read_dataset(root / "pool.json", image_root=root / "images", check_images=False)
            keys = [s.key for s in dataset.samples]
            sidecar = {
                "note": "hidden truth of the arena's pool: never read by a selection method",
                "counts": {p: sum(1 for it in items if it.pathology == p) for p in ("clean", *PATHOLOGIES)},
                "records": {
                    keys[i]: {
                        "position": i,
                        "task": item.task,
                        "pathology": item.pathology,
                        "source": keys[item.source] if item.source is not None else None,
                    }
                    for i, item in enumerate(items)
                },
            }
    (root / "tasks.json").write_text(json.dumps(tasks))
    (root / "pathologies.json").write_text(json.dumps(sidecar, indent=1))
    return World(root)


def tree_digest(root: str | Path) -> str:
    """One hash over every file's relative path and bytes (to check byte-identical regeneration)."""
    digest = hashlib.sha256()
    root = Path(root)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
