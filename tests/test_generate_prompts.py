"""DPSM description prompts: wording, tolerant parsing of LLM replies, re-asking, padding, the JSON cache."""

from __future__ import annotations

import json

import pytest

from protoseg.errors import ProtosegError
from protoseg.generate.prompts import (
    ATTRIBUTES,
    ask_descriptions,
    describe_classes,
    dpsm_prompts,
    dpsm_question,
    naive_descriptions,
    naive_prompt,
    naive_prompts,
    parse_descriptions,
)
from protoseg.runs import derive_seed


class CountingLLM:
    """Answers from a function of (question, seed); records every call."""

    name = "fake"

    def __init__(self, answer):
        self.answer = answer
        self.calls: list[tuple[str, int, float]] = []

    def chat(self, messages, max_new_tokens, temperature, seed):
        question = messages[-1]["content"]
        self.calls.append((question, seed, temperature))
        return self.answer(question, seed)


def numbered(class_name: str, n: int, tag: str = "") -> str:
    return "\n".join(f"{i + 1}. A photo of {class_name} {tag}variant {i}." for i in range(n))


# ------------------------------------------------------------------------------------------ wording

def test_location_question_is_the_papers_wording():
    assert dpsm_question("car", "location", 16) == (
        "List different locations in which a car may appear in an image. Generate 16 short descriptions "
        "about car in these locations. Each description should start as A photo of car.")


def test_questions_for_all_attributes_name_class_k_and_prefix():
    for attribute in ATTRIBUTES:
        q = dpsm_question("apple", attribute, 7)
        assert q.startswith("List different ") and "an apple" in q and "Generate 7 short" in q
        assert q.endswith("Each description should start as A photo of apple.")
    assert "numbered list" in dpsm_question("car", "state", 3, format_hint=True)
    with pytest.raises(ProtosegError):
        dpsm_question("car", "colour", 3)


def test_naive_prompts_and_dpsm_rows():
    assert naive_prompt("cat") == "a good photo of a cat"
    assert naive_prompt("orange") == "a good photo of an orange"
    assert naive_prompts(["cat", "dog"], 2) == ["a good photo of a cat"] * 2 + ["a good photo of a dog"] * 2
    descriptions = {"car": {"location": ["l1"], "state": ["s1", "s2"], "_padded": {"state": 1}},
                    "dog": {"object": ["o1"]}}
    assert dpsm_prompts(descriptions) == [("car", "state", "s1"), ("car", "state", "s2"),
                                          ("car", "location", "l1"), ("dog", "object", "o1")]
    assert dpsm_prompts(naive_descriptions(["cat"], 2)) == [("cat", "naive", "a good photo of a cat")] * 2


# ------------------------------------------------------------------------------------------ parsing

PARSE_CASES = [
    # clean numbered list
    ("1. A photo of car on a highway.\n2. A photo of car in a garage.",
     ["A photo of car on a highway.", "A photo of car in a garage."]),
    # chatter before and after, bullets, bold, quotes
    ('Sure! Here are some descriptions:\n- **A photo of a car parked on a street**\n'
     '* "A photo of a car in the snow"\n\nI hope this helps!',
     ["A photo of a car parked on a street", "A photo of a car in the snow"]),
    # JSON array, with a code fence
    ('```json\n["A photo of a car at night", "A photo of a car at the beach"]\n```',
     ["A photo of a car at night", "A photo of a car at the beach"]),
    # JSON embedded in chatter, object items
    ('Here you go: [{"description": "A photo of car in a desert"}, '
     '{"description": "A photo of car in rain"}]',
     ["A photo of car in a desert", "A photo of car in rain"]),
    # numbered with ")" and a "Description 1:" label; lower-case prefix and "an image of"
    ("1) Description 1: a photo of a red car\n2) Location: An image of a car on a bridge",
     ["A photo of a red car", "A photo of a car on a bridge"]),
    # list items without the prefix: names the class -> prefixed; location phrase -> class inserted
    ("1. A red car parked outside\n2. On a busy highway\n3. Rusty and old",
     ["A photo of a red car parked outside", "A photo of a car on a busy highway",
      "A photo of a car, rusty and old"]),
    # an item opening with a preposition gets the class even when it names the class later
    ("1. In a quiet town, a car is parked by the road.",
     ["A photo of a car in a quiet town, a car is parked by the road."]),
    # "<label>: <text>" items: the text is kept when it names the class
    ("1. Car in a city: A car with tinted windows.\n2. Beach: sunny and warm",
     ["A photo of a car with tinted windows.", "A photo of a car, beach: sunny and warm"]),
    # duplicates (case, spacing, final full stop) removed; a description not naming the class is dropped
    ("1. A photo of a car in a garage.\n2. a photo of a  CAR in a garage\n3. A photo of a parking lot.\n"
     "4. A photo of cars in traffic",
     ["A photo of a car in a garage.", "A photo of cars in traffic"]),
    # plain prose without list markers and without "photo of" is chatter ...
    ("Cars are vehicles with four wheels.\nThey appear in many places.\nHere is a car for you.", []),
    # ... unless it opens with an article and the class (SmolLM2 answered this, without a list)
    ("A car with a sleek exterior, and a sleek design.\nThe small red car by a tree",
     ["A photo of a car with a sleek exterior, and a sleek design.",
      "A photo of the small red car by a tree"]),
    # headings ending with ':' dropped; multi-word class; "(3)" markers
    ("Locations:\n(1) A photo of a traffic light at a crossing\n(2) A photo of traffic lights in fog",
     ["A photo of a traffic light at a crossing", "A photo of traffic lights in fog"]),
    # empty reply
    ("", []),
    # a "photo of" with nothing after it is not a description
    ("1. A photo of\n2. A photo of a car", ["A photo of a car"]),
]


@pytest.mark.parametrize(("reply", "expected"), PARSE_CASES)
def test_parse_descriptions(reply, expected):
    class_name = "traffic light" if "traffic light" in reply else "car"
    assert parse_descriptions(reply, class_name) == expected


def test_parse_respects_k_and_whole_word_class_match():
    reply = numbered("car", 6)
    assert len(parse_descriptions(reply, "car", k=4)) == 4
    # "cart" / "scar" must not count as mentions of "car"
    assert parse_descriptions("1. A photo of a cart\n2. A photo of a scar", "car") == []


# --------------------------------------------------------------------------------- re-asking, padding

def test_reask_pools_unique_answers_with_new_seeds():
    llm = CountingLLM(lambda q, seed: numbered("car", 2, tag=f"s{seed} "))
    texts, padded = ask_descriptions(llm, "car", "state", k=4, seed=5, attempts=3, temperature=0.0)
    assert padded == 0 and len(texts) == 4 and len(set(texts)) == 4
    assert [c[1] for c in llm.calls] == [5, 1005]
    assert [c[2] for c in llm.calls] == [0.0, 0.7]  # a retry never samples greedily


def test_padding_with_naive_prompt_after_attempts():
    llm = CountingLLM(lambda q, seed: "1. A photo of a car on a road\nThat's all I know.")
    texts, padded = ask_descriptions(llm, "car", "location", k=4, attempts=2)
    assert len(llm.calls) == 2
    assert texts == ["A photo of a car on a road"] + ["a good photo of a car"] * 3 and padded == 3


# ------------------------------------------------------------------------------------------- cache

def answer_by_attribute(question: str, seed: int) -> str:
    attribute = next(a for a, word in [("state", "states"), ("feature", "features"), ("object", "objects"),
                                       ("location", "locations")] if f"different {word}" in question)
    class_name = question.split("about ")[1].split(" ")[0]
    return numbered(class_name, 3, tag=f"{attribute} ")


def test_cache_is_written_reused_and_editable(tmp_path):
    cache = tmp_path / "sub" / "descriptions.json"
    llm = CountingLLM(answer_by_attribute)
    seen: list[tuple[str, int, int]] = []
    first = describe_classes(["car", "dog"], llm, k=3, cache_path=cache, seed=0,
                             progress=lambda *args: seen.append(args))
    assert len(llm.calls) == 8 and seen == [("descriptions", i, 8) for i in range(1, 9)]
    assert set(first) == {"car", "dog"} and set(first["car"]) == set(ATTRIBUTES)
    assert first["dog"]["location"] == [f"A photo of dog location variant {i}." for i in range(3)]
    assert json.loads(cache.read_text()) == first  # no padding -> no bookkeeping keys
    assert [p.name for p in cache.parent.iterdir()] == ["descriptions.json"]  # no temp files left

    counting = CountingLLM(answer_by_attribute)
    again = describe_classes(["car", "dog"], counting, k=3, cache_path=cache)
    assert counting.calls == [] and again == first
    assert describe_classes(["car"], None, k=3, cache_path=cache)["car"] == first["car"]

    data = json.loads(cache.read_text())
    data["car"]["state"] = ["A photo of a car, edited by hand"]
    del data["dog"]["object"]
    cache.write_text(json.dumps(data))
    edited = describe_classes(["car", "dog"], counting, k=3, cache_path=cache)
    assert edited["car"]["state"] == ["A photo of a car, edited by hand"]
    assert len(counting.calls) == 1 and "objects" in counting.calls[0][0]  # only the deleted entry
    assert ("car", "state", "A photo of a car, edited by hand") in dpsm_prompts(edited)


def test_cache_records_padding_and_seeds_differ_per_request(tmp_path):
    cache = tmp_path / "d.json"
    llm = CountingLLM(lambda q, seed: "1. A photo of a cat on a sofa")
    out = describe_classes(["cat"], llm, k=2, cache_path=cache, attributes=("state", "location"), attempts=1)
    assert out["cat"]["state"] == ["A photo of a cat on a sofa", "a good photo of a cat"]
    assert json.loads(cache.read_text())["cat"]["_padded"] == {"state": 1, "location": 1}
    assert [c[1] for c in llm.calls] == [derive_seed(0, "cat", "state"), derive_seed(0, "cat", "location")]
    assert llm.calls[0][1] != llm.calls[1][1]
    # the same request gets the same seed whatever the other classes are
    other = CountingLLM(lambda q, seed: "1. A photo of a cat on a sofa")
    describe_classes(["dog", "cat"], other, k=1, attributes=("location",), attempts=1)
    assert other.calls[1][1] == derive_seed(0, "cat", "location")


def test_cache_errors_are_clear(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ProtosegError, match="not valid JSON"):
        describe_classes(["car"], None, cache_path=bad)
    bad.write_text(json.dumps({"car": {"state": "A photo of a car"}}))
    with pytest.raises(ProtosegError, match="list of non-empty strings"):
        describe_classes(["car"], None, cache_path=bad)
    with pytest.raises(ProtosegError, match="no LLM given"):
        describe_classes(["car"], None, cache_path=tmp_path / "new.json")
    with pytest.raises(ProtosegError, match="reserved"):
        describe_classes(["_meta"], CountingLLM(answer_by_attribute))


def test_interrupted_run_resumes_from_the_cache(tmp_path):
    cache = tmp_path / "d.json"

    def flaky(question, seed):
        if "features" in question:
            raise RuntimeError("server went away")
        return answer_by_attribute(question, seed)

    with pytest.raises(RuntimeError):
        describe_classes(["car"], CountingLLM(flaky), k=2, cache_path=cache)
    assert set(json.loads(cache.read_text())["car"]) == {"state"}  # the finished list was kept
    resumed = CountingLLM(answer_by_attribute)
    out = describe_classes(["car"], resumed, k=2, cache_path=cache)
    assert len(resumed.calls) == 3 and set(out["car"]) == set(ATTRIBUTES)
