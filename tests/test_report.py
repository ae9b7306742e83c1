import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmselect.report import compare, write_html_report
from mmselect.report.compare import jaccard_matrix
from mmselect.report.page import render_value
from mmselect.report.sources import ReportError
from mmselect.report.summaries import histogram, reason_group

MINI = Path(__file__).resolve().parents[1] / "examples" / "mini"


def _fake_output(directory: Path, keys, tasks, selected, scores, rejected=(), method="m", extra=None) -> Path:
    """An output directory as `mmselect select` writes it, without a dataset."""
    directory.mkdir(parents=True)
    columns = {
        "key": pa.array(keys, pa.string()),
        "position": pa.array(np.arange(len(keys), dtype=np.int64)),
        "task": pa.array(tasks, pa.string()),
        "selected": pa.array(np.asarray(selected, dtype=bool)),
        "score": pa.array(np.asarray(scores, dtype=np.float64)),
    }
    for name, values in (extra or {}).items():
        columns[name] = pa.array(values)
    pq.write_table(pa.table(columns), directory / "selection.parquet")
    (directory / "rejected.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rejected))
    n_selected = int(np.sum(selected))
    manifest = {
        "method": method,
        "params": {"seed": 0},
        "budget": str(n_selected),
        "budget_samples": n_selected,
        "data": None,
        "counts": {
            "input_records": len(keys) + len(rejected),
            "selected": n_selected,
            "not_selected": len(keys) - n_selected,
            "rejected": len(rejected),
        },
        "outputs": {"selection": "selection.parquet"},
        "method_info": {"per_task": {"a": {"budget": 2, "clusters": 3}, "b": {"budget": 1, "clusters": 1}},
                        "guards": ["rate clamped for b"], "norms": list(range(100))},
        "seconds": 1.25,
    }
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


def _data_values(html: str, attribute: str) -> dict[str, str]:
    return dict(re.findall(rf'data-{attribute}="([^"]+)" data-value="([^"]+)"', html))


def test_jaccard_worked_by_hand():
    matrix = jaccard_matrix([{"a", "b", "c"}, {"b", "c", "d"}, {"a"}, set()])
    assert matrix[0, 1] == pytest.approx(2 / 4)
    assert matrix[0, 2] == pytest.approx(1 / 3)
    assert matrix[1, 2] == 0.0
    assert matrix[2, 3] == 0.0
    assert np.array_equal(np.diag(matrix), np.ones(4))
    assert np.array_equal(matrix, matrix.T)


def test_compare_overlap_unique_records_and_rank_agreement(tmp_path):
    keys = [f"{i:07d}-00000000{i:02d}" for i in range(6)]
    tasks = ["a", "a", "a", "b", "b", "b"]
    one = _fake_output(tmp_path / "one", keys, tasks, [1, 1, 1, 0, 0, 0], [6, 5, 4, 3, 2, 1], method="first")
    two = _fake_output(tmp_path / "two", keys, tasks, [0, 1, 1, 1, 0, 0], [1, 2, 3, 4, 5, 6], method="second")
    page = compare([one, two], tmp_path / "cmp")
    html = page.read_text()
    markdown = (tmp_path / "cmp" / "compare.md").read_text()
    # {0,1,2} vs {1,2,3}: 2 shared of 4 in the union; scores in opposite order
    assert "| first 3 | 1.000 | 0.500 |" in markdown
    assert "| first 3 | 1.000 (6) | -1.000 (6) |" in markdown
    assert "| a | 3 | 3 | 2 |" in markdown and "| b | 3 | 0 | 1 |" in markdown
    assert _data_values(html, "unique") == {"first 3": "1", "second 3": "1"}
    assert _data_values(html, "count") == {"kept_by_all": "2"}
    assert 'data-chart="jaccard"' in html


def test_compare_needs_two_outputs(tmp_path):
    with pytest.raises(ReportError, match="at least two"):
        compare([tmp_path], tmp_path / "cmp")


def test_report_of_a_missing_directory_names_it(tmp_path):
    with pytest.raises(ReportError, match="manifest.json not found"):
        write_html_report(tmp_path / "nowhere")


def test_html_report_from_the_output_directory_alone(tmp_path):
    n = 50
    rng = np.random.default_rng(0)
    selected = np.zeros(n, dtype=bool)
    selected[:12] = True
    scores = rng.random(n)
    scores[[3, 20]] = np.nan
    rejected = [
        {"key": "0000050-aaaaaaaaaa", "position": 50, "reason": "image not found: coco/1.png", "stage": "read"},
        {"key": "0000051-bbbbbbbbbb", "position": 51, "reason": "image not found: coco/2.png", "stage": "read"},
        {"key": "0000052-cccccccccc", "position": 52, "reason": "empty conversation", "stage": "read"},
    ]
    out = _fake_output(
        tmp_path / "out", [f"{i:07d}-{i:010d}" for i in range(n)], ["x", "y"] * (n // 2), selected, scores, rejected,
        extra={"uniqueness": rng.random(n), "cluster": np.arange(n) % 7},
    )
    html = write_html_report(out).read_text()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["outputs"]["report_html"] == "report.html"
    counts = _data_values(html, "count")
    assert {k: int(v) for k, v in counts.items() if k in manifest["counts"]} == manifest["counts"]
    assert int(counts["usable"]) == n and int(counts["budget_samples"]) == 12
    # one histogram per value column; NaN scores are counted, not dropped silently
    assert 'data-chart="score-score"' in html and 'data-chart="score-uniqueness"' in html
    assert "2 records without a value (NaN)" in html
    # rejected records grouped by reason without their particulars
    assert re.search(r"<td>image not found</td><td class=\"n\">2</td>", html)
    # readable diagnostics: a dict of dicts is a table with a column per field, a long list a summary
    assert "<th>clusters</th>" in html and "100 values: min 0, median 50, max 99" in html
    assert "src=\"http" not in html and "href=\"http" not in html
    assert "no record cards" in html  # no dataset: said, not failed


def test_reason_groups():
    assert reason_group("image not found: digits/0001.png") == "image not found"
    assert reason_group("2 '<image>' placeholders but 1 image(s)") == "N … placeholders but N image(s)"
    assert reason_group("image path '../../etc/passwd' escapes the image root") == "image path … escapes the image root"


def test_render_value_tables_and_summaries():
    html = render_value({"coco": {"budget": 3, "rate": 0.5}, "gqa": {"budget": 1, "capped": True}})
    assert "<th>budget</th><th>rate</th><th>capped</th>" in html
    assert "<td class=\"n\">3</td><td class=\"n\">0.5</td><td>–</td>" in html
    assert render_value([1, 2, 3]) == "1, 2, 3"
    assert "… 10 more not shown" in render_value([{"i": i} for i in range(50)])


def test_histogram_accounts_for_every_value():
    values = np.array([0.0, 0.1, 0.5, 0.9, 1.0, np.nan, np.inf])
    selected = np.array([True, False, True, False, True, True, False])
    h = histogram("x", values, selected, bins=4)
    assert h.kept.tolist() == [1, 0, 1, 1] and h.dropped.tolist() == [1, 0, 0, 1]
    assert (h.missing_kept, h.missing_dropped) == (1, 1)


@pytest.fixture(scope="module")
def mini_run(tmp_path_factory):
    from mmselect import pipeline

    out = tmp_path_factory.mktemp("report-run")
    pipeline.run(MINI / "bad_records.json", method="random", budget=1, out=out, model="tiny-llava",
                 image_root=MINI / "images", progress=False, device="cpu")
    return out


def test_run_writes_the_page_with_rejected_cards(mini_run):
    manifest = json.loads((mini_run / "manifest.json").read_text())
    assert manifest["outputs"]["report_html"] == "report.html"
    assert manifest["image_root"] == str(MINI / "images")
    html = (mini_run / "report.html").read_text()
    counts = _data_values(html, "count")
    assert {k: int(v) for k, v in counts.items() if k in manifest["counts"]} == manifest["counts"]
    rejected = [json.loads(line) for line in (mini_run / "rejected.jsonl").read_text().splitlines()]
    assert manifest["counts"]["rejected"] == len(rejected) > 0
    for item in rejected[:6]:
        assert item["key"] in html
    assert "bad-missing-image" in html  # records re-read from the dataset for the cards
    images = re.findall(r'<img src="([^"]+)"', html)
    assert images and all(src.startswith("data:image/jpeg;base64,") for src in images)


def test_report_command_rewrites_the_page_from_the_directory(mini_run):
    from typer.testing import CliRunner

    from mmselect.cli import app

    before = (mini_run / "report.html").read_text()
    (mini_run / "report.html").unlink()
    result = CliRunner().invoke(app, ["report", str(mini_run)])
    assert result.exit_code == 0, result.output
    after = (mini_run / "report.html").read_text()
    assert _data_values(after, "count") == _data_values(before, "count")
    assert re.findall(r'<img src="([^"]+)"', after) == re.findall(r'<img src="([^"]+)"', before)


def test_markdown_report_diagnostics_are_tables(tmp_path):
    from mmselect.report import write_report

    info = {"budget": 3, "tasks": [{"task": "a", "budget": 2}, {"task": "b", "budget": 1}],
            "clusters": {"source": "k-means", "runs": [{"group": "image", "n": 4}]}, "norms": list(range(100))}
    path = write_report(
        tmp_path, method="m", params={}, budget="3", counts={"input_records": 5, "selected": 3, "not_selected": 1, "rejected": 1},
        tasks=np.array(["a", "a", "b", "b"]), selected=np.array([True, True, True, False]), scores=np.arange(4.0),
        rejected=[{"key": "k", "reason": "image not found: a/1.png"}], info=info,
    )
    text = path.read_text()
    assert "| task | budget |\n|---|---|\n| a | 2 |\n| b | 1 |" in text
    assert "| source | k-means |" in text and "| group | n |\n|---|---|\n| image | 4 |" in text
    assert "100 values: min 0, median 49.5, max 99" in text
    assert "| image not found | 1 |" in text


def test_numbers_on_the_page_include_infinities():
    from mmselect.report.page import number

    assert number(float("inf")) == "∞" and number(float("-inf")) == "−∞"
    assert number(float("nan")) == "NaN" and number(2.0) == "2" and number(1234567.0) == "1,234,567"
