"""Class-name variants: MMSeg names (default) and the SCLIP family's renamed / synonym lists."""

import hashlib
from importlib import resources

import pytest

from protoseg.datasets import names
from protoseg.datasets.mmseg import MMSEG_DATASETS
from protoseg.datasets.variants import VARIANTS, class_names, query_names
from protoseg.errors import ProtosegError
from protoseg.eval.protocols import BENCHMARKS, NAME_VARIANTS

# SHA-256 of the shipped lists, equal to the source files in the repositories named in
# protoseg/data/names/README.md (SCLIP @ b56bd30 = NACLIP @ 0cac3a6, ProxyCLIP @ e7b767f, CorrCLIP @ 103bc18):
# an editor that strips SCLIP's trailing space in "wood " or adds a final newline changes what is encoded.
# The mmseg/ lists are MMSegmentation 0.27.0's CLASSES, one name a line with a final newline.
SHA256 = {
    "mmseg/ade20k.txt": "c7069a45b3d3285d1c497f62a18bd83df6c2ecc2fc98d435416075bdca2fb8d1",
    "mmseg/cityscapes.txt": "48cab81b30ea4ee4f3b07ee136cb7e52c71de093d7bf834211ce29269ddfb196",
    "mmseg/coco-object.txt": "80701ae9381b4e718e0285f562e15dfa955a3df98ced2a8a3586fd245fe3368b",
    "mmseg/coco-stuff.txt": "183abbcf67345584c8fd5fab2fe93e56ec77e25836483a185e991318398bd248",
    "mmseg/context59.txt": "6a45bee9f3acb41f923ebd9474ba5bca699eff3e1b67fc790e4e530d35ac2253",
    "mmseg/context60.txt": "c8278f9257ab2ed0d7499b99bd6c69485d15881768e26c64b01ee6cefad39eac",
    "mmseg/voc.txt": "5e0e0d1f1a439ba7736618a4c4453a0428eb3213da0a1dc5486c54c191f4c296",
    "mmseg/voc20.txt": "f14861775969fd006b382e005f96dc811ef062ea4a37356efb70d7775e90f743",
    "corrclip/ade20k.txt": "09ac710c57fc65910822a955574d054d166e002f3555dde6c824a43585f68d70",
    "corrclip/cityscapes.txt": "8dba4f1e3eeefc376b15dd566ab11867bf6572b209b8de2d18a108142f8d2c23",
    "corrclip/coco-object.txt": "6d0d48b0979836237bee4bb1e91be677cbb704a379d9d09440e658fd92c50100",
    "corrclip/coco-stuff.txt": "c39fe2dd982fa5daa287e4da14788c30906e661787e890fc800c9fed94090a72",
    "corrclip/context59.txt": "106c0f1f2c9c4fac51513ed97f3a524c049a377a8976acd7fabc914181d73a85",
    "corrclip/context60.txt": "5666dc439704e29a20bf02782bb60a6d568d2e8af4e06788dfc891189862282d",
    "corrclip/voc.txt": "9ea46c7f208472559b54660bf8715b3ce2f7801eefe9adbae517e7f340e5e768",
    "corrclip/voc20.txt": "dd9755431039265bf4de125628ff867ee708fe48ea8e98de4f8793093f1231d6",
    "proxyclip/ade20k.txt": "e53ded02c488bdb903ef000a2d207e4ac4f2bb4502a72572e4aab7c2504aef3a",
    "proxyclip/cityscapes.txt": "6f6782fc1bf92bfd9f5562192e92045e0e093870e613f387f6c98fc66d4ceba4",
    "proxyclip/coco-object.txt": "87b6d3e1d3adf5202f4fe5a2a939cfc62224065f3a8e44a8f64fe1a81b751dc6",
    "proxyclip/coco-stuff.txt": "fb98709b9ab1baff4fd930bac4a77772a0458c7d534911de545f9a4081e14a3e",
    "proxyclip/context59.txt": "cd808465f06a16169edc25580073f0eda347e64f06cc1c2e24acd0b237f6497d",
    "proxyclip/context60.txt": "5e620446a8699f292a4c2e37fa8918a33dd4f14713dc1b3f22884d2be68b45a1",
    "proxyclip/voc.txt": "6a194e9134d44459bf8b86ba89a9cf06242848051e04d130011c017bca3e3c05",
    "proxyclip/voc20.txt": "6b9a85ffb907e34ac920d704a520b45e1424bf96796ca7de5b1823ee202db119",
    "sclip/ade20k.txt": "e53ded02c488bdb903ef000a2d207e4ac4f2bb4502a72572e4aab7c2504aef3a",
    "sclip/cityscapes.txt": "6f6782fc1bf92bfd9f5562192e92045e0e093870e613f387f6c98fc66d4ceba4",
    "sclip/coco-object.txt": "3475d03d61f85ce03812ce62d019de8f2ea51053885374629d29a17fbd3f02a6",
    "sclip/coco-stuff.txt": "fb98709b9ab1baff4fd930bac4a77772a0458c7d534911de545f9a4081e14a3e",
    "sclip/context59.txt": "cd808465f06a16169edc25580073f0eda347e64f06cc1c2e24acd0b237f6497d",
    "sclip/context60.txt": "5e620446a8699f292a4c2e37fa8918a33dd4f14713dc1b3f22884d2be68b45a1",
    "sclip/voc.txt": "80e643a9a143966800cd4a49324fd0be2f94c0d7bac817ea16a5f66ed706bc38",
    "sclip/voc20.txt": "c68f65a2b342397cdfe05ff5289517e1e370b1d574a218ff1a17db27f2576db1",
}


def test_variant_names_match_the_protocol_table():
    assert set(VARIANTS) == set(NAME_VARIANTS)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("dataset", BENCHMARKS)
def test_one_entry_per_class_of_the_mmseg_list(variant, dataset):
    lists = class_names(dataset, variant)
    assert len(lists) == len(MMSEG_DATASETS[dataset].classes)
    assert all(isinstance(s, list) and s and all(isinstance(n, str) and n for n in s) for s in lists)


def test_mmseg_variant_is_the_mmseg_classes_one_name_each():
    assert class_names("ade20k") == [[n] for n in names.ADE20K_CLASSES]
    assert class_names("ade20k")[7] == ["bed "]  # byte-identical, trailing space kept
    assert class_names("voc", "mmseg")[0] == ["background"]
    assert class_names("coco-object") == [[n] for n in names.COCO_OBJECT_CLASSES]


def test_shipped_files_are_the_source_files():
    root = resources.files("protoseg") / "data" / "names"
    shipped = {f"{v.name}/{f.name}" for v in root.iterdir() if v.is_dir() for f in v.iterdir()}
    assert shipped == set(SHA256)
    for rel, digest in SHA256.items():
        assert hashlib.sha256((root / rel).read_bytes()).hexdigest() == digest, rel


def test_sclip_renames_and_synonyms():
    voc = class_names("voc", "sclip")
    assert voc[0][:3] == ["sky", "wall", "tree"] and len(voc[0]) == 26  # background is queried via stuff names
    assert voc[4] == ["ship"] and voc[11] == ["table"]
    assert voc[15][0] == "person" and len(voc[15]) == 7
    assert voc[20] == ["television monitor", "tv monitor", "monitor", "television", "screen"]
    assert class_names("voc20", "sclip") == voc[1:]
    assert class_names("context60", "sclip")[-1] == ["wood "]
    assert class_names("context59", "sclip") == [[n] for n in names.CONTEXT59_CLASSES]
    assert class_names("cityscapes", "sclip")[6] == ["trafficlight"]
    assert class_names("ade20k", "sclip")[7] == ["bed"]
    assert class_names("coco-object", "sclip")[1][-1] == "body"


def test_proxyclip_and_corrclip_lists():
    assert class_names("voc20", "proxyclip")[14] == ["person"]
    assert class_names("voc20", "proxyclip")[19] == ["tvmonitor"]
    background = class_names("coco-object", "proxyclip")[0]
    assert len(background) == 17 and "bed" in background
    corr = class_names("coco-object", "corrclip")
    assert len(corr[0]) == 16 and "bed" not in corr[0] and corr[1] == ["people"]
    for dataset in BENCHMARKS:
        flat = [n for s in class_names(dataset, "corrclip") for n in s]
        assert "people" in flat and "person" not in flat


def test_query_names_flatten_synonyms_with_their_class_index():
    flat, index = query_names("voc20", "sclip")
    assert len(flat) == len(index) == 20 - 2 + 7 + 5
    assert flat[index.index(14)] == "person" and index.count(14) == 7
    assert index == sorted(index) and set(index) == set(range(20))
    assert query_names("voc20") == (list(names.VOC20_CLASSES), list(range(20)))


def test_unknown_variant_or_dataset():
    with pytest.raises(ProtosegError, match="unknown class-name variant 'clip'"):
        class_names("voc", "clip")
    with pytest.raises(ProtosegError, match="dataset 'parts-world'"):
        class_names("parts-world", "sclip")
