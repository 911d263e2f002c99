"""Which segmentation preset reads a bank, from what its manifest records.

A preset *fits* a bank when nothing the manifest records contradicts it (:func:`preset_conflicts`):

- **feature encoder**: the preset's ``features`` are the bank's ``feature_encoder`` (compared by the last
  part of the id or folder, as :meth:`protoseg.bank.PrototypeBank.check_compatible` does; ``"handcrafted"``
  and ``"tiny"`` stand for the backends they load);
- **text encoder**: when both name one, the preset's ``text`` is the bank's ``text_encoder``;
- **method**: banks built by FreeDA (or imported from its release) are read by the ``freeda`` matcher, DPSM
  banks by the ``dpsm`` matcher; banks made from labelled examples by either.

:func:`preset_for_bank` chooses deterministically: the segmentation preset the bank's build recorded
(``settings.preset.segment_preset``; every part of a merged bank must record the same one) when it exists
and fits; else the first preset in :data:`~protoseg.config.segment.PRESETS` order that fits and whose text
encoder is the bank's exactly (both ``None`` included).
"""

from __future__ import annotations

from typing import Any

from protoseg.bank.storage import BankManifest, build_records, short_id
from protoseg.config.segment import PRESETS, Preset
from protoseg.errors import ProtosegError
from protoseg.models.handcrafted import HANDCRAFTED_ID
from protoseg.testing.tiny import TINY_NAMES

#: The matchers that read a bank of each build method (a method not named here: any matcher).
METHOD_MATCHERS: dict[str, frozenset[str]] = {
    "freeda": frozenset({"freeda"}),
    "freeda-import": frozenset({"freeda"}),
    "dpsm": frozenset({"dpsm"}),
}


def _weights_id(name: str | None, role: str) -> str | None:
    """The comparable identity of a preset's model field ``name`` of ``role`` (``"features"``, ``"text"``)."""
    if name is None:
        return None
    if role == "features" and name in ("handcrafted", HANDCRAFTED_ID):
        return short_id(HANDCRAFTED_ID)
    return TINY_NAMES[role] if name == "tiny" else short_id(name)


def _matchers(method: str) -> frozenset[str] | None:
    """The matchers that read a bank of ``method`` (``"a+b"`` for a merged bank), or ``None``: any."""
    allowed = [METHOD_MATCHERS[m] for m in method.split("+") if m in METHOD_MATCHERS]
    return frozenset().union(*allowed) if allowed else None


def preset_conflicts(preset: Preset, manifest: BankManifest) -> list[str]:
    """What of ``preset`` contradicts the bank of ``manifest`` (module docstring); empty when it fits."""
    problems = []
    if _weights_id(preset.features, "features") != short_id(manifest.feature_encoder):
        problems.append(f"its features come from {preset.features!r}, the bank's prototypes from "
                        f"{manifest.feature_encoder!r}")
    text = _weights_id(preset.text, "text")
    if text is not None and manifest.text_encoder is not None and text != short_id(manifest.text_encoder):
        problems.append(f"its text encoder is {preset.text!r}, the bank's keys come from {manifest.text_encoder!r}")
    matchers = _matchers(manifest.method)
    if matchers is not None and preset.matcher not in matchers:
        problems.append(f"its matcher {preset.matcher!r} does not read a {manifest.method!r} bank "
                        f"({' or '.join(sorted(matchers))} does)")
    return problems


def recorded_preset(manifest: BankManifest) -> str | None:
    """The segmentation preset the bank's build recorded (every part of a merged bank the same), or ``None``."""
    names = set()
    for record in build_records(manifest.settings):
        build: Any = record.get("preset")
        names.add(build.get("segment_preset") if isinstance(build, dict) else None)
    name = names.pop() if len(names) == 1 else None
    return name if isinstance(name, str) else None


def preset_for_bank(manifest: BankManifest) -> str:
    """The name of the preset that reads the bank of ``manifest`` (the rule in the module docstring).

    Raises:
        ProtosegError: no preset fits the bank.
    """
    recorded = recorded_preset(manifest)
    if recorded in PRESETS and not preset_conflicts(PRESETS[recorded], manifest):
        return recorded
    text = short_id(manifest.text_encoder) if manifest.text_encoder is not None else None
    for name, preset in PRESETS.items():
        if _weights_id(preset.text, "text") == text and not preset_conflicts(preset, manifest):
            return name
    raise ProtosegError(f"no preset reads this bank (features {manifest.feature_encoder!r}, text keys "
                        f"{manifest.text_encoder!r}, method {manifest.method!r}); name a preset and give its models "
                        "(--preset NAME --features … --text …, or Segmenter.from_preset(NAME, bank, features=…))")


def check_preset_fits(preset: Preset, manifest: BankManifest, bank: str) -> None:
    """Raise when ``preset`` contradicts the bank ``bank`` (its name in the message) of ``manifest``.

    Raises:
        ProtosegError: one line naming the preset, the bank and every contradiction.
    """
    problems = preset_conflicts(preset, manifest)
    if problems:
        try:
            own = f"; leave the preset out to use the bank's own ({preset_for_bank(manifest)!r})"
        except ProtosegError:
            own = ""
        raise ProtosegError(f"preset {preset.name!r} does not fit bank {bank}: {'; '.join(problems)}{own}")
