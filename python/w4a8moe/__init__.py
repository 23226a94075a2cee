"""w4a8moe — Python binding of the w4a8moe C library (ctypes, no compiled extension).

    import numpy as np, w4a8moe
    layer = w4a8moe.Layer(model="qwen3-30b-a3b", weights=weights, max_tokens=256)
    out = layer.forward(x, topk_ids=ids, topk_weights=wts)       # or router_logits=logits
    print(layer.backend, w4a8moe.explain("qwen3-30b-a3b", device="cuda"))
    ck = w4a8moe.Checkpoint("dir")           # a Hugging Face W4A8 checkpoint on disk
    layer = ck.layer(1); out = layer.forward(x, router_logits=ck.router_logits(1, x))

Arrays are numpy arrays (CPU layers; bf16 as uint16 bits) or torch tensors (CPU or CUDA; CUDA
layers run on torch's current stream). Failures raise w4a8moe.Error(status, message).
The shared library is found through $W4A8MOE_LIB, then the repository's build/, then the
system. With torch, w4a8moe.torch_ops registers the custom op torch.ops.w4a8moe.layer_forward
(torch.compile, CUDA graphs). See docs/python.md.
"""
import sys

from ._lib import STRUCTS, candidate_paths, lib_path
from .checkpoint import Checkpoint
from .layer import Error, Layer, explain, route, version
from .models import MODELS, model_config
from .quant import (bf16_to_f32, dequantize_int4, f32_to_bf16, f32_to_io, io_to_f32, pack_int4,
                    pack_int4_torch, quantize_int4, quantize_int4_torch, round_bf16, round_e4m3,
                    unpack_int4)

__all__ = [
    "Error", "Layer", "Checkpoint", "explain", "route", "version", "MODELS", "model_config",
    "lib_path",
    "candidate_paths", "STRUCTS", "bf16_to_f32", "f32_to_bf16", "round_bf16", "round_e4m3",
    "io_to_f32", "f32_to_io", "pack_int4", "unpack_int4", "quantize_int4", "dequantize_int4",
    "pack_int4_torch", "quantize_int4_torch",
]


def __getattr__(name):
    """w4a8moe.torch_ops on first use: torch is imported only by a caller that asks for it."""
    if name == "torch_ops":
        import importlib
        return importlib.import_module(".torch_ops", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# torch already imported by the caller: register torch.ops.w4a8moe.* now, so graphs that name
# the op work without an extra import (a torch too old for custom ops only loses the op)
if sys.modules.get("torch") is not None:
    try:
        from . import torch_ops  # noqa: F401
    except ImportError:
        pass
