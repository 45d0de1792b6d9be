"""Keep notebook output quiet and reproducible: no progress bars, no known-noisy warnings.

Why this exists: nbval compares every output of a notebook cell with the stored one, *including
stderr*. Progress bars (tqdm, huggingface_hub, transformers) and one-off warnings land in stderr
and differ from run to run, so a strict run would fail on noise rather than on a real change.

Call :func:`quiet` in the first code cell, **before** importing LangChain, LlamaIndex, Chroma or
sentence-transformers: tqdm and huggingface_hub read their switches from the environment when
they are first imported. Every setting is a ``setdefault``, so a learner's own choice wins.

Everything here is cheap to import (standard library only).
"""

from __future__ import annotations

import logging
import os
import warnings

#: Environment variables set (unless already set) by :func:`quiet`, with the reason for each.
QUIET_ENV: dict[str, str] = {
    "TQDM_DISABLE": "1",  # every tqdm bar (LangChain loaders, LlamaIndex, chromadb)
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # huggingface_hub and transformers weight loading
    "HF_HUB_OFFLINE": "1",  # the course is offline: never try the Hub, fail fast instead
    "TRANSFORMERS_OFFLINE": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",  # silences the fork warning of Hugging Face tokenizers
    "ANONYMIZED_TELEMETRY": "False",  # chromadb: no telemetry calls from an offline laptop
    "USER_AGENT": "tgi-course-notebook",  # LangChain's WebBaseLoader warns when it is unset
}

# (message regex, category) pairs of warnings that are known, harmless and not the lesson.
_IGNORED_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    # langchain-community announces its sunset on import; we use it only for WebBaseLoader.
    (r".*langchain-community.* is being sunset", DeprecationWarning),
    (r".*langchain-community.* is being sunset", UserWarning),
    # tqdm.auto looks for Jupyter widgets on import; with bars disabled we do not need them.
    (r"IProgress not found", Warning),
)

_NOISY_LOGGERS = (
    "langchain_community.utils.user_agent",
    "sentence_transformers",
    "transformers",
    "chromadb.telemetry",
    "httpx",
)


def quiet() -> None:
    """Silence progress bars and known-noisy warnings for the rest of this Python process."""
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    for message, category in _IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
