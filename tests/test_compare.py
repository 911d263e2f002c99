"""``protoseg compare``: per-class IoU differences between evaluation reports."""

import json
import re

import pytest

from protoseg import cli
from protoseg.errors import ProtosegError
from protoseg.eval.compare import compare, compare_files, load_reports, to_markdown


def report(dataset, ious, miou, classes=("road", "car", "truck", "sky")):
    return {
        "dataset": dataset, "images": 3, "num_classes": len(classes), "mIoU": miou, "mAcc": 50.0, "aAcc": 80.0,
        "per_class": [{"class": c, "IoU": v, "Acc": v} for c, v in zip(classes, ious, strict=True)],
        "totals": {}, "config": {"predictor": {"kind": "segmenter"}},
    }


@pytest.fixture
def reports(tmp_path):
    base = tmp_path / "base.json"
    new = tmp_path / "new.json"
    base.write_text(json.dumps(report("cityscapes", [90.0, 60.0, 20.0, None], 56.6667)))
    new.write_text(json.dumps(report("cityscapes", [91.0, 50.0, 35.0, None], 58.6667)))
    return base, new


@pytest.fixture
def run(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # a wide console: no wrapped cells

    def invoke(*args):
        capsys.readouterr()
        code = cli.run(list(map(str, args)))
        out = capsys.readouterr()
        return code, out.out, out.err

    return invoke


def test_compare_deltas_sorted_by_largest_change(reports):
    c = compare_files(reports)
    assert c.dataset == "cityscapes"
    assert [(r.name, r.delta) for r in c.rows] == [
        ("truck", (15.0,)), ("car", (-10.0,)), ("road", (1.0,)), ("sky", (None,)),
    ]
    assert c.rows[0].iou == (20.0, 35.0)
    assert c.miou_delta[0] is None and c.miou_delta[1] == pytest.approx(2.0)
    assert [r.label for r in c.reports] == ["base", "new"]


def test_three_runs_sort_by_the_largest_difference_of_any_run(tmp_path, reports):
    third = tmp_path / "third.json"
    third.write_text(json.dumps(report("cityscapes", [60.0, 60.0, 20.0, 10.0], 50.0)))
    c = compare(load_reports([*reports, third]))
    assert [r.name for r in c.rows] == ["road", "truck", "car", "sky"]
    assert c.rows[0].delta == (1.0, -30.0)
    assert c.rows[-1].delta == (None, None)


def test_cli_prints_the_table_with_deltas_and_mean(reports, run):
    code, out, err = run("compare", *reports)
    assert code == 0, err
    lines = out.splitlines()
    row = {name: next(line for line in lines if f"'{name}'" in line) for name in ("truck", "car", "road", "sky")}
    assert "+15.00" in row["truck"] and "-10.00" in row["car"] and "+1.00" in row["road"]
    assert row["sky"].count("n/a") == 3
    # largest |Δ| first
    assert lines.index(row["truck"]) < lines.index(row["car"]) < lines.index(row["road"]) < lines.index(row["sky"])
    mean = next(line for line in lines if "mean (mIoU)" in line)
    assert re.search(r"56\.67.*58\.67.*\+2\.00", mean)
    assert "base (baseline)" in out and "new" in out


def test_cli_top_and_markdown(reports, run, tmp_path):
    md = tmp_path / "cmp.md"
    code, out, err = run("compare", *reports, "--top", "1", "--markdown", md)
    assert code == 0, err
    assert "'truck'" in out and "'car'" not in out and "3 more classes" in out
    text = md.read_text()
    assert text == to_markdown(compare_files(reports))
    assert "| 2 | `truck` | 20.00 | 35.00 | +15.00 |" in text
    assert "| 1 | `car` | 60.00 | 50.00 | -10.00 |" in text
    assert text.count("\n| ") == 6  # header, 4 classes, mean


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "does not exist"),
    (lambda p: p.write_text("{not json"), "not a JSON evaluation report"),
    (lambda p: p.write_text(json.dumps([1, 2])), "not an evaluation report"),
    (lambda p: p.write_text(json.dumps({"dataset": "cityscapes", "per_class": [{"class": "road"}]})), "IoU"),
    (lambda p: p.write_text(json.dumps(report("ade20k", [1.0, 2.0, 3.0, 4.0], 2.5))), "dataset 'ade20k'"),
    (lambda p: p.write_text(json.dumps(report("cityscapes", [1.0, 2.0, 3.0], 2.0, ("road", "car", "bus")))),
     "different class lists"),
    (lambda p: p.write_text(json.dumps(report("cityscapes", [1.0, 2.0, 3.0, 4.0], 2.5,
                                              ("road", "car", "bus", "sky")))), "class 2 is 'bus' vs 'truck'"),
])
def test_cli_rejects_what_cannot_be_compared(reports, run, tmp_path, make, message):
    other = tmp_path / "other.json"
    make(other)
    code, out, err = run("compare", reports[0], other)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert message in err


def test_needs_two_reports_and_a_valid_top(reports, run):
    code, _, err = run("compare", reports[0])
    assert code == 2 and "at least two reports" in err
    code, _, err = run("compare", *reports, "--top", "-1")
    assert code == 2 and "--top" in err
    with pytest.raises(ProtosegError, match="at least two"):
        load_reports([])


def test_markdown_never_overwrites_a_report(reports, run):
    before = reports[1].read_bytes()
    code, _, err = run("compare", *reports, "--markdown", reports[1])
    assert code == 2 and "one of the reports" in err
    assert reports[1].read_bytes() == before


def test_same_file_names_in_different_folders_get_distinct_labels(tmp_path, reports):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for sub, src in (("a", reports[0]), ("b", reports[1])):
        (tmp_path / sub / "report.json").write_bytes(src.read_bytes())
    c = compare_files([tmp_path / "a" / "report.json", tmp_path / "b" / "report.json"])
    assert [r.label for r in c.reports] == ["a/report", "b/report"]
