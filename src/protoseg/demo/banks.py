"""The banks the operator names for the web demo (``protoseg demo --bank …``) and the presets that fit them.

Web users choose among these by their shown name; the server's folders stay on the server. A published
bank's name (``freeda-l``) is resolved to its cached folder (fetched once, unless offline), an ``hf://`` id
is downloaded (or read from the Hugging Face cache), a folder is read — all when the demo starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from protoseg.bank import PrototypeBank
from protoseg.bank.hub import hub_spec
from protoseg.bank.storage import short_id
from protoseg.config.segment import PRESETS, SYNTHETIC_FEATURES, TINY, get_preset
from protoseg.errors import ProtosegError
from protoseg.models.handcrafted import HANDCRAFTED_ID
from protoseg.offline.published_banks import PUBLISHED_BANKS, is_fetched, resolve_published


@dataclass(frozen=True)
class DemoBank:
    """A bank offered on the page: ``name`` as shown, ``source`` as loaded (a folder or an ``hf://`` id),
    and the ``presets`` whose dense features are the bank's."""

    name: str
    source: str
    presets: tuple[str, ...]


def shown_name(value: str, taken: set[str]) -> str:
    """What the page calls the bank the operator named ``value``: an ``hf://`` id or a published name as
    given, a relative folder as given, an absolute folder by its last part; ``-2``, ``-3``… against
    repeats."""
    path = Path(value)
    name = value if hub_spec(value) or not path.is_absolute() else (path.name or value)
    unique, n = name, 1
    while unique in taken:
        n += 1
        unique = f"{name}-{n}"
    return unique


def resolve_source(value: str, offline: bool = False) -> str:
    """What to load for the operator's ``--bank value``: a published bank's folder (fetched first unless
    ``offline``), an ``hf://`` id, or the folder.

    Raises:
        ProtosegError: a published bank that is not fetched while ``offline``, or its fetch failing.
    """
    if value in PUBLISHED_BANKS and not Path(value).exists():
        if offline and not is_fetched(value):
            raise ProtosegError(f"--bank {value} is not fetched yet and --offline forbids downloads; run "
                                f"`protoseg bank fetch {value}` once while online")
        return str(resolve_published(value))
    return value


def feature_id(features: str) -> str:
    """The comparable identity (:func:`~protoseg.bank.storage.short_id`) of a preset's ``features`` as the
    bank's manifest records them, without loading the model."""
    if features in SYNTHETIC_FEATURES:
        return short_id(HANDCRAFTED_ID)
    if features == TINY:
        # imports the tiny models' classes (seconds): only for the test presets
        from protoseg.testing.tiny import tiny_model_path

        return short_id(str(tiny_model_path("features")))
    return short_id(features)


def fitting_presets(bank: PrototypeBank, overrides: dict[str, str]) -> tuple[str, ...]:
    """The presets (with the operator's model ``overrides``) whose dense features made ``bank``'s
    prototypes: the ones a web user may pick for it."""
    wanted = short_id(bank.manifest.feature_encoder)
    return tuple(name for name in sorted(PRESETS) if feature_id(get_preset(name, **overrides).features) == wanted)


def operator_banks(values: list[str], overrides: dict[str, str], offline: bool = False) -> list[DemoBank]:
    """Load and check each of the operator's ``--bank`` values once (the demo refuses to start on a bad one).

    Raises:
        ProtosegError: a bank that cannot be read or fetched, or one that no preset fits — with the cause,
            for the operator.
    """
    banks: list[DemoBank] = []
    for value in values:
        source = resolve_source(value, offline)
        loaded = PrototypeBank.load(source)
        presets = fitting_presets(loaded, overrides)
        loaded.close()
        if not presets:
            raise ProtosegError(f"--bank {value}: no preset uses its feature encoder "
                                f"{loaded.manifest.feature_encoder!r}; give --features for it")
        banks.append(DemoBank(shown_name(value, {b.name for b in banks}), source, presets))
    return banks
