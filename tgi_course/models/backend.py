"""Which engine computes the model: the transformers runner (torch) or the llama.cpp runner (GGUF on the CPU).

TGI calls a non-default engine a *backend* (its llama.cpp and TensorRT-LLM backends), so the setting is
``BACKEND=auto|transformers|llama.cpp``. ``auto`` takes llama.cpp for a GGUF served on the CPU with
float32 activations, the case where its quantized kernels beat torch's dense ones (figures in the
README's speed section), and transformers otherwise: a GPU, a folder or Hub model, ``QUANTIZE``, or an
explicit ``DTYPE=bfloat16/float16`` (llama.cpp has no bf16 compute path to honour it).
"""

from __future__ import annotations

from dataclasses import dataclass

BACKENDS = ("auto", "transformers", "llama.cpp")
GGUF_KINDS = {"default-gguf", "gguf"}


@dataclass(frozen=True)
class BackendChoice:
    """The runner a server will use, and why (logged once at start-up)."""

    name: str  # "transformers" | "llama.cpp"
    reason: str


def choose_backend(
    requested: str,
    *,
    source_kind: str,
    device: str,
    dtype: str,
    quantize: str | None,
    cuda_available: bool,
    llama_cpp_missing: str | None,
) -> BackendChoice:
    """Decide the backend from the settings; raises ValueError when ``llama.cpp`` is asked for and cannot run.

    ``llama_cpp_missing`` is None when llama-cpp-python imports, else why it does not.
    """
    if requested not in BACKENDS:
        raise ValueError(f"BACKEND must be one of {', '.join(BACKENDS)}, got {requested!r}")
    on_gpu = device.startswith("cuda") or (device == "auto" and cuda_available)
    obstacles = []
    if source_kind not in GGUF_KINDS:
        obstacles.append("MODEL_ID is not a .gguf file (llama.cpp reads GGUF only)")
    if on_gpu:
        obstacles.append("the model runs on a CUDA GPU (this llama.cpp build is the CPU one)")
    if quantize is not None:
        obstacles.append(f"QUANTIZE={quantize} is a transformers-runner weight format (the GGUF is already quantized)")
    if dtype not in {"auto", "float32"}:
        obstacles.append(f"DTYPE={dtype} (llama.cpp computes in float32 over the GGUF's quantized weights)")
    if requested == "transformers":
        return BackendChoice("transformers", "BACKEND=transformers")
    if requested == "llama.cpp":
        if llama_cpp_missing is not None:
            obstacles.append(llama_cpp_missing)
        if obstacles:
            raise ValueError("BACKEND=llama.cpp cannot serve this model: " + "; ".join(obstacles))
        return BackendChoice("llama.cpp", "BACKEND=llama.cpp")
    if obstacles:
        return BackendChoice("transformers", "BACKEND=auto chose transformers: " + "; ".join(obstacles))
    if llama_cpp_missing is not None:
        return BackendChoice("transformers", f"BACKEND=auto chose transformers: {llama_cpp_missing}")
    return BackendChoice("llama.cpp", "BACKEND=auto chose llama.cpp: a GGUF on the CPU, where its quantized kernels are the fastest path")
