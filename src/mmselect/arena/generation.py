"""Generating the arena's records: every split's items in final order, the pool's pathologies
(wrong answers, mismatched answers, trivial prefixes, duplicates, near duplicates) placed at the
configured rates."""

from __future__ import annotations

import numpy as np

from .config import PATHOLOGIES, TASKS, WorldConfig
from .scenes import COLORS, NUMBERS, QUESTIONS, SHAPES, TEST_DIGITS, TRAIN_DIGITS, TRIVIAL_PREFIX, Item, Scene, caption_of, digits

SPLITS = ("stage1", "pool", "clean_pool", "test")


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
            label = int(digits()[1][index])
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
