"""Weight-only int4 quantization for the CPU: ``QUANTIZE=int4``.

Decoding one stream on a CPU is bound by reading the weights: every new token reads all of them once.
bf16 weights of the default model are 270 MB per token; packed 4-bit weights are a quarter of that,
and PyTorch ships a CPU kernel that multiplies bf16/fp32 activations by them
(``aten._weight_int4pack_mm_for_cpu``, the kernel torchao's int4 weight-only CPU layout uses). Measured
on the project's 2-core machine (``python -m bench --all``), one stream decodes about twice as fast, 16
streams about 1.3x, 64 streams the same; greedy text changes a little (notebook outputs are stored from dense
weights), which is why this is a choice, not the default.

Each layer keeps its dense weight too, for reading prompts (see ``prompt_pass``): weights take 1.25x the
dense memory, and only decoding steps read the 4-bit codes.

The scheme is round-to-nearest with one scale and one offset per group of 32 input columns, the same
shape as the GGUF ``Q4_1`` format the default model ships in: a weight that came from a Q4_1 file (as
ours did, de-quantized to bf16 on conversion) gets its original 4-bit codes back wherever its group
spans the full code range.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import nn

GROUP_SIZE = 32
# The packing routine's second argument: how many 16-wide K tiles the kernel reads at once.
_INNER_K_TILES = 1


# Set while the engine reads prompts (see prompt_pass); per thread, so engines in other threads are unaffected.
_reading_prompts: ContextVar[bool] = ContextVar("reading_prompts", default=False)


@contextmanager
def prompt_pass() -> Iterator[None]:
    """Inside: int4 layers multiply by their dense weight. Reading a prompt multiplies hundreds of rows at
    once, which is compute-bound: the int4 kernel took 2.3x as long as dense bf16 for 640 rows (16 ms vs
    7 ms for a 1536 x 576 layer), while decoding, a few rows at a time, is where 4-bit weights win."""
    token = _reading_prompts.set(True)
    try:
        yield
    finally:
        _reading_prompts.reset(token)


class Int4WeightOnlyLinear(nn.Module):
    """A ``Linear`` whose weight is stored as packed 4-bit codes, with a scale and offset per group."""

    def __init__(self, linear: nn.Linear, group_size: int = GROUP_SIZE) -> None:
        super().__init__()
        weight = linear.weight.detach().float()
        out_features, in_features = weight.shape
        if in_features % group_size:
            raise ValueError(f"in_features {in_features} is not a multiple of the group size {group_size}")
        groups = weight.reshape(out_features, in_features // group_size, group_size)
        low, high = groups.amin(dim=-1), groups.amax(dim=-1)
        scale = ((high - low) / 15).clamp(min=torch.finfo(torch.float32).tiny)
        codes = torch.round((groups - low[..., None]) / scale[..., None]).clamp(0, 15).to(torch.int32)
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        self.register_buffer(
            "packed",
            torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.reshape(out_features, in_features), _INNER_K_TILES),
        )
        # The kernel computes (code - 8) * scale + zero, so zero is the group's value at code 8.
        zero = low + 8 * scale
        scales_and_zeros = torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous()  # [groups, out, 2]
        self.register_buffer("scales_and_zeros", scales_and_zeros.to(linear.weight.dtype))
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        # Kept for prompt passes (the same tensor as before, no copy).
        self.register_buffer("dense_weight", linear.weight.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _reading_prompts.get():
            return F.linear(x, self.dense_weight, self.bias)
        leading = x.shape[:-1]
        flat = x.reshape(-1, self.in_features).contiguous()
        if flat.dtype != self.scales_and_zeros.dtype:
            flat = flat.to(self.scales_and_zeros.dtype)
        out = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, self.packed, self.group_size, self.scales_and_zeros)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*leading, self.out_features)

    def dequantized_weight(self) -> torch.Tensor:
        """The weight this layer multiplies by, as a dense matrix (for tests and inspection)."""
        eye = torch.eye(self.in_features, dtype=self.scales_and_zeros.dtype)
        columns = torch.ops.aten._weight_int4pack_mm_for_cpu(eye, self.packed, self.group_size, self.scales_and_zeros)
        return columns.T.contiguous()  # [out, in]

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, group_size={self.group_size}, bits=4"


def quantize_int4(model: nn.Module, group_size: int = GROUP_SIZE) -> int:
    """Replace the linear layers of ``model``'s blocks in place; returns how many were replaced.

    The LM head and the embeddings stay dense, as GPTQ/AWQ checkpoints and llama.cpp's quantized files
    keep them (the default model's GGUF stores its head in Q8_0, not Q4_1). Measured with SmolLM2-135M:
    an int4 head as well makes decoding ~20 % faster but turns "The capital of France is Paris." into a
    wrong answer; with a dense head, greedy answers to simple questions stay right.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) and child is not head and child.in_features % group_size == 0:
                setattr(parent, name, Int4WeightOnlyLinear(child, group_size))
                replaced += 1
    return replaced
