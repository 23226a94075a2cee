"""_arrays.py — what the binding needs to know about a caller's array, whether it is a numpy
array or a torch tensor: its element type as a w4a8moe dtype, its device, a raw pointer, and
contiguous (possibly converted) versions of it. Neither numpy nor torch is imported here unless
the caller already uses it, so the package imports on a bare python3.

bf16 in numpy has no native dtype: the binding reads uint16 arrays as bf16 bit patterns
(ml_dtypes' "bfloat16" dtype is accepted too). f16 is numpy's float16.
"""
import sys

from . import _lib


def numpy():
    """numpy, or None when it is not installed."""
    try:
        import numpy as np  # noqa: WPS433 (lazy on purpose)
    except ImportError:
        return None
    return np


def torch():
    """torch if the caller's process already imported it (we never import it ourselves)."""
    return sys.modules.get("torch")


def is_torch(x):
    t = torch()
    return t is not None and isinstance(x, t.Tensor)


def is_numpy(x):
    np = numpy()
    return np is not None and isinstance(x, np.ndarray)


def kind(x):
    if is_torch(x):
        return "torch"
    if is_numpy(x):
        return "numpy"
    raise TypeError(f"expected a numpy array or a torch tensor, got {type(x).__name__}")


def device(x):
    """('cpu', None) or ('cuda', ordinal)."""
    if is_torch(x):
        d = x.device
        if d.type == "cuda":
            return "cuda", d.index if d.index is not None else torch().cuda.current_device()
        return d.type, None
    return "cpu", None


def float_dtype(x):
    """The w4a8moe dtype name of a floating array ('bf16', 'f16', 'f32'), or None."""
    if is_torch(x):
        t = torch()
        return {t.bfloat16: "bf16", t.float16: "f16", t.float32: "f32"}.get(x.dtype)
    name = x.dtype.name
    return {"uint16": "bf16", "bfloat16": "bf16", "float16": "f16", "float32": "f32"}.get(name)


def pointer(x):
    """The address of x's first element (x must be contiguous)."""
    if is_torch(x):
        return x.data_ptr()
    return x.ctypes.data


def shape(x):
    return tuple(int(s) for s in x.shape)


def contiguous(x):
    if is_torch(x):
        return x.contiguous()
    return numpy().ascontiguousarray(x)


def is_contiguous(x):
    if is_torch(x):
        return x.is_contiguous()
    return bool(x.flags["C_CONTIGUOUS"])


def to_int32(x, what):
    """x as a contiguous int32 array on its own device (a copy when it is another int type)."""
    if is_torch(x):
        t = torch()
        if x.dtype not in (t.int32, t.int64, t.int16, t.int8, t.uint8):
            raise TypeError(f"{what}: expected an integer tensor, got {x.dtype}")
        return x.to(t.int32).contiguous()
    np = numpy()
    if x.dtype.kind not in "iu":
        raise TypeError(f"{what}: expected an integer array, got {x.dtype}")
    return np.ascontiguousarray(x, dtype=np.int32)


def to_float32(x, what):
    """x as a contiguous float32 array on its own device (converted from any float type)."""
    if is_torch(x):
        t = torch()
        if not x.is_floating_point():
            raise TypeError(f"{what}: expected a floating tensor, got {x.dtype}")
        return x.to(t.float32).contiguous()
    np = numpy()
    if x.dtype.kind != "f":
        raise TypeError(f"{what}: expected a floating array, got {x.dtype} "
                        "(hint: uint16 means bf16 bits only for x/out and scales)")
    return np.ascontiguousarray(x, dtype=np.float32)


def to_host(x):
    """A host (CPU) version of x: torch tensors on a GPU are copied back."""
    if is_torch(x) and x.device.type != "cpu":
        return x.cpu()
    return x


def empty_like_rows(x, rows, cols, dtype_name):
    """A new [rows, cols] array of dtype_name (bf16, f16, f32, i32), of x's kind (numpy or
    torch) and on x's device."""
    if is_torch(x):
        t = torch()
        tdt = {"bf16": t.bfloat16, "f16": t.float16, "f32": t.float32, "i32": t.int32}[dtype_name]
        return t.empty((rows, cols), dtype=tdt, device=x.device)
    np = numpy()
    ndt = {"bf16": np.uint16, "f16": np.float16, "f32": np.float32, "i32": np.int32}[dtype_name]
    return np.empty((rows, cols), dtype=ndt)


def current_stream(x):
    """torch's current CUDA stream for x's device as an integer handle (0 = default stream)."""
    t = torch()
    return int(t.cuda.current_stream(x.device).cuda_stream)


def dtype_code(name):
    return _lib.DTYPES[name]
