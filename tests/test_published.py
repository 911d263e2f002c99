"""The published-results table: contents, provenance, filtering and the side-by-side Markdown."""

import fnmatch
import re
import tomllib
from pathlib import Path

import pytest

from protoseg.errors import ProtosegError
from protoseg.eval.protocols import BENCHMARKS, FAMILIES
from protoseg.eval.published import (
    COLUMNS,
    PROVENANCES,
    load_published,
    parse_published,
    published,
    side_by_side,
)

ROOT = Path(__file__).resolve().parents[1]

# The target numbers of DESIGN.md ("Evaluation protocol"), mIoU %, TCL protocol.
DESIGN_TARGETS = {
    ("FreeDA", "ViT-B"): {"voc20": 85.6, "context59": 43.1, "coco-stuff": 27.8, "cityscapes": 36.7, "ade20k": 22.4},
    ("FreeDA", "ViT-L"): {"voc20": 87.9, "context59": 43.5, "coco-stuff": 28.8, "cityscapes": 36.7, "ade20k": 23.2,
                          "voc": 55.4, "context60": 38.3, "coco-object": 37.4},
    ("DPSM", "ViT-B"): {"voc20": 86.5, "context59": 43.9, "coco-stuff": 28.5, "ade20k": 24.2, "context60": 39.4,
                        "coco-object": 38.4},
}


def test_every_row_has_known_dataset_protocol_provenance_and_a_source():
    rows = load_published()
    assert len(rows) >= 60
    for r in rows:
        assert r.dataset in BENCHMARKS
        assert r.protocol in FAMILIES
        assert r.provenance in PROVENANCES
        assert r.source.strip() and r.method.strip() and r.backbone.strip()
        assert 0 < r.miou < 100
    keys = [(r.method, r.backbone, r.protocol, r.dataset) for r in rows]
    assert len(keys) == len(set(keys))


def test_freeda_and_dpsm_rows_are_exactly_the_design_targets():
    rows = load_published()
    for (method, backbone), targets in DESIGN_TARGETS.items():
        got = {r.dataset: r.miou for r in rows if (r.method, r.backbone) == (method, backbone)}
        assert got == targets, (method, backbone)
        assert {r.protocol for r in rows if r.method == method} == {"tcl"}
        assert {r.provenance for r in rows if r.method == method} == {"paper"}


def test_sclip_family_methods_are_present_under_their_protocol():
    rows = load_published()
    methods = {r.method for r in rows if r.protocol == "sclip"}
    assert {"SCLIP", "NACLIP", "ProxyCLIP", "Trident", "CorrCLIP"} <= methods
    # Spot checks against the sources named in the rows.
    def value(method, backbone, dataset):
        return next(r.miou for r in rows if (r.method, r.backbone, r.dataset) == (method, backbone, dataset))

    assert value("SCLIP", "ViT-B/16", "voc20") == 81.54  # SCLIP README
    assert value("NACLIP", "ViT-B/16", "ade20k") == 19.05  # NACLIP README (with PAMR)
    assert value("CorrCLIP", "ViT-L/14", "voc20") == 91.5  # CorrCLIPv1 README, SAM2 32 row
    assert value("Trident", "ViT-H/14", "cityscapes") == 47.6  # Trident README table
    # Quoted numbers say so, and name the table they come from.
    for r in rows:
        if r.provenance == "quoted":
            assert "Trident README" in r.source
    # A method's eight numbers under the SCLIP protocol average as the sources state (ProxyCLIP ViT-H: 44.4).
    proxy_h = [r.miou for r in rows if (r.method, r.backbone) == ("ProxyCLIP", "ViT-H/14")]
    assert len(proxy_h) == 8 and round(sum(proxy_h) / 8, 1) == 44.4


def test_published_filters_by_dataset_and_protocol_family_best_first():
    ade = published("ade20k", "tcl")
    assert [r.method for r in ade][:2] == ["DPSM", "FreeDA"]
    assert all(r.dataset == "ade20k" and r.protocol == "tcl" for r in ade)
    assert [r.miou for r in ade] == sorted((r.miou for r in ade), reverse=True)
    # A protocol name of the SCLIP family selects the family's rows.
    assert published("voc", "proxyclip") == published("voc", "sclip")
    assert {r.protocol for r in published("voc", "naclip")} == {"sclip"}
    with pytest.raises(ProtosegError, match="unknown protocol"):
        published("voc", "groupvit")
    with pytest.raises(ProtosegError, match="dataset"):
        published("pascal", "tcl")


def _table_rows(markdown: str) -> list[list[str]]:
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and not line.startswith("| #")]
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in rows]


def test_side_by_side_ranks_the_run_among_the_published_rows():
    report = {"dataset": "ade20k", "mIoU": 23.0, "per_class": [], "config": {}}
    md = side_by_side({**report, "method": "protoseg freeda-l"}, "ade20k", "tcl")
    rows = _table_rows(md)
    names = [r[1] for r in rows]
    expected = [f"{r.method} ({r.backbone})" for r in published("ade20k", "tcl")]
    # The run sits between FreeDA ViT-L (23.2) and FreeDA ViT-B (22.4), in bold.
    run_at = names.index("**protoseg freeda-l**")
    assert names[:run_at] + names[run_at + 1:] == expected
    assert names[run_at - 1] == "FreeDA (ViT-L)" and names[run_at + 1] == "FreeDA (ViT-B)"
    assert rows[run_at][2] == "**23.00**"
    assert [r[0] for r in rows] == [str(i) for i in range(1, len(rows) + 1)]
    assert "tcl protocol" in md
    # No row of another dataset or protocol family.
    assert not any(n.startswith(("SCLIP", "Trident", "NACLIP")) for n in names)


def test_side_by_side_default_label_missing_score_and_sclip_rows():
    md = side_by_side({"mIoU": None}, "voc", "sclip")
    rows = _table_rows(md)
    assert rows[-1][1] == "**this run**" and rows[-1][2] == "**n/a**"
    assert len(rows) == len(published("voc", "sclip")) + 1
    assert "NACLIP (ViT-B/16) | 64.07" in md  # two-decimal numbers keep their precision
    assert re.search(r"\| SCLIP \(ViT-B/16\) \| 59\.63 \|", md)


def test_side_by_side_rejects_a_report_of_another_dataset_or_without_miou():
    with pytest.raises(ProtosegError, match="'voc20'"):
        side_by_side({"dataset": "voc20", "mIoU": 80.0}, "voc", "tcl")
    with pytest.raises(ProtosegError, match="mIoU"):
        side_by_side({"dataset": "voc"}, "voc", "tcl")
    with pytest.raises(ProtosegError, match="number"):
        side_by_side({"mIoU": "high"}, "voc", "tcl")


def test_parse_rejects_bad_tables():
    header = ",".join(COLUMNS) + "\n"
    good = "X,ViT-B,tcl,voc20,50.0,paper,Some paper Table 1,\n"
    assert parse_published(header + good)[0].miou == 50.0
    for bad, message in [
        ("X,ViT-B,tcl,pascal,50.0,paper,S,\n", "unknown dataset"),
        ("X,ViT-B,mmseg,voc20,50.0,paper,S,\n", "unknown protocol"),
        ("X,ViT-B,tcl,voc20,50.0,blog,S,\n", "provenance"),
        ("X,ViT-B,tcl,voc20,50.0,paper, ,\n", "source"),
        ("X,ViT-B,tcl,voc20,fifty,paper,S,\n", "not a number"),
        ("X,ViT-B,tcl,voc20,150,paper,S,\n", "percentage"),
        (good, "duplicate"),
    ]:
        with pytest.raises(ProtosegError, match=message):
            parse_published(header + good + bad if bad == good else header + bad)
    with pytest.raises(ProtosegError, match="columns"):
        parse_published("method,score\nX,1\n")


def test_data_files_are_package_data():
    """Every file under protoseg/data is matched by pyproject's package-data patterns (so wheels ship it)."""
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["protoseg"]
    data = ROOT / "src" / "protoseg" / "data"
    files = [p.relative_to(data.parent).as_posix() for p in data.rglob("*") if p.is_file()]
    assert "data/published.csv" in files
    for f in files:
        assert any(fnmatch.fnmatch(f, pat) and f.count("/") == pat.count("/") for pat in patterns), f
