"""checkpoint.py — Hugging Face W4A8 checkpoints on disk through the library's checkpoint API
(API version 2; docs/formats.md): what a checkpoint holds, MoE layers made from it (their shared
expert included), the router's logits from its gate weights, and a whole-file check.

    ck = w4a8moe.Checkpoint("path/to/checkpoint")
    layer = ck.layer(ck.info["moe_layers"][0], max_tokens=64)
    out = layer.forward(x, router_logits=ck.router_logits(1, x))
"""
import ctypes

from . import _arrays as A
from . import _lib
from .layer import Layer, _make_options, _raise_last

_ENUM_NAMES = {
    "weight_scheme": _lib.WEIGHT_SCHEMES,
    "act_scheme": _lib.ACT_SCHEMES,
    "activation": _lib.ACTIVATIONS,
}


def _need(lib, name):
    if not hasattr(lib, name):
        raise NotImplementedError(f"this libw4a8moe has no {name} (checkpoint API version 2); "
                                  "hint: rebuild the library")


class Checkpoint:
    """An opened checkpoint directory (config.json + safetensors). Layers made from it stay
    valid after close()."""

    _handle = None

    def __init__(self, path):
        lib = _lib.load()
        _need(lib, "w4a8moe_checkpoint_open")
        h = ctypes.c_void_p()
        st = lib.w4a8moe_checkpoint_open(str(path).encode(), ctypes.byref(h))
        if st != _lib.STATUS_OK:
            _raise_last(st)
        self._handle, self._lib, self.path = h, lib, str(path)

    def _live(self):
        if not self._handle:
            raise ValueError("this Checkpoint has been closed")
        return self._handle

    @property
    def info(self):
        """What the checkpoint holds, as a dict (architecture, format, quant_method, schemes,
        layer counts and MoE layer indices, H, I, E, k, g, activation, routing, shared expert)."""
        i = _lib.CheckpointInfo()
        st = self._lib.w4a8moe_checkpoint_get_info_sized(self._live(), ctypes.byref(i),
                                                         ctypes.sizeof(i))
        if st != _lib.STATUS_OK:
            _raise_last(st)
        out = {}
        for name, _t in _lib.CheckpointInfo._fields_:
            if name == "struct_size":
                continue
            v = getattr(i, name)
            if isinstance(v, bytes):
                v = v.decode()
            elif name in _ENUM_NAMES:
                v = {n: k for k, n in _ENUM_NAMES[name].items()}.get(v, v)
            elif name == "routing":
                v = {"routing": {n: k for k, n in _lib.ROUTINGS.items()}.get(v.kind, v.kind),
                     "renormalize": bool(v.renormalize), "n_group": v.n_group,
                     "topk_group": v.topk_group,
                     "routed_scaling_factor": v.routed_scaling_factor}
            elif name == "moe_layers":
                v = [v[j] for j in range(i.num_moe_layers)] if v else []
            out[name] = v
        return out

    def layer_desc(self, layer, max_tokens=1024):
        """The C layer description of MoE layer `layer` (a _lib.LayerDesc; score_bias points
        into this checkpoint)."""
        _need(self._lib, "w4a8moe_checkpoint_layer_desc_sized")
        d = _lib.LayerDesc()
        st = self._lib.w4a8moe_checkpoint_layer_desc_sized(self._live(), int(layer),
                                                           int(max_tokens), ctypes.byref(d),
                                                           ctypes.sizeof(d))
        if st != _lib.STATUS_OK:
            _raise_last(st)
        return d

    def layer(self, layer, *, max_tokens=1024, io_dtype=None, device="cpu", backend=None,
              num_threads=0, experts=None, routed_only=None):
        """A Layer from decoder layer `layer` (an MoE layer), shared expert included unless
        routed_only. experts: the global ids to load (all, or one expert-parallel rank's
        contiguous block). io_dtype: bf16 (the checkpoint's default), f16 or f32."""
        lib = self._lib
        h = self._live()
        if routed_only is not None:
            _need(lib, "w4a8moe_checkpoint_set_routed_only")
            lib.w4a8moe_checkpoint_set_routed_only(h, int(bool(routed_only)))
        d = self.layer_desc(layer, max_tokens)
        if io_dtype is not None:
            from .layer import _dtype_name
            d.io_dtype = _lib.DTYPES[_dtype_name(io_dtype)]
        o = _make_options(device=device, backend=backend, num_threads=num_threads)
        subset, n = None, 0
        if experts is not None:
            ids = (ctypes.c_int32 * len(experts))(*[int(e) for e in experts])
            subset, n = ctypes.cast(ids, ctypes.POINTER(ctypes.c_int32)), len(experts)
        out = ctypes.c_void_p()
        if hasattr(lib, "w4a8moe_checkpoint_layer_create_desc"):
            st = lib.w4a8moe_checkpoint_layer_create_desc(h, int(layer), ctypes.byref(d),
                                                          ctypes.byref(o), subset, n,
                                                          ctypes.byref(out))
        else:
            if io_dtype is not None and d.io_dtype != _lib.DTYPE_BF16:
                raise NotImplementedError("this library creates checkpoint layers in bf16 only")
            st = lib.w4a8moe_checkpoint_layer_create(h, int(layer), ctypes.byref(o), subset, n,
                                                     int(max_tokens), ctypes.byref(out))
        if st != _lib.STATUS_OK:
            _raise_last(st)
        return Layer._from_handle(out, d, o)

    def router_logits(self, layer, x):
        """logits f32 [T, E] = x . Wg^T of decoder layer `layer`, on the host; x [T, H] is a
        numpy array (bf16 as uint16 bits, f16, f32) or a torch tensor (copied to the host)."""
        _need(self._lib, "w4a8moe_checkpoint_router_logits")
        xh = A.contiguous(A.to_host(x))
        dt = A.float_dtype(xh)
        if dt is None or len(A.shape(xh)) != 2:
            raise TypeError(f"x must be a [T, H] bf16/f16/f32 array, got {A.shape(xh)} {xh.dtype}")
        T = A.shape(xh)[0]
        E = self.info["num_experts"]
        logits = A.empty_like_rows(xh, T, E, "f32")
        st = self._lib.w4a8moe_checkpoint_router_logits(
            self._live(), int(layer), T, A.pointer(xh), _lib.DTYPES[dt],
            ctypes.cast(A.pointer(logits), ctypes.POINTER(ctypes.c_float)))
        if st != _lib.STATUS_OK:
            _raise_last(st)
        return logits

    def check(self):
        """Every MoE layer's tensors checked; the list of problems, one line each ([] if none)."""
        _need(self._lib, "w4a8moe_checkpoint_check")
        needed = ctypes.c_size_t(0)
        cap = 1 << 16
        while True:
            buf = ctypes.create_string_buffer(cap)
            self._lib.w4a8moe_checkpoint_check(self._live(), buf, cap, ctypes.byref(needed))
            if needed.value <= cap:
                text = buf.value.decode("utf-8", "replace")
                return [ln for ln in text.splitlines() if ln.strip()]
            cap = needed.value

    def close(self):
        if self._handle:
            self._lib.w4a8moe_checkpoint_close(self._handle)
            self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass
