"""Per-benchmark protocol settings of the TCL and SCLIP families."""

import dataclasses

import pytest

from protoseg.config.fields import to_dict
from protoseg.config.segment import get_preset
from protoseg.datasets.mmseg import MMSEG_DATASETS
from protoseg.errors import ProtosegError
from protoseg.eval.benchmarks import DATASET_PRESETS
from protoseg.eval.protocols import (
    BENCHMARKS,
    CONFIG_FILES,
    PROTOCOLS,
    WITH_BACKGROUND,
    ProtocolSettings,
    protocol_family,
    protocol_settings,
)
from protoseg.windows import rescale_size, window_grid


def test_benchmarks_are_protosegs_mmseg_datasets():
    assert set(BENCHMARKS) == set(MMSEG_DATASETS)
    assert WITH_BACKGROUND == {d for d, spec in MMSEG_DATASETS.items() if spec.classes[0] == "background"}


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
def test_every_protocol_covers_the_eight_benchmarks(protocol):
    table = PROTOCOLS[protocol]
    assert list(table) == list(BENCHMARKS) or set(table) == set(BENCHMARKS)
    for dataset, s in table.items():
        assert isinstance(s, ProtocolSettings)
        assert s.name == protocol and s.dataset == dataset
        assert (s.background != "none") == (dataset in WITH_BACKGROUND)
        # Records survive the typed round trip (validation accepts their own values).
        assert ProtocolSettings(**to_dict(s)) == s


@pytest.mark.parametrize("preset", ["freeda-b", "freeda-l", "dpsm"])
def test_tcl_entries_are_todays_defaults(preset):
    p = get_preset(preset)
    for dataset, s in PROTOCOLS["tcl"].items():
        assert s.family == "tcl" and s.names == "mmseg"
        assert s.scale == p.scale == (2048, 448) and s.short_side == 448
        assert (s.crop, s.stride) == (p.crop, p.stride) == (448, 224)
        benchmark = DATASET_PRESETS[dataset]
        assert (s.background == "constant") == benchmark.background
        if benchmark.background:
            assert s.threshold == benchmark.background_threshold == 0.4
        else:
            assert s.threshold is None
        assert s.logit_scale is None and s.area_threshold is None


def test_sclip_entries_follow_the_sclip_configs():
    s = PROTOCOLS["sclip"]
    assert {d: x.short_side for d, x in s.items()} == {
        "voc20": 336, "voc": 336, "context59": 336, "context60": 336, "coco-stuff": 448, "coco-object": 336,
        "cityscapes": 560, "ade20k": 336,
    }
    assert all((x.crop, x.stride) == (224, 112) for x in s.values())
    assert (s["voc"].background, s["voc"].threshold, s["voc"].logit_scale, s["voc"].area_threshold) == (
        "probability", 0.1, 65.0, 0.1)
    assert (s["context60"].threshold, s["context60"].logit_scale) == (0.1, 50.0)
    assert (s["coco-object"].threshold, s["coco-object"].logit_scale) == (0.1, 50.0)
    assert s["ade20k"].logit_scale == 40.0 and s["ade20k"].threshold is None
    for dataset, x in s.items():
        assert x.family == "sclip" and x.names == "sclip"
        assert x.source.startswith("wangf3014/SCLIP@") and x.source.endswith(f"configs/{CONFIG_FILES[dataset]}")


def test_later_sclip_family_protocols():
    naclip, proxy, corr = PROTOCOLS["naclip"], PROTOCOLS["proxyclip"], PROTOCOLS["corrclip"]
    assert naclip["voc20"].crop is None and not naclip["voc20"].sliding  # slide_crop=0: whole image
    assert naclip["coco-stuff"].short_side == 336 and naclip["context60"].logit_scale == 40.0
    for table in (proxy, corr):
        assert (table["voc"].threshold, table["context60"].threshold, table["coco-object"].threshold) == (
            0.2, 0.15, 0.25)
        assert (table["context59"].crop, table["context59"].stride) == (336, 112)
        assert (table["cityscapes"].short_side, table["cityscapes"].crop) == (448, 224)
        assert table["ade20k"].short_side == 448
    assert {x.names for x in proxy.values()} == {"proxyclip"}
    assert {x.names for x in corr.values()} == {"corrclip"}
    assert CONFIG_FILES["voc"] == "cfg_voc21.py" and CONFIG_FILES["cityscapes"] == "cfg_city_scapes.py"
    assert all("CorrCLIPv1/configs/cfg_" in x.source for x in corr.values())


def test_settings_drive_protosegs_resize_and_windows():
    s = protocol_settings("sclip", "voc")
    assert rescale_size(375, 500, s.scale) == (336, 448)
    assert window_grid(336, 448, s.crop, s.stride)[-1] == (112, 336, 224, 448)
    assert rescale_size(1024, 2048, protocol_settings("sclip", "cityscapes").scale) == (560, 1120)


def test_bad_settings_raise():
    base = to_dict(protocol_settings("sclip", "voc"))
    for change, message in [
        ({"stride": 300}, "stride"),
        ({"crop": None}, "stride"),
        ({"background": "none"}, "background"),
        ({"threshold": None}, "threshold"),
        ({"threshold": 1.5}, "threshold"),
        ({"logit_scale": None}, "logit_scale"),
        ({"logit_scale": -1.0}, "logit_scale"),
        ({"dataset": "pascal"}, "dataset"),
        ({"family": "groupvit"}, "family"),
        ({"scale": (2048, 0)}, "scale"),
        ({"names": "clip"}, "names"),
        ({"source": " "}, "source"),
        ({"crop": "224"}, "crop"),
    ]:
        with pytest.raises(ProtosegError, match=message):
            ProtocolSettings(**{**base, **change})
    tcl = to_dict(protocol_settings("tcl", "ade20k"))
    with pytest.raises(ProtosegError, match="names"):
        ProtocolSettings(**{**tcl, "names": "sclip"})
    with pytest.raises(ProtosegError, match="background"):
        ProtocolSettings(**{**tcl, "background": "constant", "threshold": 0.4})
    with pytest.raises(dataclasses.FrozenInstanceError):
        protocol_settings("tcl", "voc").crop = 1  # type: ignore[misc]


def test_lookup_errors_and_families():
    with pytest.raises(ProtosegError, match="unknown protocol 'mmseg'"):
        protocol_settings("mmseg", "voc")
    with pytest.raises(ProtosegError, match="no settings for dataset 'parts-world'"):
        protocol_settings("tcl", "parts-world")
    with pytest.raises(ProtosegError, match="no settings for dataset 'pascal'"):
        protocol_settings("sclip", "pascal", has_background=False)


def test_datasets_outside_the_tables_take_the_protocols_defaults():
    tcl = protocol_settings("tcl", "parts-world", has_background=False)
    assert (tcl.scale, tcl.crop, tcl.stride, tcl.background) == ((2048, 448), 448, 224, "none")
    assert get_preset("handcrafted", **tcl.preset_overrides()) == get_preset("handcrafted")
    assert protocol_settings("tcl", "examples", has_background=True).preset_overrides()["background_threshold"] == 0.4
    sclip = protocol_settings("sclip", "parts-world", has_background=False)
    assert (sclip.family, sclip.scale, sclip.crop, sclip.stride, sclip.background, sclip.names) == (
        "sclip", (2048, 336), 224, 112, "none", "mmseg")
    with_bg = protocol_settings("proxyclip", "examples", has_background=True)
    assert (with_bg.crop, with_bg.background, with_bg.threshold, with_bg.logit_scale) == (336, "probability", 0.0, 40.0)
    assert protocol_settings("sclip", "voc", has_background=False) is PROTOCOLS["sclip"]["voc"]
    assert [protocol_family(p) for p in ("tcl", "sclip", "naclip", "proxyclip", "corrclip")] == [
        "tcl", "sclip", "sclip", "sclip", "sclip"]
    with pytest.raises(ProtosegError):
        protocol_family("groupvit")


def test_preset_overrides():
    for dataset, s in PROTOCOLS["tcl"].items():
        assert get_preset("freeda-b", **s.preset_overrides()) == get_preset("freeda-b"), dataset
    assert "background_threshold" in protocol_settings("tcl", "voc").preset_overrides()
    sclip = protocol_settings("sclip", "voc").preset_overrides()
    assert sclip == {"scale": (2048, 336), "crop": 224, "stride": 112, "background_rule": "probability",
                     "background_threshold": 0.1, "logit_scale": 65.0, "area_threshold": 0.1}
    preset = get_preset("freeda-b", **sclip)
    assert (preset.background_rule, preset.background_threshold, preset.logit_scale, preset.area_threshold) == (
        "probability", 0.1, 65.0, 0.1)
    assert protocol_settings("sclip", "ade20k").preset_overrides() == {"scale": (2048, 336), "crop": 224,
                                                                        "stride": 112}
    assert protocol_settings("tcl", "voc").preset_overrides()["background_rule"] == "constant"
    whole = protocol_settings("naclip", "voc20")
    fields = whole.preset_overrides()
    assert (fields["crop"], fields["stride"]) == (2048, 2048)
    h, w = rescale_size(500, 2000, whole.scale)  # the longest image the resize can produce
    assert window_grid(h, w, fields["crop"], fields["stride"]) == [(0, h, 0, w)]
    assert get_preset("freeda-b", **fields).scale == (2048, 336)
