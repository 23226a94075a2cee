"""torch_ops.py — the binding as a torch custom op, torch.ops.w4a8moe.layer_forward, so that a
Layer runs inside torch.compile(fullgraph=True) graphs and CUDA-graph capture.

    import torch, w4a8moe.torch_ops                      # registers torch.ops.w4a8moe.*
    out = torch.ops.w4a8moe.layer_forward(layer.op_handle, x, ids, wts)      # or:
    out = w4a8moe.torch_ops.forward(layer, x, router_logits=logits)

layer_forward(handle, x [T, H], topk_ids [T, k]?, topk_weights [T, k]?, router_logits [T, E]?)
-> out [T, H], a new tensor in x's dtype on x's device. The layer is named by its integer
`op_handle` (a custom op cannot take a Python object; layer.py keeps the table of live layers).

The real implementation is Layer.forward on the tensors' data pointers: a CPU layer takes CPU
tensors, a CUDA layer CUDA tensors and runs on torch's current stream (during capture, the
capture stream). Ids of any integer type (int64 from torch.topk) are converted to int32 on their
own device and weights / logits to float32 there, so nothing goes back to the host; logits on
the GPU are routed there by the library's device router. Layer.forward holds the layer's lock,
so two threads never share its workspace. The fake implementation gives [T, H] in x's dtype and
checks what it can at trace time. Inference only: the op has no autograd formula.

Needs torch >= 2.4 (torch.library.custom_op). w4a8moe imports this module only when torch is
there: at `import w4a8moe` when torch was imported first, else on `import w4a8moe.torch_ops` or
the first use of `w4a8moe.torch_ops`.
"""
from typing import Optional

try:
    import torch
except ModuleNotFoundError as e:
    raise ModuleNotFoundError("w4a8moe.torch_ops needs torch (pip install torch, or "
                              "w4a8moe[torch]); the rest of w4a8moe works without it",
                              name=e.name) from e

from .layer import Layer, layer_from_op_handle

if not hasattr(torch.library, "custom_op"):
    raise ImportError(f"w4a8moe.torch_ops needs torch >= 2.4 (torch.library.custom_op); this is "
                      f"torch {torch.__version__}")

__all__ = ["forward", "layer_forward", "layer_from_op_handle"]


@torch.library.custom_op("w4a8moe::layer_forward", mutates_args=())
def layer_forward(handle: int, x: torch.Tensor, topk_ids: Optional[torch.Tensor] = None,
                  topk_weights: Optional[torch.Tensor] = None,
                  router_logits: Optional[torch.Tensor] = None) -> torch.Tensor:
    """out[T, H] = MoE(x[T, H]) by the Layer whose op_handle is `handle`: routed by topk_ids and
    topk_weights [T, k], or by the layer's router on router_logits [T, E]."""
    return layer_from_op_handle(handle).forward(x, topk_ids, topk_weights, router_logits)


@layer_forward.register_fake
def _layer_forward_fake(handle, x, topk_ids=None, topk_weights=None, router_logits=None):
    if x.dim() != 2:
        raise ValueError(f"w4a8moe.layer_forward: x has shape {list(x.shape)}; expected [T, H]")
    # The handle is a plain int unless dynamo made it symbolic (one function traced for several
    # layers); then the layer is only known when the graph runs, and the real op checks.
    if isinstance(handle, int):
        layer = layer_from_op_handle(handle)
        io = {torch.bfloat16: "bf16", torch.float16: "f16", torch.float32: "f32"}.get(x.dtype)
        if io != layer.io_dtype:
            raise TypeError(f"w4a8moe.layer_forward: x is {x.dtype} but the layer's io_dtype "
                            f"is {layer.io_dtype}")
        # a symbolic H compares as a guard on its value, which is what the graph needs anyway
        if x.shape[1] != layer.hidden:
            raise ValueError(f"w4a8moe.layer_forward: x has shape {list(x.shape)}; expected "
                             f"[T, H = {layer.hidden}]")
    return x.new_empty(x.shape)  # contiguous, as the real op's out


def forward(layer: Layer, x, topk_ids=None, topk_weights=None, router_logits=None):
    """torch.ops.w4a8moe.layer_forward(layer.op_handle, ...): Layer.forward as one graph node
    (no out= here: a custom op returns a new tensor; compiled graphs reuse its memory)."""
    return torch.ops.w4a8moe.layer_forward(layer.op_handle, x, topk_ids, topk_weights,
                                           router_logits)
