"""Every server setting, once: TGI's environment variable names, the matching CLI flags, defaults
and the cross-checks between limits.

Names and defaults follow TGI's launcher (``text-generation-launcher --help``) so that a learner who
moves to a real TGI recognises every knob. Where the laptop needs a different default (host, batch
token budgets sized for a 2-core CPU) the difference is noted next to the field.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any


class ConfigError(ValueError):
    """A setting, or a combination of settings, that cannot work. The message names them."""


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected true/false, got {value!r}")


@dataclass(frozen=True)
class Setting:
    """How one field is spelled in the environment and on the command line."""

    env: tuple[str, ...]
    help: str


# One table: field name -> (env names, first one wins; help). CLI flags are the field name with dashes.
SETTINGS: dict[str, Setting] = {
    "model_id": Setting(("MODEL_ID",), "Model to serve: 'default', a local folder, a .gguf file or a Hub id."),
    "revision": Setting(("REVISION",), "Hub revision for a Hub MODEL_ID."),
    # HOSTNAME is TGI's name, but Docker, Codespaces and Fedora/RHEL shells export HOSTNAME as the machine's
    # name: it counts only when it is an IP address (see _honoured), TGI_COURSE_HOSTNAME always.
    "hostname": Setting(("TGI_COURSE_HOSTNAME", "HOSTNAME"), "Interface to listen on (an IP address); 0.0.0.0 to serve a room."),
    "port": Setting(("PORT",), "TCP port (TGI's launcher uses 3000)."),
    "device": Setting(("DEVICE",), "cuda, cpu or auto."),
    "dtype": Setting(("DTYPE",), "bfloat16, float16, float32 or auto."),
    "backend": Setting(
        ("BACKEND",), "auto, transformers or llama.cpp: what computes the model (auto: llama.cpp for a GGUF on the CPU in float32)."
    ),
    "gguf_weights": Setting(
        ("GGUF_WEIGHTS",),
        "What the llama.cpp backend computes with: f16 (default: the GGUF de-quantized once, as accurate as the dense path), "
        "file (the GGUF's own quantization: faster, less accurate), bf16 or f32.",
    ),
    "quantize": Setting(("QUANTIZE",), "int4: 4-bit weight-only on the CPU (faster single streams); unset: dense."),
    "max_input_tokens": Setting(("MAX_INPUT_TOKENS", "MAX_INPUT_LENGTH"), "Longest prompt, in tokens."),
    "max_total_tokens": Setting(("MAX_TOTAL_TOKENS",), "Prompt plus new tokens, per request."),
    "max_batch_prefill_tokens": Setting(("MAX_BATCH_PREFILL_TOKENS",), "Prompt tokens prefilled in one step."),
    "max_batch_total_tokens": Setting(("MAX_BATCH_TOTAL_TOKENS",), "Tokens (prompt + new) held by the running batch."),
    "max_batch_size": Setting(("MAX_BATCH_SIZE",), "Most requests decoded together in one step."),
    "max_concurrent_requests": Setting(("MAX_CONCURRENT_REQUESTS",), "Requests in flight before 429."),
    "max_stop_sequences": Setting(("MAX_STOP_SEQUENCES",), "Most stop sequences per request."),
    "max_top_n_tokens": Setting(("MAX_TOP_N_TOKENS",), "Most top_logprobs / top_n_tokens per request."),
    "max_best_of": Setting(("MAX_BEST_OF",), "Most choices (n / best_of) per request."),
    "api_key": Setting(("API_KEY",), "Bearer token required on inference routes when set."),
    "payload_limit": Setting(("PAYLOAD_LIMIT",), "Largest request body in bytes (413 above)."),
    "messages_api_enabled": Setting(("MESSAGES_API_ENABLED",), "Make /invocations a chat-completions route."),
    "cors_allow_origin": Setting(("CORS_ALLOW_ORIGIN",), "Comma-separated origins allowed by CORS."),
    "served_model_name": Setting(("SERVED_MODEL_NAME",), "Name reported in responses and /v1/models."),
    "threads": Setting(("TGI_COURSE_THREADS",), "CPU threads for torch (0 = all cores)."),
    "max_client_batch_size": Setting(("MAX_CLIENT_BATCH_SIZE",), "Most prompts in one request (a /v1/completions prompt list)."),
    "validation_workers": Setting(("VALIDATION_WORKERS",), "Threads that render templates, tokenize and compile grammars, off the event loop."),
    "shutdown_grace_seconds": Setting(
        ("SHUTDOWN_GRACE_SECONDS",), "On SIGTERM/SIGINT, seconds running requests may take to finish before their streams are ended."
    ),
}

def server_env_names() -> set[str]:
    """Every environment variable a server reads: a parent's values must not leak into a child server."""
    return {name for setting in SETTINGS.values() for name in setting.env}


# Settings that one run shares with every server it starts. The numerics are a property of the whole run:
# `make test DTYPE=float32` must reach the suite's servers, the notebooks' LocalServer and the endpoints'
# children alike, while any other server variable of a parent stays out of its children (a notebook's
# environment must not change the course server by accident). Explicit settings still win.
RUN_WIDE_SETTINGS = ("dtype", "backend", "gguf_weights")


def run_wide_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The run-wide settings present in ``environ`` (default: this process's), by their env names."""
    environ = os.environ if environ is None else environ
    names = [name for field_name in RUN_WIDE_SETTINGS for name in SETTINGS[field_name].env]
    return {name: environ[name] for name in names if environ.get(name)}


def run_dtype(environ: Mapping[str, str] | None = None) -> str:
    """The dtype this run asks for: ``DTYPE`` from the environment, else ``auto``."""
    return run_wide_env(environ).get(SETTINGS["dtype"].env[0], "auto")


def run_backend(environ: Mapping[str, str] | None = None) -> str:
    """The backend this run asks for: ``BACKEND`` from the environment, else ``auto``."""
    return run_wide_env(environ).get(SETTINGS["backend"].env[0], "auto")


def run_gguf_weights(environ: Mapping[str, str] | None = None) -> str:
    """What this run's llama.cpp backend computes with: ``GGUF_WEIGHTS`` from the environment, else f16."""
    return run_wide_env(environ).get(SETTINGS["gguf_weights"].env[0], "f16")


# Weight formats QUANTIZE accepts (tgi_course.models.quantize implements them; kept here so that
# validating a config never imports torch).
QUANTIZATIONS = ("int4",)
# Kept equal to tgi_course.models.backend.BACKENDS (tested), for the same reason.
BACKENDS = ("auto", "transformers", "llama.cpp")
GGUF_WEIGHTS = ("f16", "file", "bf16", "f32")

# TGI's launcher default port; the docker image listens on 80 instead.
DEFAULT_PORT = 3000
DEFAULT_MODEL_ID = "default"


@dataclass(frozen=True)
class ServerConfig:
    """Validated settings of one server. Build it with :meth:`from_sources`."""

    model_id: str = DEFAULT_MODEL_ID
    revision: str | None = None
    hostname: str = "127.0.0.1"  # TGI binds 0.0.0.0; a laptop should not expose itself by default.
    port: int = DEFAULT_PORT
    device: str = "auto"
    dtype: str = "auto"
    backend: str = "auto"  # TGI ships its llama.cpp backend as a separate build; here it is a setting
    gguf_weights: str = "f16"
    quantize: str | None = None  # TGI's QUANTIZE names GPU schemes (gptq, awq, ...); ours is a CPU one
    max_input_tokens: int | None = None  # derived from the model when unset, as TGI does
    max_total_tokens: int | None = None
    max_batch_prefill_tokens: int | None = None
    max_batch_total_tokens: int | None = None
    max_batch_size: int = 64
    max_concurrent_requests: int = 128
    max_stop_sequences: int = 4
    max_top_n_tokens: int = 5
    max_best_of: int = 8
    api_key: str | None = None
    payload_limit: int = 2_000_000
    messages_api_enabled: bool = False
    cors_allow_origin: tuple[str, ...] = field(default_factory=tuple)
    served_model_name: str | None = None
    threads: int = 0
    max_client_batch_size: int = 4  # TGI's default
    validation_workers: int = 2  # TGI's default
    # TGI's router drains in-flight requests on SIGTERM; here the wait is bounded so a stop never hangs a room.
    shutdown_grace_seconds: float = 10.0

    @classmethod
    def from_sources(
        cls,
        env: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> ServerConfig:
        """Environment first, then explicit overrides (CLI flags, keyword arguments) on top."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        types = {f.name: f.type for f in fields(cls)}
        for name, setting in SETTINGS.items():
            for var in setting.env:
                raw = env.get(var)
                if raw is not None and raw != "" and _honoured(var, raw):
                    values[name] = _parse(name, types[name], raw, source=var)
                    break
        for name, value in (overrides or {}).items():
            if value is None:
                continue
            if name not in types:
                raise ConfigError(f"unknown setting {name!r}")
            values[name] = _parse(name, types[name], value, source=f"--{name.replace('_', '-')}") if isinstance(value, str) else value
        return cls(**values)

    def resolve_limits(self, model_max_positions: int) -> ServerConfig:
        """Fill unset limits from the model's context size and check they fit together.

        TGI derives ``max_input_tokens = max_total_tokens - 1`` and sizes prefill to the input limit;
        we follow that, capped at 4096 total so a laptop does not reserve a 128k context by accident.
        """
        total = self.max_total_tokens or min(model_max_positions, 4096)
        max_input = self.max_input_tokens or total - 1
        prefill = self.max_batch_prefill_tokens or max(max_input, 4096)
        # Admission reserves prompt + max_new_tokens per request; 16 full-length requests fit by default
        # (about 1.5 GB of bf16 KV cache for the default model).
        batch_total = self.max_batch_total_tokens or max(total * 16, 65_536)
        resolved = _replace(
            self,
            max_total_tokens=total,
            max_input_tokens=max_input,
            max_batch_prefill_tokens=prefill,
            max_batch_total_tokens=batch_total,
        )
        resolved.check(model_max_positions)
        return resolved

    def check(self, model_max_positions: int | None = None) -> None:
        """Raise :class:`ConfigError` naming both settings when two limits contradict each other."""
        t, i = self.max_total_tokens, self.max_input_tokens
        p, b = self.max_batch_prefill_tokens, self.max_batch_total_tokens
        if i is not None and t is not None and i >= t:
            raise ConfigError(
                f"MAX_INPUT_TOKENS ({i}) must be < MAX_TOTAL_TOKENS ({t}): a request needs room for one new token"
            )
        if p is not None and i is not None and p < i:
            raise ConfigError(
                f"MAX_BATCH_PREFILL_TOKENS ({p}) must be >= MAX_INPUT_TOKENS ({i}): the longest prompt must fit one prefill"
            )
        if b is not None and t is not None and b < t:
            raise ConfigError(
                f"MAX_BATCH_TOTAL_TOKENS ({b}) must be >= MAX_TOTAL_TOKENS ({t}): one request must fit the batch"
            )
        if model_max_positions is not None and t is not None and t > model_max_positions:
            raise ConfigError(
                f"MAX_TOTAL_TOKENS ({t}) exceeds the model's max_position_embeddings ({model_max_positions})"
            )
        for name in ("port", "max_concurrent_requests", "max_batch_size", "payload_limit", "max_best_of", "max_client_batch_size", "validation_workers"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{SETTINGS[name].env[0]} must be > 0, got {getattr(self, name)}")
        if not 0 <= self.shutdown_grace_seconds <= 3600:
            raise ConfigError(f"SHUTDOWN_GRACE_SECONDS must be between 0 and 3600, got {self.shutdown_grace_seconds}")
        if self.device not in {"auto", "cpu", "cuda"} and not self.device.startswith("cuda:"):
            raise ConfigError(f"DEVICE must be auto, cpu or cuda, got {self.device!r}")
        if self.dtype not in {"auto", "bfloat16", "float16", "float32"}:
            raise ConfigError(f"DTYPE must be auto, bfloat16, float16 or float32, got {self.dtype!r}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"BACKEND must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.gguf_weights not in GGUF_WEIGHTS:
            raise ConfigError(f"GGUF_WEIGHTS must be one of {', '.join(GGUF_WEIGHTS)}, got {self.gguf_weights!r}")
        if self.quantize is not None and self.quantize not in QUANTIZATIONS:
            raise ConfigError(f"QUANTIZE must be one of {', '.join(QUANTIZATIONS)} or unset, got {self.quantize!r}")
        if self.quantize is not None and self.device.startswith("cuda"):
            raise ConfigError(
                f"QUANTIZE={self.quantize} is a CPU kernel; on DEVICE={self.device} serve dense bf16/fp16 weights (unset QUANTIZE)"
            )

    def to_env(self) -> dict[str, str]:
        """The environment that reproduces this config in a child process."""
        out: dict[str, str] = {}
        for name, setting in SETTINGS.items():
            value = getattr(self, name)
            if value is None or value == ():
                continue
            if isinstance(value, bool):
                value = "true" if value else "false"
            elif isinstance(value, tuple):
                value = ",".join(value)
            out[setting.env[0]] = str(value)
        return out


def _honoured(var: str, raw: str) -> bool:
    """Whether an environment value is meant for the server: a HOSTNAME that is no IP literal is the machine's name."""
    if var != "HOSTNAME":
        return True
    import ipaddress

    try:
        ipaddress.ip_address(raw.strip().strip("[]"))
    except ValueError:
        return False
    return True


def is_loopback(hostname: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if hostname.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def _replace(config: ServerConfig, **changes: Any) -> ServerConfig:
    from dataclasses import replace

    return replace(config, **changes)


def _parse(name: str, annotation: Any, raw: Any, source: str) -> Any:
    text = str(annotation)
    try:
        if "tuple" in text:
            if isinstance(raw, (list, tuple)):
                return tuple(raw)
            return tuple(part.strip() for part in str(raw).split(",") if part.strip())
        if "bool" in text:
            return raw if isinstance(raw, bool) else _bool(str(raw))
        if "float" in text:
            return float(raw)
        if "int" in text:
            return int(raw)
        return str(raw)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per setting; each defaults to None so the environment still applies."""
    for name, setting in SETTINGS.items():
        flag = "--" + name.replace("_", "-")
        env_names = "/".join(setting.env)
        if name == "messages_api_enabled":
            parser.add_argument(flag, action="store_true", default=None, help=f"{setting.help} [{env_names}]")
        else:
            parser.add_argument(flag, default=None, help=f"{setting.help} [{env_names}]")
