"""Typed configuration: validation on construction, one override rule, serialisation round trips."""

import ast
from pathlib import Path

import numpy as np
import pytest

from protoseg.bank import PrototypeBank
from protoseg.config.build import BUILD_PRESETS, BuildPreset, get_build_preset
from protoseg.config.matchers import DpsmOptions, FreedaOptions
from protoseg.config.segment import PRESETS, Preset, get_preset
from protoseg.config.superpixels import SuperpixelParams
from protoseg.errors import ProtosegError
from protoseg.segment import Segmenter

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "protoseg"


def _bank() -> PrototypeBank:
    from protoseg.models import load_features

    features = load_features("handcrafted")
    rng = np.random.default_rng(0)
    table = {"label": ["red", "red", "blue", "blue"], "level": ["whole", "part", "whole", "part"],
             "supply": [0.0, 1.0, 0.0, 1.0]}
    return PrototypeBank.create(rng.normal(size=(4, features.dim)).astype(np.float32), table, method="examples",
                                feature_encoder=features.encoder_id, dtype="float32")


@pytest.mark.parametrize("options, message", [
    ({"pooling": "bogus"}, "freeda option 'pooling' must be one of 'point', 'area'; got 'bogus'"),
    ({"aggregation": "median"}, "freeda option 'aggregation' must be one of 'mean', 'kmeans'"),
    ({"k": 0}, "freeda option 'k' must be >= 1"),
    ({"k": 2.5}, "freeda option 'k' must be int"),
    ({"use_global": "yes"}, "freeda option 'use_global' must be bool"),
    ({"beta": 1.5}, "freeda option 'beta' must be in \\[0, 1\\]"),
    ({"nope": 1}, "unknown freeda option 'nope'; known: k, beta"),
])
def test_bad_matcher_option_fails_when_the_segmenter_is_made(options, message):
    with pytest.raises(ProtosegError, match=message):
        Segmenter.from_preset("handcrafted", bank=_bank(), matcher_options=options)


def test_switching_matcher_starts_from_its_defaults():
    preset = get_preset("handcrafted", matcher="dpsm", matcher_options={"proposals": "superpixels"})
    assert preset.matcher_options == DpsmOptions(proposals="superpixels")
    seg = Segmenter.from_preset("handcrafted", bank=_bank(), matcher="dpsm",
                                matcher_options={"proposals": "superpixels"})
    assert type(seg.matcher).__name__ == "DPSMMatcher" and seg.matcher.options.proposals == "superpixels"
    with pytest.raises(ProtosegError, match="unknown dpsm option 'k'"):
        get_preset("handcrafted", matcher="dpsm", matcher_options={"k": 5})  # FreeDA options do not leak


def test_values_are_normalised_and_nested_records_accept_dicts():
    opts = FreedaOptions(beta=1)  # an int where a float is declared
    assert isinstance(opts.beta, float) and opts.beta == 1.0
    dpsm = DpsmOptions(proposal_superpixels={"scale": 10.0, "sigma": 0.5, "min_size": 5}, chunk_bytes=1 << 20)
    assert dpsm.proposal_superpixels == SuperpixelParams(10.0, 0.5, 5)
    with pytest.raises(ProtosegError, match="'chunk_bytes' must be int or one of 'auto' or None; got 'lots'"):
        DpsmOptions(chunk_bytes="lots")
    with pytest.raises(ProtosegError, match="unknown SuperpixelParams field 'scal'"):
        DpsmOptions(proposal_superpixels={"scal": 1.0})


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_round_trips_through_json(name):
    import json

    preset = PRESETS[name]
    data = json.loads(json.dumps(preset.to_dict()))
    assert Preset.from_dict(data) == preset


@pytest.mark.parametrize("name", sorted(BUILD_PRESETS))
def test_every_build_preset_round_trips_and_validates(name):
    import json

    from protoseg.config.fields import from_dict

    preset = BUILD_PRESETS[name]
    assert from_dict(BuildPreset, json.loads(json.dumps(preset.settings()))) == preset


def test_build_preset_overrides_are_checked():
    assert get_build_preset("dpsm-tiny", k=2).k == 2
    with pytest.raises(ProtosegError, match="build setting 'clustering' must be one of 'coarse-fine'"):
        get_build_preset("dpsm-tiny", clustering="fancy")
    with pytest.raises(ProtosegError, match="unknown build setting 'kapa'"):
        get_build_preset("dpsm-tiny", kapa=2)
    with pytest.raises(ProtosegError, match="'kappa' must be >= 1"):
        get_build_preset("dpsm-tiny", kappa=0)


def test_tiny_presets_name_models_not_paths():
    """Tiny model folders are resolved when the models load, not when the preset module is imported."""
    assert PRESETS["freeda-tiny"].features == "tiny" and PRESETS["freeda-tiny"].text == "tiny"


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_bank_package_is_the_artifact_only():
    forbidden = ("models", "datasets", "windows", "regions", "generate", "offline", "match", "segment",
                 "proposals", "testing")
    for path in (PACKAGE / "bank").glob("*.py"):
        bad = [m for m in _imports(path) if any(m == f"protoseg.{f}" or m.startswith(f"protoseg.{f}.")
                                                 for f in forbidden)]
        assert not bad, f"{path.name} imports {bad}"


def test_no_package_folder_is_named_build():
    assert not (PACKAGE / "build").exists()
