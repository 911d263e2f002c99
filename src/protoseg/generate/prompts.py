"""Text prompts for support-image synthesis: DPSM's LLM-written descriptions and the naive prompt.

DPSM ("LLM-Guided Image Synthesis") asks an LLM for ``K`` descriptions of every class ``c`` about each
of four attributes ``a`` — state, feature, co-occurring object, location — and synthesises one support
image per description (``N = 4K`` per class, ``K = 16`` in the paper). The paper gives the question for
``location``; :data:`ATTRIBUTE_QUESTIONS` words the other three the same way.

LLM output is free text; :func:`parse_descriptions` turns it into descriptions with these rules:

1. Code fences are dropped. If the reply holds a JSON array (the whole reply or a ``[...]`` part of it),
   its items are the candidates (strings, or the first string value of objects).
2. Otherwise every non-empty line is a candidate. List markers (``1.``, ``2)``, ``(3)``, ``-``, ``*``,
   ``•``), markdown emphasis and surrounding quotes are stripped. A line is a *list item* if it had a
   marker or was a JSON item.
3. A candidate containing ``photo of`` is cut to start at ``A photo of`` (text before it, such as
   ``Description 1:``, is dropped).
4. A list item without ``photo of`` gets a prefix: ``"A photo of a <class> "`` + item if it starts
   with a preposition or a participle (``"On a highway"`` -> ``"A photo of a car on a highway"``), else
   ``"A photo of "`` + item if it names the class (``"A red car parked"`` -> ``"A photo of a red car
   parked"``), else ``"A photo of a <class>, "`` + item (``"Rusty"`` -> ``"A photo of a car, rusty"``).
   A list item ``"<label>: <text>"`` (label of at most 8 words) whose text names the class is reduced
   to its text first (``"Parking lot: A car among other cars"`` -> ``"A photo of a car among other cars"``).
5. A plain line (not a list item) without ``photo of`` is kept, prefixed by ``"A photo of "``, only if
   it opens with an article, at most three words and the class (``"A car with a sleek exterior"``);
   other plain lines are chatter (``Sure! Here are...``) and dropped, as are lines ending with ``:``.
6. A description must name the class (case-insensitive, whole words, plural ``s``/``es`` allowed):
   synthesis localises the class word by cross-attention, so a description without it is dropped.
7. Whitespace is collapsed; descriptions are deduplicated case-insensitively (ignoring final
   punctuation), keeping the first; at most ``k`` are returned.

:func:`describe_classes` re-asks with another seed when fewer than ``k`` remain (up to ``attempts``
times, pooling the unique descriptions of all answers), and then pads the list with the naive prompt
(:func:`naive_prompt`), recording the number of padded entries under ``"_padded"`` in the cache.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protoseg.atomic import write_json
from protoseg.classes import validate_classes
from protoseg.errors import ProtosegError
from protoseg.runs import Progress, derive_seed

if TYPE_CHECKING:
    from protoseg.generate.llm import ChatLLM

ATTRIBUTES: tuple[str, ...] = ("state", "feature", "object", "location")
"""DPSM's four attributes, in the paper's order (``object`` = co-occurring object)."""

ATTRIBUTE_QUESTIONS: dict[str, str] = {
    "state": ("List different states in which {a} {c} may appear in an image. Generate {k} short "
              "descriptions about {c} in these states. Each description should start as A photo of {c}."),
    "feature": ("List different features which {a} {c} may have in an image. Generate {k} short "
                "descriptions about {c} with these features. Each description should start as "
                "A photo of {c}."),
    "object": ("List different objects which may appear together with {a} {c} in an image. Generate {k} "
               "short descriptions about {c} with these objects. Each description should start as "
               "A photo of {c}."),
    "location": ("List different locations in which {a} {c} may appear in an image. Generate {k} short "
                 "descriptions about {c} in these locations. Each description should start as "
                 "A photo of {c}."),
}
"""Questions per attribute; ``location`` is the paper's wording verbatim (``{a}`` = "a"/"an")."""

FORMAT_HINT = "Answer with a numbered list, one description per line, and nothing else."
"""Optional extra sentence (not in the paper) that helps small models keep to a list."""

NAIVE_TEMPLATE = "a good photo of {a} {c}"
"""The naive prompt DPSM compares against ("A good photo of a cat.")."""

PREFIX = "A photo of"
PADDED_KEY = "_padded"

_MARKER = re.compile(r"^\s*(?:(?:\(?\d{1,3}[.):\]]|[-*•·–—>#]+|\[\d{1,3}\])\s*)+")
_PHOTO_OF = re.compile(r"\b(?:an?\s+|the\s+)?(?:good\s+|nice\s+|clear\s+)?(?:photo|picture|image)\s+of\b",
                       re.IGNORECASE)
_LINKING = {"in", "on", "at", "with", "near", "under", "inside", "outside", "beside", "behind", "next",
            "by", "among", "between", "during", "from", "into", "over", "along", "across", "through",
            "around", "against", "above", "below", "while", "that", "which", "being", "and", "of", "for",
            "parked", "sitting", "standing", "lying", "running", "driving", "covered", "surrounded",
            "holding", "looking", "flying", "swimming", "walking", "floating", "hanging", "placed"}


def indefinite_article(word: str) -> str:
    """``"an"`` before a vowel letter, else ``"a"`` (spelling rule; good enough for prompts)."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def dpsm_question(class_name: str, attribute: str, k: int, format_hint: bool = False) -> str:
    """The question asking the LLM for ``k`` descriptions of ``class_name`` about ``attribute``."""
    if attribute not in ATTRIBUTE_QUESTIONS:
        raise ProtosegError(f"unknown attribute {attribute!r}; use one of {', '.join(ATTRIBUTES)}")
    text = ATTRIBUTE_QUESTIONS[attribute].format(a=indefinite_article(class_name), c=class_name, k=k)
    return f"{text} {FORMAT_HINT}" if format_hint else text


def naive_prompt(class_name: str) -> str:
    """``"a good photo of a {c}"``."""
    return NAIVE_TEMPLATE.format(a=indefinite_article(class_name), c=class_name)


def naive_prompts(classes: Sequence[str], n: int) -> list[str]:
    """The naive prompt ``n`` times per class, class-major: ``[p(c0)]*n + [p(c1)]*n + ...``.

    Each copy is meant for a different synthesis seed (``n`` images per class).
    """
    return [naive_prompt(c) for c in validate_classes(classes) for _ in range(n)]


def naive_descriptions(classes: Sequence[str], n: int) -> dict[str, dict[str, list[str]]]:
    """The naive ablation in the same shape as :func:`describe_classes`: ``{c: {"naive": [p]*n}}``."""
    return {c: {"naive": [naive_prompt(c)] * n} for c in validate_classes(classes)}


def dpsm_prompts(descriptions: dict[str, dict[str, list[str]]]) -> list[tuple[str, str, str]]:
    """Flatten ``{class: {attribute: [description, ...]}}`` to ``[(class, attribute, prompt), ...]``.

    Order: classes as given, attributes in :data:`ATTRIBUTES` order (others after, sorted), then
    descriptions in order. Keys starting with ``_`` (bookkeeping) are skipped.
    """
    rows: list[tuple[str, str, str]] = []
    for class_name, per_attribute in descriptions.items():
        if class_name.startswith("_"):
            continue
        names = [a for a in ATTRIBUTES if a in per_attribute]
        names += sorted(a for a in per_attribute if a not in ATTRIBUTES and not a.startswith("_"))
        for attribute in names:
            rows.extend((class_name, attribute, text) for text in per_attribute[attribute])
    return rows


# ----------------------------------------------------------------------------------------------- parsing

def _class_pattern(class_name: str) -> re.Pattern[str]:
    words = [re.escape(w) for w in class_name.lower().split()]
    body = r"\s+".join(words)
    return re.compile(rf"(?<![\w-]){body}(?:e?s)?(?![\w-])", re.IGNORECASE)


def _json_items(text: str) -> list[str] | None:
    """Items of a JSON array found in ``text`` (whole text first, then the outermost ``[...]``)."""
    candidates = [text.strip()]
    start, end = text.find("["), text.rfind("]")
    if 0 <= start < end:
        candidates.append(text[start:end + 1])
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except (json.JSONDecodeError, ValueError):
            continue
        if isinstance(value, dict) and len(value) == 1:
            value = next(iter(value.values()))
        if isinstance(value, list) and value:
            items: list[str] = []
            for item in value:
                if isinstance(item, str):
                    items.append(item)
                elif isinstance(item, dict):
                    strings = [v for v in item.values() if isinstance(v, str)]
                    if strings:
                        items.append(max(strings, key=len))
            if items:
                return items
    return None


def _strip_decoration(line: str) -> tuple[str, bool]:
    """Remove list markers, markdown emphasis and quotes -> ``(text, had_marker)``."""
    match = _MARKER.match(line)
    had_marker = bool(match and match.group(0).strip())
    text = line[match.end():] if match else line
    text = re.sub(r"\*\*|__|`", "", text).strip()
    for _ in range(2):
        text = text.strip().strip('"“”‘’\'').strip()
        text = re.sub(r"^(?:description|caption|prompt)\s*\d*\s*[:\-–]\s*", "", text, flags=re.IGNORECASE)
    return text, had_marker


def _tidy(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip().strip('"“”\'').strip()
    text = re.sub(r"\s+([,.;:!?])", r"\1", text)
    return text


def _fix_prefix(text: str, class_name: str, class_re: re.Pattern[str]) -> str:
    first = text.split(" ", 1)[0].lower().strip(",")
    lowered = f"{text[:1].lower()}{text[1:]}"
    if first in _LINKING or first.endswith("ing"):
        return f"{PREFIX} {indefinite_article(class_name)} {class_name} {lowered}"
    if class_re.search(text):
        return f"{PREFIX} {lowered}"
    return f"{PREFIX} {indefinite_article(class_name)} {class_name}, {lowered}"


def _starts_with_class(text: str, class_name: str) -> bool:
    """``"A car with..."``, ``"The small red dog..."``: an article, at most 3 words, then the class."""
    words = r"\s+".join(re.escape(w) for w in class_name.lower().split())
    pattern = rf"^(?:a|an|the)\s+(?:[\w'-]+\s+){{0,3}}?{words}(?:e?s)?(?![\w-])"
    return re.match(pattern, text, flags=re.IGNORECASE) is not None


def _dedupe_key(text: str) -> str:
    return re.sub(r"[\s.!,;]+$", "", re.sub(r"\s+", " ", text.lower())).strip()


def parse_descriptions(text: str, class_name: str, k: int | None = None) -> list[str]:
    """Descriptions of ``class_name`` found in an LLM reply (rules in the module docstring).

    Returns at most ``k`` (all if ``None``) unique descriptions, each starting with ``"A photo of"``
    and naming the class.
    """
    class_re = _class_pattern(class_name)
    text = re.sub(r"```[a-zA-Z]*", "\n", text or "")
    json_items = _json_items(text)
    if json_items is not None:
        candidates = [(_strip_decoration(item)[0], True) for item in json_items]
    else:
        candidates = [_strip_decoration(line) for line in text.splitlines()]
    out: list[str] = []
    seen: set[str] = set()
    for raw, is_item in candidates:
        raw = _tidy(raw)
        if not raw or raw.endswith(":"):
            continue
        photo = _PHOTO_OF.search(raw)
        if photo is not None:
            rest = raw[photo.end():].strip()
            if not rest:
                continue
            description = f"{PREFIX} {rest}"
        elif not is_item and _starts_with_class(raw, class_name):
            description = f"{PREFIX} {raw[:1].lower()}{raw[1:]}"
        elif is_item:
            label, colon, body = raw.partition(": ")
            if colon and len(label.split()) <= 8 and class_re.search(body):
                raw = body.strip()
            description = _fix_prefix(raw, class_name, class_re)
        else:
            continue
        description = _tidy(description)
        if not class_re.search(description):
            continue
        key = _dedupe_key(description)
        if key in seen:
            continue
        seen.add(key)
        out.append(description)
        if k is not None and len(out) >= k:
            break
    return out


# ------------------------------------------------------------------------------------------ generation

def ask_descriptions(llm: ChatLLM, class_name: str, attribute: str, k: int, seed: int = 0,
                     attempts: int = 3, max_new_tokens: int = 1024, temperature: float = 0.7,
                     format_hint: bool = False) -> tuple[list[str], int]:
    """Ask ``llm`` for ``k`` descriptions; re-ask (seed ``seed + 1000*i``) until ``k`` are found or
    ``attempts`` answers were parsed; pad with the naive prompt.

    A retry uses at least temperature 0.7 (greedy decoding would repeat the same answer).

    Returns:
        ``(descriptions, n_padded)``: exactly ``k`` strings, the last ``n_padded`` being the naive prompt.
    """
    if k < 1 or attempts < 1:
        raise ProtosegError(f"need k >= 1 and attempts >= 1, got k={k}, attempts={attempts}")
    question = dpsm_question(class_name, attribute, k, format_hint=format_hint)
    found: list[str] = []
    seen: set[str] = set()
    for attempt in range(attempts):
        temp = temperature if attempt == 0 else max(temperature, 0.7)
        reply = llm.chat([{"role": "user", "content": question}], max_new_tokens=max_new_tokens,
                         temperature=temp, seed=seed + 1000 * attempt)
        for description in parse_descriptions(reply, class_name):
            key = _dedupe_key(description)
            if key not in seen:
                seen.add(key)
                found.append(description)
        if len(found) >= k:
            return found[:k], 0
    n_padded = k - len(found)
    return found + [naive_prompt(class_name)] * n_padded, n_padded


def read_description_cache(path: str | Path) -> dict[str, Any]:
    """The JSON cache ``{class: {attribute: [description, ...], "_padded": {attribute: n}}}``."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProtosegError(f"description cache {str(path)!r} is not valid JSON ({exc}); fix or delete it") \
            from None
    if not isinstance(data, dict):
        raise ProtosegError(f"description cache {str(path)!r} must hold a JSON object "
                            "{class: {attribute: [descriptions]}}")
    for class_name, entry in data.items():
        if not isinstance(entry, dict):
            raise ProtosegError(f"description cache {str(path)!r}: entry {class_name!r} must be an object "
                                "{attribute: [descriptions]}")
        for attribute, value in entry.items():
            if attribute.startswith("_"):
                continue
            if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
                raise ProtosegError(f"description cache {str(path)!r}: {class_name!r}/{attribute!r} must be "
                                    "a list of non-empty strings")
    return data


def describe_classes(classes: Sequence[str], llm: ChatLLM | None, k: int = 16,
                     cache_path: str | Path | None = None, seed: int = 0,
                     progress: Progress | None = None,
                     attributes: Iterable[str] = ATTRIBUTES, attempts: int = 3,
                     max_new_tokens: int = 1024, temperature: float = 0.7,
                     format_hint: bool = False) -> dict[str, dict[str, list[str]]]:
    """``k`` LLM descriptions per class and attribute: ``{class: {attribute: [description] * k}}``.

    With ``cache_path``, the JSON cache is read first and every ``(class, attribute)`` list present in
    it is used verbatim and never regenerated (edit the file to change prompts; delete an entry to have
    it regenerated). Each new list is written to the cache atomically as soon as it is ready, so an
    interrupted run resumes where it stopped. Padding by the naive prompt is recorded in the cache as
    ``"_padded": {attribute: n}`` of the class (not part of the returned dict).

    Args:
        llm: the chat model; may be ``None`` when the cache holds everything asked for.
        seed: base seed; each ``(class, attribute)`` request uses ``derive_seed(seed, class, attribute)``
            (independent of the order and number of classes, so adding classes never changes existing answers).
        progress: ``progress("descriptions", done, total)`` after each ``(class, attribute)`` list.
    """
    classes = validate_classes(classes)
    attributes = list(attributes)
    bad = [c for c in classes if c.startswith("_")]
    if bad:
        raise ProtosegError(f"class names may not start with '_' (reserved in the cache): {bad}")
    cache = read_description_cache(cache_path) if cache_path is not None else {}
    result: dict[str, dict[str, list[str]]] = {}
    total, done = len(classes) * len(attributes), 0
    for class_name in classes:
        entry = cache.setdefault(class_name, {})
        for attribute in attributes:
            if attribute not in entry:
                if llm is None:
                    raise ProtosegError(f"no descriptions of {class_name!r}/{attribute!r} in the cache and "
                                        "no LLM given; pass an LLM (e.g. --llm smollm2) or fill the cache")
                texts, n_padded = ask_descriptions(llm, class_name, attribute, k,
                                                   seed=derive_seed(seed, class_name, attribute),
                                                   attempts=attempts, max_new_tokens=max_new_tokens,
                                                   temperature=temperature, format_hint=format_hint)
                entry[attribute] = texts
                if n_padded:
                    entry.setdefault(PADDED_KEY, {})[attribute] = n_padded
                if cache_path is not None:
                    write_json(cache_path, cache)
            done += 1
            if progress is not None:
                progress("descriptions", done, total)
        result[class_name] = {a: list(entry[a]) for a in attributes}
    return result
