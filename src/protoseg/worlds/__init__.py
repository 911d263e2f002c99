"""The procedural worlds: quickstart data for the hand-crafted backend and the test data of the whole chain.

Images whose classes are made of parts, with exact masks and object masks. They stand in for "Stable
Diffusion + attention masks" as a source of support images, and for a labelled dataset as a test set, so the
offline + online + evaluation chain can be checked end to end without pretrained weights (pair them with the
``handcrafted`` feature backend).

- :mod:`~protoseg.worlds.canvas`: the class list and what scenes are painted with;
- :mod:`~protoseg.worlds.parts`: the parts world (classes made of parts, some resembling other classes);
- :mod:`~protoseg.worlds.recombined`: several looks per class, parts recombined in held-out scenes;
- :mod:`~protoseg.worlds.files`: scenes written in the examples layout, object masks read back;
- :mod:`~protoseg.worlds.mark`: the PNG text chunk that tells a scene from a photo;
- :mod:`~protoseg.worlds.cache`: the splits, the cache folder and when a split is generated again.

Everything is deterministic given the seed.
"""

from protoseg.worlds.cache import (
    WORLD_DATASETS,
    WORLD_SPLITS,
    default_parts_world_root,
    ensure_parts_world_split,
    world_spec,
    write_world,
)
from protoseg.worlds.canvas import IGNORE, PARTS_WORLD_CLASSES
from protoseg.worlds.files import WORLDS, read_objects, write_examples
from protoseg.worlds.mark import SCENE_KEY, check_synthetic_backend, is_parts_world_image, scene_info
from protoseg.worlds.parts import render_scene, render_scene_objects
from protoseg.worlds.recombined import COMBOS, render_recombined_scene

__all__ = [
    "COMBOS",
    "IGNORE",
    "PARTS_WORLD_CLASSES",
    "SCENE_KEY",
    "WORLDS",
    "WORLD_DATASETS",
    "WORLD_SPLITS",
    "check_synthetic_backend",
    "default_parts_world_root",
    "ensure_parts_world_split",
    "is_parts_world_image",
    "read_objects",
    "render_recombined_scene",
    "render_scene",
    "render_scene_objects",
    "scene_info",
    "world_spec",
    "write_examples",
    "write_world",
]
