"""Prototypes on demand: classes a bank cannot serve are generated with the bank's own build recipe and
added to it, so the next segmentation (and every later one) finds them there.

The recipe is what ``build-bank`` recorded in the manifest's ``settings``: the build preset (models,
synthesis, masks, clustering…), the global seed and the shard size (:func:`bank_recipe`; a bank grown by
merging or by earlier on-demand generation keeps its parts' recipes under ``merged_from``, which must
agree). New classes are built exactly as ``build-bank`` builds classes:

- **DPSM**: descriptions (the recipe's LLM, cached in ``BANK.descriptions.json`` beside the bank, or the
  naive prompt) → ``κN`` SD images per class → foreground masks → part prototypes with supplies →
  coarse-fine clustering. Item seeds depend only on ``(seed, class, index)``, so a class generated on
  demand has the prototypes a full build with the same recipe would give it.
- **FreeDA** (retrieval banks with text keys): no caption source names the new nouns, so each gets the
  captions :func:`protoseg.generate.captions.noun_captions` → SD images with the noun's cross-attention →
  masks → DINOv2 prototypes and keys ``α·t̂(noun) + (1-α)·ĉ(caption)``. A FreeDA bank retrieves by text
  key, so it can always answer; a class counts as missing when no prototype is *labelled* with it.

Banks made from labelled examples or imported from FreeDA's release have no generator and are refused;
banks on the Hub (``hf://``) live in the download cache, which protoseg never modifies.

The work runs on :mod:`protoseg.runs` in ``BANK.generate.partial`` (an interrupted generation resumes
there); the grown bank replaces the bank folder atomically (:meth:`PrototypeBank.save`), so the folder
always holds either the old bank or the new one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from protoseg.bank import PrototypeBank
from protoseg.bank.hub import hub_spec
from protoseg.bank.storage import build_records, check_bank_out
from protoseg.classes import ClassList, ClassSpec, normalize_classes
from protoseg.config.build import BuildPreset
from protoseg.config.fields import from_dict, given, override
from protoseg.errors import ProtosegError
from protoseg.match.prototypes import served_names
from protoseg.models.clip import ClipModel
from protoseg.models.hub import resolve_weights
from protoseg.offline import DpsmSource, FreedaSource, RunOptions, run_build
from protoseg.offline.common import cached_model, load_synthesis_models
from protoseg.runs import Progress, check_work_dir, remove_work_dir

#: Build methods that can make prototypes for new class names.
GENERATORS = ("dpsm", "freeda")


def missing_classes(bank: PrototypeBank, classes: Sequence[ClassSpec] | ClassList) -> list[str]:
    """The classes (their first names) none of whose names labels a finite prototype of ``bank``."""
    missing = []
    for names in normalize_classes(classes).synonyms:
        served = any(served_names(bank, list(names), retrieval=False))
        if not served and names[0] not in missing:
            missing.append(names[0])
    return missing


def generate_work_dir(bank: str | Path) -> Path:
    """``BANK.generate.partial``: where an on-demand generation keeps its shards."""
    bank = Path(bank)
    return bank.with_name(bank.name + ".generate.partial")


#: What the ``settings`` of banks made without a build preset name as their ``source``.
_SOURCES = {"examples": "examples", "FreeDA release": "freeda-import"}


def _method(recipe: dict[str, Any], manifest_method: str) -> str | None:
    preset = recipe.get("preset")
    if isinstance(preset, dict) and isinstance(preset.get("method"), str):
        return preset["method"]
    return _SOURCES.get(recipe.get("source")) or (manifest_method if manifest_method in _SOURCES.values() else None)


def bank_recipe(bank: PrototypeBank, where: str = "the bank") -> tuple[BuildPreset, dict[str, Any]]:
    """The build preset and run settings (``seed``, ``shard_size``, ``llm``) a bank was built with.

    Raises:
        ProtosegError: the recipe's method cannot generate prototypes for new names (labelled examples,
            FreeDA's released data), or the manifest records no recipe (or disagreeing ones).
    """
    recipes = build_records(bank.manifest.settings)
    methods = [_method(r, bank.manifest.method) for r in recipes]
    if "examples" in methods:
        raise ProtosegError(f"{where} was built from labelled examples and cannot generate prototypes for new "
                            "classes; add labelled examples of them (`protoseg bank from-examples` + `protoseg bank "
                            "extend`) or use a bank built with Stable Diffusion (`protoseg build-bank`)")
    if "freeda-import" in methods:
        raise ProtosegError(f"{where} holds FreeDA's released prototypes, whose generator was never released, and "
                            "cannot generate prototypes for new classes; build them with `protoseg build-bank "
                            "--preset freeda-l` and add them with `protoseg bank extend`")
    if not all(m in GENERATORS for m in methods):
        raise ProtosegError(f"{where} records no build recipe (its manifest has no build preset), so protoseg "
                            "cannot generate prototypes like its own; build the new classes with `protoseg "
                            "build-bank` and add them with `protoseg bank extend`")
    keys = [(r["preset"], r.get("seed", 0), r.get("shard_size", 16)) for r in recipes]
    if any(k != keys[0] for k in keys[1:]):
        raise ProtosegError(f"{where} was merged from banks built with different recipes; protoseg cannot tell "
                            "which one new classes should follow: build them with `protoseg build-bank` and "
                            "add them with `protoseg bank extend`")
    preset = from_dict(BuildPreset, keys[0][0], "recorded build setting")
    llm = next((r["llm"] for r in recipes if isinstance(r.get("llm"), str)), None)
    return preset, {"seed": int(keys[0][1]), "shard_size": int(keys[0][2]), "llm": llm}


def _load_models(preset: BuildPreset, device: str | None, dtype: str | None, names: list[str]) -> None:
    """Load (and cache for the shards) the recipe's models up front, so that missing weights fail at once."""
    try:
        load_synthesis_models(preset, device, dtype)
        if preset.method == "freeda":
            text = resolve_weights(preset.text, "text")
            cached_model(("clip", text, device), lambda: ClipModel(text, device=device))
    except ProtosegError as exc:
        raise ProtosegError(f"cannot load the models of the bank's build recipe for generating prototypes of "
                            f"{', '.join(map(repr, names))}: {exc} (to generate, --diffusion FOLDER gives the "
                            "diffusion model, --features / --text the others)") from None


def generate_missing(bank: str | Path, classes: Sequence[ClassSpec] | ClassList, *, device: str | None = None,
                     dtype: str | None = None, diffusion: str | None = None, features: str | None = None,
                     text: str | None = None, llm: str | None = None,
                     progress: Progress | None = None) -> list[str]:
    """Make prototypes for the classes bank folder ``bank`` cannot serve, with its build recipe, and add them
    to it in place (atomically); returns the class names generated (empty: nothing was missing, nothing
    was written).

    ``diffusion``, ``features``, ``text`` replace the recipe's model ids (e.g. local folders offline; the
    features must stay the bank's encoder), ``llm`` its DPSM description model; ``dtype`` is the diffusion
    dtype. ``progress(stage, done, total)`` as in :func:`protoseg.offline.build_bank`.

    Raises:
        ProtosegError: a Hub bank with missing classes, a bank without a usable recipe (module docstring),
            a bank folder that cannot be written, or models that cannot be loaded.
    """
    spec = hub_spec(bank)
    loaded = PrototypeBank.load(bank)
    missing = missing_classes(loaded, classes)
    if not missing:
        return []
    if spec is not None:
        raise ProtosegError(f"{spec.uri} lacks {', '.join(map(repr, missing))} and is a Hub download, which "
                            "protoseg never modifies: copy it to a folder of your own (`cp -rL "
                            f"{loaded.path} mybank`) and pass --bank mybank --generate-missing")
    where = f"bank {bank}"
    preset, recorded = bank_recipe(loaded, where)
    preset = override(preset, "build setting", **given(diffusion=diffusion, features=features, text=text))
    folder = check_bank_out(bank, overwrite=True, option="--bank")
    work = check_work_dir(generate_work_dir(folder), what="generation")
    _load_models(preset, device, dtype, missing)
    if preset.method == "dpsm":
        source = DpsmSource(classes=tuple(missing), llm=llm or recorded["llm"])
    else:
        source = FreedaSource(nouns=tuple(missing))
    run = RunOptions(work_dir=work, shard_size=recorded["shard_size"], seed=recorded["seed"], device=device,
                     dtype=dtype)
    stages: set[str] = set()

    def report(stage: str, done: int, total: int) -> None:
        stages.add(stage)
        if progress is not None:
            progress(stage, done, total)

    try:
        builder, shards, plan, work = run_build(preset, source, folder, run, report)
    except ProtosegError as exc:
        if preset.method != "dpsm" or preset.prompts != "llm" or "shards" in stages:
            raise
        raise ProtosegError(f"cannot write the DPSM descriptions of {', '.join(map(repr, missing))} with the "
                            f"recipe's LLM {source.llm!r}: {exc} (to generate, --llm SPEC gives another description "
                            "model, e.g. a local folder hf:/models/llm or gguf:FILE)") from None
    if progress is not None:
        progress("reduce", 0, 1)
    new = builder.reduce(shards, plan, run.seed)
    PrototypeBank.load(folder, mmap=False).extend(new).save(folder, overwrite=True)
    if progress is not None:
        progress("reduce", 1, 1)
    remove_work_dir(work)
    return missing
