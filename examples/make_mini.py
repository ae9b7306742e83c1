#!/usr/bin/env python3
"""Build the bundled example dataset ``examples/mini/``.

Usage::

    python examples/make_mini.py            # writes examples/mini/
    python examples/make_mini.py --out DIR  # writes somewhere else

The script is deterministic: every random choice comes from generators
seeded with ``SEED``, so rerunning it reproduces the same files byte for byte
(with the same versions of Pillow, NumPy and scikit-learn).  It needs only
NumPy, Pillow and scikit-learn, which mmselect depends on anyway.

What it writes (all paths relative to the output directory):

* ``data.json``        about 300 records in LLaVA format
* ``images/<source>/`` the images referenced by ``data.json``
* ``bad_records.json`` a valid JSON list with deliberately broken records
* ``images/broken/``   a corrupt and a truncated PNG used by ``bad_records.json``
* ``malformed.json``   a file that is not valid JSON (error on line 7)
* ``README.md``        a description of all of the above, with counts

Every question/answer pair is true of its image: the script knows what it
drew (digit labels come from scikit-learn's ``load_digits``; shapes, bar
values and words are chosen by the script; photo crops come from hand-checked
regions of scikit-learn's two sample photographs).
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import random
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SEED = 20240611
SOURCES = ("digits", "shapes", "charts", "ocr", "photos")
MODEL_TAG = "mini-templates"  # the extra key some text-only records carry


def rng_for(name: str) -> random.Random:
    """One independent generator per part, so editing one part leaves the others alone."""
    return random.Random(f"{SEED}:{name}")


def font(size: int) -> ImageFont.FreeTypeFont:
    # Pillow's bundled font: no dependence on the fonts installed on the machine.
    return ImageFont.load_default(size=size)


def save_png(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    path.write_bytes(buf.getvalue())


def human(text: str) -> dict:
    return {"from": "human", "value": text}


def gpt(text: str) -> dict:
    return {"from": "gpt", "value": text}


def convo(rounds: list[tuple[str, str]], n_images: int = 1) -> list[dict]:
    """Turn (question, answer) rounds into LLaVA turns; the first question gets the <image> tokens."""
    turns = []
    for i, (q, a) in enumerate(rounds):
        if i == 0 and n_images:
            q = "<image>\n" * n_images + q
        turns += [human(q), gpt(a)]
    return turns


NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def plural(n: int, word: str) -> str:
    if n == 1:
        return f"one {word}"
    return f"{NUMBER_WORDS[n] if n <= 10 else n} {word}s"


def join_list(items: list[str]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def article_num(d: int) -> str:
    return f"{'an' if d in (8, 11, 18) else 'a'} {d}"


# ---------------------------------------------------------------------------
# digits: scikit-learn's 8x8 handwritten digits, upscaled to 96x96
# ---------------------------------------------------------------------------

DIGIT_QUESTIONS = [
    ("What digit is shown in this image?", "The digit shown is {d}."),
    ("Which number is handwritten here?", "The handwritten number is {d}."),
    ("Identify the handwritten digit.", "This is a handwritten digit {d}."),
    ("What is the number in the picture?", "It is the digit {d}."),
]


def digit_followups(d: int, rng: random.Random) -> list[tuple[str, str]]:
    pool = [
        ("Is it an even or an odd number?", f"{d} is {'even' if d % 2 == 0 else 'odd'}."),
        ("What do you get if you add 5 to it?", f"{d} + 5 = {d + 5}."),
        ("What is it multiplied by 3?", f"{d} \u00d7 3 = {d * 3}."),
        ("How would you write it as a word?", f"In words it is \"{NUMBER_WORDS[d]}\"."),
        ("Is it greater than 4?", f"{'Yes' if d > 4 else 'No'}, {d} is {'greater than' if d > 4 else 'not greater than'} 4."),
    ]
    return rng.sample(pool, rng.randint(1, 2))


def digit_image(pixels: np.ndarray) -> Image.Image:
    # 0..16 ink counts -> dark ink on white paper, smoothly upscaled
    pixels = np.pad(pixels, 1)  # a blank margin so the strokes do not touch the border
    arr = (255 - pixels * (255 / 16)).round().clip(0, 255).astype(np.uint8)
    return Image.fromarray(arr, mode="L").resize((96, 96), Image.Resampling.BICUBIC)


def build_digits(root: Path):
    from sklearn.datasets import load_digits

    rng = rng_for("digits")
    data = load_digits()
    records, facts = [], {}
    chosen = []
    for label in range(10):
        idx = [i for i in range(len(data.target)) if data.target[i] == label]
        chosen += rng.sample(idx, 6)
    chosen.sort()
    for n, i in enumerate(chosen, 1):
        d = int(data.target[i])
        rel = f"digits/{i:04d}.png"
        save_png(digit_image(data.images[i]), root / "images" / rel)
        v = rng.randrange(len(DIGIT_QUESTIONS))
        q, a = DIGIT_QUESTIONS[v]
        rounds = [(q, a.format(d=d))]
        if rng.random() < 0.2:
            rounds += digit_followups(d, rng)
        rid = f"digits-{n:04d}"
        records.append({"id": rid, "image": rel, "conversations": convo(rounds)})
        facts[rid] = {"digit": d, "variant": v, "image": rel}
    return records, facts


def digit_paraphrase(f: dict) -> list[tuple[str, str]]:
    q, a = DIGIT_QUESTIONS[(f["variant"] + 1) % len(DIGIT_QUESTIONS)]
    return [(q, a.format(d=f["digit"]))]


# ---------------------------------------------------------------------------
# shapes: 128x128, one to five coloured circles / squares / triangles
# ---------------------------------------------------------------------------

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 200, 20),
    "orange": (245, 130, 20),
    "purple": (140, 60, 180),
}
KINDS = ("circle", "square", "triangle")


def draw_shape(draw: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, s: float, rgb) -> None:
    h = s / 2
    if kind == "circle":
        draw.ellipse([cx - h, cy - h, cx + h, cy + h], fill=rgb)
    elif kind == "square":
        draw.rectangle([cx - h, cy - h, cx + h, cy + h], fill=rgb)
    else:
        draw.polygon([(cx, cy - h), (cx + h, cy + h), (cx - h, cy + h)], fill=rgb)


def place_shapes(rng: random.Random, count: int) -> list[dict]:
    while True:
        shapes = []
        for _ in range(200):
            if len(shapes) == count:
                break
            s = rng.randint(24, 36)
            cx = rng.uniform(s / 2 + 5, 128 - s / 2 - 5)
            cy = rng.uniform(s / 2 + 5, 128 - s / 2 - 5)
            if all((cx - o["x"]) ** 2 + (cy - o["y"]) ** 2 > ((s + o["s"]) * 0.75 + 6) ** 2 for o in shapes):
                shapes.append({"x": cx, "y": cy, "s": s,
                               "kind": rng.choice(KINDS), "colour": rng.choice(list(COLOURS))})
        if len(shapes) == count:
            return sorted(shapes, key=lambda o: o["x"])


def shape_name(o: dict) -> str:
    return f"{o['colour']} {o['kind']}"


def grouped_names(shapes: list[dict]) -> list[str]:
    """"a red circle", "two blue squares", ... in order of first appearance."""
    counts: dict[str, int] = {}
    for o in shapes:
        counts[shape_name(o)] = counts.get(shape_name(o), 0) + 1
    return [f"{article(name)} {name}" if k == 1 else f"{NUMBER_WORDS[k]} {name}s" for name, k in counts.items()]


def shape_questions(shapes: list[dict], rng: random.Random) -> list[tuple[str, str]]:
    n = len(shapes)
    names = [f"{article(shape_name(o))} {shape_name(o)}" for o in shapes]
    pool = []
    pool.append(("How many shapes are in the image?",
                 f"There {'is' if n == 1 else 'are'} {plural(n, 'shape')}: {join_list(grouped_names(shapes))}."))
    if n == 1:
        pool.append(("Describe the shapes in this picture.", f"There is only one shape: {names[0]}."))
    elif all(b["x"] - a["x"] >= 10 for a, b in zip(shapes, shapes[1:])):
        pool.append(("Describe the shapes in this picture from left to right.",
                     f"From left to right: {join_list(names)}."))
    else:
        pool.append(("Describe the shapes in this picture.", f"The picture contains {join_list(names)}."))
    for kind in KINDS:
        of_kind = [o for o in shapes if o["kind"] == kind]
        k = len(of_kind)
        pool.append((f"How many {kind}s are there?",
                     f"There {'is' if k == 1 else 'are'} {plural(k, kind) if k else 'no ' + kind + 's'}."))
        if k == 1:
            pool.append((f"What colour is the {kind}?", f"The {kind} is {of_kind[0]['colour']}."))
    present = {(o["colour"], o["kind"]) for o in shapes}
    if rng.random() < 0.5:
        colour, kind = rng.choice(sorted(present))
    else:
        colour, kind = rng.choice(list(COLOURS)), rng.choice(KINDS)
    yes = (colour, kind) in present
    pool.append((f"Is there {article(colour)} {colour} {kind} in the image?",
                 f"Yes, there is {article(colour)} {colour} {kind}." if yes
                 else f"No, there is no {colour} {kind} in the image."))
    if n >= 2 and shapes[1]["x"] - shapes[0]["x"] >= 10:
        pool.append(("Which shape is furthest to the left?",
                     f"The leftmost shape is {names[0]}."))
    colours = sorted({o["colour"] for o in shapes}, key=list(COLOURS).index)
    pool.append(("Which colours appear in the image?",
                 f"The shapes are {join_list(colours)}." if len(colours) > 1
                 else f"All of the shapes are {colours[0]}." if n > 1 else f"The shape is {colours[0]}."))
    return pool


def build_shapes(root: Path, count: int = 55):
    rng = rng_for("shapes")
    records, facts = [], {}
    for n in range(1, count + 1):
        shapes = place_shapes(rng, rng.choice([1, 2, 2, 3, 3, 3, 4, 4, 5]))
        bg = rng.choice([(255, 255, 255), (245, 245, 240), (235, 240, 245)])
        img = Image.new("RGB", (128, 128), bg)
        draw = ImageDraw.Draw(img)
        for o in shapes:
            draw_shape(draw, o["kind"], o["x"], o["y"], o["s"], COLOURS[o["colour"]])
        rel = f"shapes/shapes_{n:04d}.png"
        save_png(img, root / "images" / rel)
        pool = shape_questions(shapes, rng)
        rounds = rng.sample(pool, min(len(pool), rng.choice([1, 1, 2, 3, 4])))
        rid = f"shapes-{n:04d}"
        records.append({"id": rid, "image": rel, "conversations": convo(rounds)})
        facts[rid] = {"shapes": shapes, "image": rel}
    return records, facts


def shape_paraphrase(f: dict) -> list[tuple[str, str]]:
    shapes = f["shapes"]
    return [("Count the shapes in this image.",
             f"I can see {plural(len(shapes), 'shape')}: {join_list(grouped_names(shapes))}.")]


# ---------------------------------------------------------------------------
# charts: 160x128 bar charts with labelled values
# ---------------------------------------------------------------------------

CATEGORY_SETS = [
    ["A", "B", "C", "D", "E"],
    ["Jan", "Feb", "Mar", "Apr", "May"],
    ["Mon", "Tue", "Wed", "Thu", "Fri"],
    ["North", "South", "East", "West"],
    ["Q1", "Q2", "Q3", "Q4"],
]
CHART_TITLES = ["Sales", "Visitors", "Orders", "Rainfall", "Scores", "Downloads"]
BAR_COLOURS = {"blue": (60, 110, 200), "green": (60, 160, 90), "orange": (235, 140, 40), "grey": (120, 120, 120)}


def build_chart_image(title, cats, values, rgb) -> Image.Image:
    img = Image.new("RGB", (160, 128), (255, 255, 255))
    d = ImageDraw.Draw(img)
    f_title, f_small = font(12), font(9 if max(len(c) for c in cats) > 3 else 10)
    d.text((80, 2), title, fill=(0, 0, 0), font=f_title, anchor="mt")
    left, right, base, top = 8, 152, 110, 34
    d.line([(left, base), (right, base)], fill=(0, 0, 0), width=1)
    slot = (right - left) / len(cats)
    vmax = max(values)
    for i, (c, v) in enumerate(zip(cats, values)):
        x0 = left + i * slot + slot * 0.2
        x1 = left + (i + 1) * slot - slot * 0.2
        y = base - (base - top) * v / vmax
        d.rectangle([x0, y, x1, base - 1], fill=rgb)
        d.text(((x0 + x1) / 2, y - 2), str(v), fill=(0, 0, 0), font=f_small, anchor="md")
        d.text(((x0 + x1) / 2, base + 3), c, fill=(0, 0, 0), font=f_small, anchor="mt")
    return img


def chart_questions(title, cats, values, colour, rng) -> list[tuple[str, str]]:
    vals = dict(zip(cats, values))
    hi = max(cats, key=vals.get)
    lo = min(cats, key=vals.get)
    a, b = rng.sample(cats, 2)
    c = rng.choice(cats)
    pool = [
        ("Which category has the highest value in this bar chart?",
         f"{hi} has the highest value, {vals[hi]}."),
        ("Which bar is the shortest?", f"The shortest bar is {lo}, with a value of {vals[lo]}."),
        (f"What is the value for {c}?", f"The value for {c} is {vals[c]}."),
        ("What is the sum of all the values in the chart?",
         f"The values add up to {' + '.join(str(v) for v in values)} = {sum(values)}."),
        ("How many bars does the chart have?", f"The chart has {plural(len(cats), 'bar')}, one each for {join_list(cats)}."),
        (f"Is {a} larger than {b}?",
         f"{'Yes' if vals[a] > vals[b] else 'No'}: {a} is {vals[a]} and {b} is {vals[b]}."),
        ("What is the title of the chart?", f"The chart is titled \"{title}\"."),
        ("What colour are the bars?", f"The bars are {colour}."),
        (f"What is the difference between {hi} and {lo}?",
         f"{hi} is {vals[hi]} and {lo} is {vals[lo]}, so the difference is {vals[hi] - vals[lo]}."),
    ]
    return pool


def build_charts(root: Path, count: int = 45):
    rng = rng_for("charts")
    records, facts = [], {}
    for n in range(1, count + 1):
        cats = rng.choice(CATEGORY_SETS)
        k = rng.randint(3, len(cats))
        cats = cats[:k]
        while True:
            values = [rng.randint(2, 40) for _ in cats]
            if values.count(max(values)) == 1 and values.count(min(values)) == 1:
                break
        title = rng.choice(CHART_TITLES)
        colour = rng.choice(list(BAR_COLOURS))
        rel = f"charts/chart_{n:04d}.png"
        save_png(build_chart_image(title, cats, values, BAR_COLOURS[colour]), root / "images" / rel)
        pool = chart_questions(title, cats, values, colour, rng)
        rounds = rng.sample(pool, rng.choice([1, 1, 2, 3, 4]))
        rid = f"charts-{n:04d}"
        records.append({"id": rid, "image": rel, "conversations": convo(rounds)})
        facts[rid] = {"title": title, "cats": cats, "values": values, "colour": colour, "image": rel}
    return records, facts


def chart_paraphrase(f: dict) -> list[tuple[str, str]]:
    vals = dict(zip(f["cats"], f["values"]))
    hi = max(f["cats"], key=vals.get)
    return [("Which bar in the chart is the tallest?", f"The tallest bar is {hi}, at {vals[hi]}.")]


# ---------------------------------------------------------------------------
# ocr: rendered words and short phrases, 160x64
# ---------------------------------------------------------------------------

WORDS = [
    "harbor", "window", "garden", "bridge", "yellow", "market", "planet", "silver", "candle", "forest",
    "kitchen", "library", "station", "pencil", "museum", "orange", "winter", "summer", "rocket", "island",
    "coffee", "guitar", "ladder", "mirror", "basket", "button", "castle", "dragon", "engine", "falcon",
    "open late", "no parking", "exit", "bakery", "pharmacy", "welcome", "sale today", "river road",
    "platform 3", "room 204", "fresh bread", "closed", "push", "pull", "quiet please", "tickets",
]
TEXT_STYLES = [
    ("black", (0, 0, 0), "white", (255, 255, 255)),
    ("white", (255, 255, 255), "black", (0, 0, 0)),
    ("dark blue", (20, 40, 120), "light yellow", (255, 250, 200)),
    ("red", (200, 30, 30), "white", (255, 255, 255)),
    ("white", (255, 255, 255), "dark green", (20, 90, 40)),
    ("black", (0, 0, 0), "light grey", (215, 215, 215)),
    ("yellow", (250, 220, 40), "navy blue", (20, 30, 80)),
]
OCR_QUESTIONS = [
    ("What text appears in the image?", "The text reads \"{t}\"."),
    ("Read the text in this image.", "It says \"{t}\"."),
    ("What is written here?", "The image shows the text \"{t}\"."),
]


def build_ocr_image(text: str, fg, bg, size: int, angle: float) -> Image.Image:
    while True:
        f = font(size)
        x0, y0, x1, y1 = f.getbbox(text)
        if x1 - x0 <= 140 or size <= 12:
            break
        size -= 1
    big = Image.new("RGB", (240, 120), bg)
    ImageDraw.Draw(big).text((120, 60), text, fill=fg, font=f, anchor="mm")
    if angle:
        big = big.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=bg)
    return big.crop((40, 28, 200, 92))


def ocr_followups(text, fg_name, bg_name, rng) -> list[tuple[str, str]]:
    letters = sum(ch.isalpha() for ch in text)
    pool = [
        ("What colour is the text?", f"The text is {fg_name} on a {bg_name} background."),
        ("How many letters does it contain?", f"It contains {letters} letters."),
        ("Is the text written in capital letters?",
         "Yes, it is all in capitals." if text.isupper() else "No, it is written in lower-case letters."),
    ]
    words = text.split()
    if len(words) > 1:
        pool.append(("What is the first word?", f"The first word is \"{words[0]}\"."))
    return rng.sample(pool, rng.randint(1, 2))


def build_ocr(root: Path, count: int = 45):
    rng = rng_for("ocr")
    records, facts = [], {}
    words = rng.sample(WORDS, count) if count <= len(WORDS) else [rng.choice(WORDS) for _ in range(count)]
    for n, word in enumerate(words, 1):
        text = word.upper() if rng.random() < 0.25 else word
        fg_name, fg, bg_name, bg = rng.choice(TEXT_STYLES)
        angle = rng.choice([0, 0, 0, rng.uniform(-6, 6)])
        rel = f"ocr/word_{n:04d}.png"
        save_png(build_ocr_image(text, fg, bg, rng.randint(20, 30), round(angle, 2)), root / "images" / rel)
        v = rng.randrange(len(OCR_QUESTIONS))
        q, a = OCR_QUESTIONS[v]
        rounds = [(q, a.format(t=text))]
        if rng.random() < 0.25:
            rounds += ocr_followups(text, fg_name, bg_name, rng)
        rid = f"ocr-{n:04d}"
        records.append({"id": rid, "image": rel, "conversations": convo(rounds)})
        facts[rid] = {"text": text, "variant": v, "image": rel}
    return records, facts


def ocr_paraphrase(f: dict) -> list[tuple[str, str]]:
    q, a = OCR_QUESTIONS[(f["variant"] + 1) % len(OCR_QUESTIONS)]
    return [(q, a.format(t=f["text"]))]


# ---------------------------------------------------------------------------
# photos: crops of scikit-learn's sample photographs (china.jpg, flower.jpg)
# ---------------------------------------------------------------------------

# (photo, name, square box (left, top, side) in the 640x427 original, question/answer pairs)
# Every box was checked by eye; the answers hold for the whole box and for the
# small random shifts applied below.
PHOTO_REGIONS = [
    ("china", "pagoda", (30, 20, 390), [
        ("Describe this image.",
         "A tall, multi-storey Chinese pagoda with orange-tiled roofs trimmed in green and red pillars, "
         "standing among trees under a clear blue sky."),
        ("What kind of building is this?", "It is a traditional Chinese pagoda-style tower with several tiers of curved roofs."),
        ("What colour are the roof tiles?", "The roof tiles are orange, with green and blue trim along the eaves."),
        ("How is the weather?", "It looks sunny and clear: the sky is blue and cloudless."),
    ]),
    ("china", "pagoda top", (90, 20, 240), [
        ("Describe this image.",
         "The upper tiers of a Chinese pagoda: curved orange-tiled roofs with green eaves and a golden finial on top, "
         "against a pale blue sky."),
        ("What is on the very top of the building?", "A rounded golden finial sits on top of the roof."),
        ("Is it day or night?", "It is daytime; the sky is bright blue."),
    ]),
    ("china", "pagoda balcony", (190, 200, 170), [
        ("Describe this image.",
         "A close view of part of a Chinese pagoda: red columns and railings beneath orange-tiled roof eaves "
         "with green decorated trim."),
        ("What colour are the columns?", "The columns are red."),
    ]),
    ("china", "sky", (390, 0, 160), [
        ("Describe this image.", "A patch of clear, very pale blue sky with no clouds."),
        ("Are there any clouds?", "No, the sky is completely clear."),
        ("Is there a building in this picture?", "No, it shows only sky."),
    ]),
    ("china", "lake", (350, 180, 160), [
        ("Describe this image.",
         "A hazy view across a calm lake dotted with small boats, with a low island and a long bridge in the "
         "distance and green treetops along the bottom edge."),
        ("Is there water in the picture?", "Yes, most of the picture is a calm, pale lake."),
    ]),
    ("china", "trees", (490, 285, 142), [
        ("Describe this image.", "Dense green trees and foliage seen in bright daylight."),
        ("What is the main colour in this picture?", "Green, from the leaves of the trees."),
        ("Is there a building in this picture?", "No, only trees and leaves are visible."),
    ]),
    ("flower", "dahlia", (160, 75, 300), [
        ("Describe this image.",
         "A close-up of a single large orange-peach dahlia with many layered, cupped petals, "
         "in front of a blurred dark green and teal background."),
        ("What kind of flower is this?", "It looks like a dahlia, with many rows of rolled, cupped petals."),
        ("What colour is the flower?", "The flower is a soft orange, or peach, colour."),
        ("Is the background in focus?", "No, the background is blurred dark green and teal."),
    ]),
    ("flower", "dahlia centre", (250, 165, 115), [
        ("Describe this image.",
         "An extreme close-up of the centre of a dahlia: tightly packed, curled orange petals."),
        ("What colour are the petals?", "They are orange, deeper in the middle and lighter towards the edges."),
    ]),
    ("flower", "background", (480, 0, 160), [
        ("Describe this image.",
         "An out-of-focus background of dark green and teal leaves, with no clear objects."),
        ("Is there a flower in this picture?", "No, it shows only blurred dark green and teal foliage."),
        ("Is the picture sharp or blurry?", "It is blurry; everything in it is out of focus."),
    ]),
    ("flower", "petal edge", (150, 140, 110), [
        ("Describe this image.",
         "The left edge of a peach-coloured dahlia with rounded petals, against a dark blurred green background."),
        ("What colour are the petals?", "The petals are pale orange, or peach."),
    ]),
]


def build_photos(root: Path, count: int = 30):
    from sklearn.datasets import load_sample_images

    rng = rng_for("photos")
    sample = load_sample_images()
    photos = {Path(fn).stem: Image.fromarray(img) for fn, img in zip(sample.filenames, sample.images)}
    records, facts = [], {}
    for n in range(1, count + 1):
        photo, name, (left, top, side), qa = PHOTO_REGIONS[(n - 1) % len(PHOTO_REGIONS)]
        shift = max(2, side // 16)
        dx, dy = rng.randint(-shift, shift), rng.randint(-shift, shift)
        x0 = min(max(0, left + dx), 640 - side)
        y0 = min(max(0, top + dy), 427 - side)
        out = rng.choice([96, 112, 128])
        crop = photos[photo].crop((x0, y0, x0 + side, y0 + side)).resize((out, out), Image.Resampling.LANCZOS)
        rel = f"photos/{photo}_{n:04d}.png"
        save_png(crop, root / "images" / rel)
        first = qa[0] if rng.random() < 0.6 else rng.choice(qa)
        rounds = [first]
        if rng.random() < 0.35:
            rest = [p for p in qa if p is not first]
            rounds += rng.sample(rest, min(len(rest), rng.randint(1, 2)))
        rid = f"photos-{n:04d}"
        records.append({"id": rid, "image": rel, "conversations": convo(rounds)})
        facts[rid] = {"photo": photo, "region": name, "box": [x0, y0, side], "first": first[0], "image": rel}
    return records, facts


def photo_paraphrase(f: dict) -> list[tuple[str, str]]:
    qa = next(qa for photo, name, box, qa in PHOTO_REGIONS if (photo, name) == (f["photo"], f["region"]))
    desc = qa[0][1]
    return [("Please describe what you see in this picture.", "This picture shows " + desc[0].lower() + desc[1:])]


# ---------------------------------------------------------------------------
# text-only records
# ---------------------------------------------------------------------------

DEFINITIONS = [
    ("What is a prime number?",
     "A prime number is a whole number greater than 1 whose only divisors are 1 and itself, such as 2, 3, 5, 7 and 11."),
    ("What is a triangle?", "A triangle is a flat shape with three straight sides and three angles."),
    ("What does \"photosynthesis\" mean?",
     "Photosynthesis is the process by which plants use light energy to turn carbon dioxide and water into sugar and oxygen."),
    ("What is a bar chart?",
     "A bar chart shows values as rectangular bars whose lengths are proportional to the values they represent."),
    ("What is the boiling point of water at sea level?", "Water boils at 100 degrees Celsius (212 degrees Fahrenheit) at sea level."),
    ("How many days are there in a leap year?", "A leap year has 366 days."),
    ("What is an even number?", "An even number is an integer that is divisible by 2, such as 0, 2, 4 or 10."),
    ("What is a synonym?", "A synonym is a word that means the same, or nearly the same, as another word, like \"big\" and \"large\"."),
    ("Which colour do you mix with blue paint to make green?", "Mixing yellow and blue paint makes green."),
    ("What does a thermometer measure?", "A thermometer measures temperature."),
    ("What is a pagoda?", "A pagoda is a tiered tower with several overhanging roofs, common in East Asian architecture."),
    ("What is optical character recognition?",
     "Optical character recognition (OCR) is the conversion of images of typed or handwritten text into machine-readable text."),
    ("How many sides does a hexagon have?", "A hexagon has six sides."),
    ("What is the capital of France?", "The capital of France is Paris."),
]


def build_text(count: int = 45):
    rng = rng_for("text")
    records = []
    defs = DEFINITIONS[:]
    rng.shuffle(defs)
    for n in range(1, count + 1):
        kind = rng.choice(["add", "mul", "sub", "convert", "def", "def", "chain"])
        if kind == "def" and defs:
            rounds = [defs.pop()]
        elif kind == "add":
            a, b = rng.randint(10, 99), rng.randint(10, 99)
            rounds = [(f"What is {a} + {b}?", f"{a} + {b} = {a + b}.")]
        elif kind == "sub":
            a, b = rng.randint(50, 199), rng.randint(1, 49)
            rounds = [(f"Calculate {a} - {b}.", f"{a} - {b} = {a - b}.")]
        elif kind == "mul":
            a, b = rng.randint(2, 12), rng.randint(2, 12)
            rounds = [(f"What is {a} times {b}?", f"{a} \u00d7 {b} = {a * b}.")]
        elif kind == "convert":
            km = rng.randint(1, 40) / 2
            rounds = [(f"How many metres are there in {km:g} kilometres?", f"{km:g} kilometres is {int(km * 1000):,} metres.")]
            if rng.random() < 0.4:
                rounds.append(("And how many centimetres is that?", f"{int(km * 1000):,} metres is {int(km * 100000):,} centimetres."))
        else:
            a, b = rng.randint(2, 12), rng.randint(2, 12)
            c = rng.choice([x for x in range(2, 13) if (a * b) % x == 0 and x < a * b])
            rounds = [(f"What is {a} \u00d7 {b}?", f"{a} \u00d7 {b} = {a * b}."),
                      (f"Now divide that by {c}.", f"{a * b} \u00f7 {c} = {a * b // c}.")]
            if rng.random() < 0.5:
                r = a * b // c
                rounds.append(("Is the result even?", f"{'Yes' if r % 2 == 0 else 'No'}, {r} is {'even' if r % 2 == 0 else 'odd'}."))
        rec = {"id": f"text-{n:04d}", "conversations": convo(rounds, n_images=0)}
        if rng.random() < 0.3:
            rec["model"] = MODEL_TAG
        records.append(rec)
    return records


# ---------------------------------------------------------------------------
# multi-image records
# ---------------------------------------------------------------------------

def build_multi_image(facts: dict) -> list[dict]:
    rng = rng_for("multi")
    out = []
    digits = [f for k, f in sorted(facts.items()) if k.startswith("digits-")]
    while True:
        a, b = rng.sample(digits, 2)
        if a["digit"] != b["digit"]:
            break
    big = "first" if a["digit"] > b["digit"] else "second"
    out.append({"id": "multi-0001", "image": [a["image"], b["image"]], "conversations": convo([
        ("Which of the two handwritten digits is larger?",
         f"The first image shows {article_num(a['digit'])} and the second shows {article_num(b['digit'])}, "
         f"so the {big} digit "
         f"({max(a['digit'], b['digit'])}) is larger."),
        ("What is their sum?", f"{a['digit']} + {b['digit']} = {a['digit'] + b['digit']}."),
    ], n_images=2)})
    charts = [f for k, f in sorted(facts.items()) if k.startswith("charts-")]
    while True:
        a, b = rng.sample(charts, 2)
        if sum(a["values"]) != sum(b["values"]):
            break
    big = "first" if sum(a["values"]) > sum(b["values"]) else "second"
    out.append({"id": "multi-0002", "image": [a["image"], b["image"]], "conversations": convo([
        ("Which of these two bar charts has the larger total?",
         f"The first chart (\"{a['title']}\") adds up to {sum(a['values'])} and the second (\"{b['title']}\") "
         f"adds up to {sum(b['values'])}, so the {big} chart has the larger total."),
    ], n_images=2)})
    words = [f for k, f in sorted(facts.items()) if k.startswith("ocr-")]
    a, b = rng.sample(words, 2)
    out.append({"id": "multi-0003", "image": [a["image"], b["image"]], "conversations": convo([
        ("Do these two images show the same text?",
         f"No. The first one says \"{a['text']}\" and the second one says \"{b['text']}\"."),
    ], n_images=2)})
    return out


# ---------------------------------------------------------------------------
# broken inputs
# ---------------------------------------------------------------------------

MALFORMED = """[
  {
    "id": "malformed-0001",
    "model": "mini-templates",
    "conversations": [
      {"from": "human", "value": "What is 2 + 2?"},
      {"from": "gpt" "value": "2 + 2 = 4."}
    ]
  }
]
"""


def build_bad(root: Path, good_image: str) -> list[dict]:
    broken = root / "images" / "broken"
    broken.mkdir(parents=True, exist_ok=True)
    # a PNG signature followed by garbage: cannot even be opened
    (broken / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not really a png\x00\xff\x13\x37")
    # a real PNG cut short: the header opens, decoding the pixels fails
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buf, format="PNG")
    data = buf.getvalue()
    (broken / "truncated.png").write_bytes(data[: len(data) // 2])
    ok = [human("<image>\nWhat is in the picture?"), gpt("See the image.")]
    return [
        {"id": "bad-good-image", "image": good_image,
         "conversations": [human("<image>\nWhat digit is shown in this image?"), gpt("__GOOD_ANSWER__")]},
        {"id": "bad-missing-image", "image": "digits/does_not_exist.png", "conversations": copy.deepcopy(ok)},
        {"id": "bad-path-escape", "image": "../../etc/passwd", "conversations": copy.deepcopy(ok)},
        {"id": "bad-corrupt-image", "image": "broken/corrupt.png", "conversations": copy.deepcopy(ok)},
        {"id": "bad-truncated-image", "image": "broken/truncated.png", "conversations": copy.deepcopy(ok)},
        {"id": "bad-empty-conversations", "image": good_image, "conversations": []},
        {"id": "bad-unknown-role", "conversations": [human("Hello, who are you?"), {"from": "robot", "value": "Beep."}]},
        {"id": "bad-unanswered", "image": good_image,
         "conversations": [human("<image>\nWhat digit is shown in this image?")]},
        {"id": "bad-good-text", "conversations": [human("What is 3 + 4?"), gpt("3 + 4 = 7.")]},
    ]


BAD_NOTES = {
    "bad-good-image": "valid (image record)",
    "bad-missing-image": "image file does not exist",
    "bad-path-escape": "image path escapes the image root (`../../etc/passwd`)",
    "bad-corrupt-image": "image file is garbage bytes after a PNG signature (cannot be opened)",
    "bad-truncated-image": "image file is a real PNG cut in half (opens, fails to decode)",
    "bad-empty-conversations": "`conversations` is empty",
    "bad-unknown-role": "a turn has the unknown role `robot`",
    "bad-unanswered": "the human turn has no answer",
    "bad-good-text": "valid (text-only record)",
}


# ---------------------------------------------------------------------------
# assembly
# ---------------------------------------------------------------------------

def source_of(rec: dict) -> str:
    img = rec.get("image")
    if img is None:
        return "text"
    first = img[0] if isinstance(img, list) else img
    return first.split("/", 1)[0]


def n_rounds(rec: dict) -> int:
    return sum(t["from"] == "human" for t in rec["conversations"])


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def build(out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    # start from a clean image tree so that no stale file survives a rerun
    if (out / "images").exists():
        shutil.rmtree(out / "images")

    digit_recs, digit_facts = build_digits(out)
    shape_recs, shape_facts = build_shapes(out)
    chart_recs, chart_facts = build_charts(out)
    ocr_recs, ocr_facts = build_ocr(out)
    photo_recs, photo_facts = build_photos(out)
    text_recs = build_text()
    facts = {**digit_facts, **shape_facts, **chart_facts, **ocr_facts, **photo_facts}
    multi_recs = build_multi_image(facts)

    base = digit_recs + shape_recs + chart_recs + ocr_recs + photo_recs + text_recs + multi_recs
    by_id = {r["id"]: r for r in base}

    # near duplicates: same image, slightly different wording, new id
    rng = rng_for("duplicates")
    near_sources = [("digits", digit_paraphrase, 2), ("shapes", shape_paraphrase, 1),
                    ("charts", chart_paraphrase, 1), ("ocr", ocr_paraphrase, 1), ("photos", photo_paraphrase, 1)]
    near = []
    for src, fn, k in near_sources:
        ids = sorted(i for i in by_id if i.startswith(src + "-"))
        for rid in rng.sample(ids, k):
            rounds = fn(facts[rid])
            near.append((rid, {"id": f"near-{len(near) + 1:04d}", "image": by_id[rid]["image"],
                               "conversations": convo(rounds)}))

    # exact duplicates: a deep copy of the whole record, same id
    exact_ids = rng.sample(sorted(r["id"] for r in digit_recs + shape_recs + chart_recs + ocr_recs), 4)
    exact_ids += rng.sample(sorted(r["id"] for r in text_recs), 1)

    records = base[:]
    rng.shuffle(records)
    for orig, rec in near:
        pos = records.index(by_id[orig])
        records.insert(rng.randint(pos + 1, len(records)), rec)
    for rid in exact_ids:
        pos = next(i for i, r in enumerate(records) if r["id"] == rid)
        records.insert(rng.randint(pos + 1, len(records)), copy.deepcopy(by_id[rid]))

    write_json(out / "data.json", records)

    bad = build_bad(out, digit_recs[0]["image"])
    bad[0]["conversations"][1]["value"] = f"The digit shown is {digit_facts[digit_recs[0]['id']]['digit']}."
    write_json(out / "bad_records.json", bad)
    (out / "malformed.json").write_text(MALFORMED, encoding="utf-8")

    stats = summarise(out, records, near, exact_ids)
    stats["example_image"] = digit_recs[0]["image"]
    try:
        json.loads(MALFORMED)
        raise AssertionError("MALFORMED must not parse")
    except json.JSONDecodeError as e:
        stats["malformed_error"] = str(e)
        stats["malformed_line"] = e.lineno
    (out / "README.md").write_text(readme(stats), encoding="utf-8")
    return stats


def summarise(out: Path, records: list[dict], near, exact_ids) -> dict:
    per_source: dict[str, int] = {}
    for r in records:
        per_source[source_of(r)] = per_source.get(source_of(r), 0) + 1
    images: dict[str, tuple[int, int]] = {}
    for d in sorted((out / "images").iterdir()):
        files = sorted(d.glob("*.png"))
        images[d.name] = (len(files), sum(f.stat().st_size for f in files))
    seen, exact_positions = {}, []
    for i, r in enumerate(records):
        key = json.dumps(r, sort_keys=True)
        if key in seen:
            exact_positions.append((r["id"], seen[key], i))
        else:
            seen[key] = i
    pos = {id(r): i for i, r in enumerate(records)}
    return {
        "total": len(records),
        "per_source": per_source,
        "images": images,
        "text_only": sum("image" not in r for r in records),
        "multi_turn": sum(n_rounds(r) >= 2 for r in records),
        "multi_image": sum(isinstance(r.get("image"), list) for r in records),
        "with_model_key": sum("model" in r for r in records),
        "unique_ids": len({r["id"] for r in records}),
        "exact": exact_positions,
        "near": [(rec["id"], orig, rec["image"], pos[id(rec)]) for orig, rec in near],
        "rounds_hist": {k: sum(n_rounds(r) == k for r in records) for k in range(1, 6)},
    }


def readme(s: dict) -> str:
    src_desc = {
        "digits": "handwritten digits from scikit-learn's `load_digits` (8x8 with a 1-pixel margin, upscaled to 96x96, dark ink on white)",
        "shapes": "1-5 coloured circles/squares/triangles drawn by the script (128x128)",
        "charts": "bar charts with 3-5 labelled bars drawn by the script (160x128)",
        "ocr": "words and short phrases rendered by the script in Pillow's bundled font (160x64)",
        "photos": "crops of scikit-learn's sample photographs `china.jpg` and `flower.jpg` (96-128 px)",
        "text": "text-only records (no `image` key): arithmetic, unit conversion, definitions",
    }
    lines = [
        "# mini: a small example dataset",
        "",
        "A tiny visual-instruction dataset in LLaVA format for trying out mmselect, for the docs and for tests.",
        "Everything here is written by [`../make_mini.py`](../make_mini.py); do not edit the files by hand,",
        "change the script and rerun it instead:",
        "",
        "```bash",
        "python examples/make_mini.py          # rewrites examples/mini/ (deterministic, seeded)",
        "```",
        "",
        "It needs only NumPy, Pillow and scikit-learn. Rerunning it reproduces the same files byte for byte",
        "with the same library versions (PNG encoding, JPEG decoding and font rendering could in principle differ",
        "between versions of Pillow and its libraries).",
        "",
        "## Layout",
        "",
        "```",
        "mini/",
        "  data.json          the dataset: a JSON list of LLaVA records",
        "  images/<source>/   the images; `image` paths in data.json are relative to images/",
        "  images/broken/     a corrupt and a truncated PNG, used only by bad_records.json",
        "  bad_records.json   deliberately broken records (see below)",
        "  malformed.json     a file that is not valid JSON",
        "```",
        "",
        f"Use `images/` as the image root, e.g. `examples/mini/images` + `{s['example_image']}`.",
        "",
        "## Records",
        "",
        "Each record is `{\"id\", \"image\", \"conversations\"}` with `conversations` alternating "
        "`{\"from\": \"human\"}` / `{\"from\": \"gpt\"}` turns. The first human turn of an image record starts with "
        "`<image>\\n` (`<image>\\n<image>\\n` for the two-image records). Text-only records have no `image` key; "
        f"{s['with_model_key']} of them carry an extra `\"model\": \"{MODEL_TAG}\"` key, as some real ShareGPT-style "
        "records do. The first directory of an image path names its source.",
        "",
        "Every answer is true of its image: the script knows the digit label, the shapes and colours it drew, "
        "the bar values, the rendered text, and the photo crops come from hand-checked regions.",
        "",
        f"Total: **{s['total']} records** ({s['unique_ids']} distinct ids).",
        "",
        "| source | records | image files | image bytes | content |",
        "|---|---:|---:|---:|---|",
    ]
    for src in list(SOURCES) + ["text"]:
        n_img, n_bytes = s["images"].get(src, (0, 0))
        img_cols = f"{n_img} | {n_bytes:,}" if src != "text" else "- | -"
        lines.append(f"| `{src}` | {s['per_source'].get(src, 0)} | {img_cols} | {src_desc[src]} |")
    lines += [
        "",
        "Records are counted by the source of their first image; this includes the near and exact duplicates and "
        "the two-image records (`multi-0001`: two digits, `multi-0002`: two charts, `multi-0003`: two ocr images).",
        "",
        f"- text-only records: {s['text_only']}",
        f"- multi-turn records (2 or more human turns): {s['multi_turn']} "
        f"(rounds: " + ", ".join(f"{k}: {v}" for k, v in s["rounds_hist"].items() if v) + ")",
        f"- multi-image records (`image` is a list of 2 paths): {s['multi_image']}",
        f"- exact duplicates (extra copies): {len(s['exact'])}",
        f"- near duplicates: {len(s['near'])}",
        "",
        "### Exact duplicates",
        "",
        "These records appear twice, identical in every field including `id` (real datasets have duplicate ids too).",
        "Positions are 0-based indexes into the list in `data.json`.",
        "",
        "| id | first position | copy position |",
        "|---|---:|---:|",
    ]
    for rid, first, second in s["exact"]:
        lines.append(f"| `{rid}` | {first} | {second} |")
    lines += [
        "",
        "### Near duplicates",
        "",
        "Same image as an existing record, a single round with slightly different wording, and a new id.",
        "",
        "| id | position | near duplicate of | image |",
        "|---|---:|---|---|",
    ]
    for rid, orig, img, p in s["near"]:
        lines.append(f"| `{rid}` | {p} | `{orig}` | `{img}` |")
    lines += [
        "",
        "## Broken inputs",
        "",
        "`bad_records.json` is valid JSON (a list, image root `images/`) whose records exercise validation:",
        "",
        "| id | problem |",
        "|---|---|",
    ]
    for rid, note in BAD_NOTES.items():
        lines.append(f"| `{rid}` | {note} |")
    lines += [
        "",
        f"`malformed.json` is not valid JSON: on line {s['malformed_line']} the comma between `\"from\": \"gpt\"` "
        f"and `\"value\"` is missing, so parsing fails there (Python's `json.load` raises "
        f"`JSONDecodeError: {s['malformed_error']}`).",
        "",
        "## Licence and sources",
        "",
        "- `shapes/`, `charts/`, `ocr/`, `images/broken/` and all questions and answers are generated by "
        "`make_mini.py` and are the project's own, under the project's licence (Apache-2.0). The text in `charts/` "
        "and `ocr/` is drawn with the font bundled in Pillow (Aileron Regular, CC0 1.0).",
        "- `digits/` are upscaled images from scikit-learn's bundled copy of the UCI \"Optical Recognition of "
        "Handwritten Digits\" test set (E. Alpaydin and C. Kaynak, 1998). scikit-learn is BSD-3-Clause licensed; "
        "the UCI repository distributes the data set under CC BY 4.0.",
        "- `photos/` are crops of the two sample images shipped with scikit-learn (`sklearn/datasets/images/`), "
        "which scikit-learn's README there lists as released under Creative Commons Attribution 2.0 "
        "(https://creativecommons.org/licenses/by/2.0/): `china.jpg` by danielbuechele "
        "(https://www.flickr.com/photos/danielbuechele/6061409035/) and `flower.jpg` by vultilion "
        "(https://www.flickr.com/photos/vultilion/6056698931/), both retrieved by Robert Layton in 2011. "
        "The crops are resized.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "mini",
                    help="output directory (default: examples/mini next to this script)")
    args = ap.parse_args()
    s = build(args.out)
    print(f"wrote {s['total']} records to {args.out / 'data.json'}")
    for src, n in sorted(s["per_source"].items()):
        print(f"  {src:8s} {n}")
    print(f"  text-only {s['text_only']}, multi-turn {s['multi_turn']}, multi-image {s['multi_image']}, "
          f"exact duplicates {len(s['exact'])}, near duplicates {len(s['near'])}")


if __name__ == "__main__":
    main()
