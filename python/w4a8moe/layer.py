"""layer.py — the Pythonic face of the C API: Layer (create / forward / free), explain, route,
and the Error every failing call raises.

Arrays are numpy arrays or torch tensors. A CPU layer takes host arrays; a CUDA layer takes
torch tensors on its device and runs on torch's current stream (or the stream given). Weights
are always read from host memory (the C API's rule): torch tensors on a GPU are copied back
first, once, at creation.
"""
import ctypes
import itertools
import threading
import weakref

from . import _arrays as A
from . import _lib
from .models import model_config


class Error(RuntimeError):
    """A w4a8moe call failed. .status is the C status number, .status_name its name
    ("INVALID_ARGUMENT"), .message the library's message (what, where, hint)."""

    def __init__(self, status, message):
        self.status = int(status)
        self.status_name = _lib.STATUS_NAMES.get(self.status, f"status {self.status}")
        self.message = message
        super().__init__(f"{self.status_name}: {message}")


def _raise_last(status, layer_handle=None):
    lib = _lib.load()
    if layer_handle:
        msg = lib.w4a8moe_layer_error(layer_handle)
    else:
        msg = lib.w4a8moe_last_error()
    msg = msg.decode("utf-8", "replace") if msg else ""
    if not msg:
        msg = lib.w4a8moe_status_str(status).decode()
    raise Error(status, msg)


def version():
    """The library's version string."""
    return _lib.load().w4a8moe_version().decode()


def _enum(table, value, what):
    if isinstance(value, int):
        return value
    try:
        return table[value]
    except KeyError:
        raise ValueError(f"{what} = {value!r}; expected one of {', '.join(table)}") from None


def _dtype_name(io_dtype):
    if not isinstance(io_dtype, str):  # a torch dtype or a numpy dtype
        io_dtype = str(io_dtype).replace("torch.", "")
    io_dtype = _lib.DTYPE_ALIASES.get(io_dtype, io_dtype)
    if io_dtype not in _lib.DTYPES:
        raise ValueError(f"io_dtype = {io_dtype!r}; expected bf16, f16 or f32")
    return io_dtype


def _make_desc(hidden, inter, experts, top_k, group_size=128, *, max_tokens=1024,
               io_dtype="bf16", activation="silu", act_scheme="fp8_token_dynamic",
               act_scale_in=0.0, act_scale_mid=0.0, routing="softmax_topk", renormalize=False,
               n_group=0, topk_group=0, routed_scaling_factor=1.0, score_bias=None,
               router_weight_on_input=False, ep_rank=0, ep_size=1):
    """A LayerDesc, and the objects it points into (keep them alive for the call)."""
    lib = _lib.load()
    d = _lib.LayerDesc()
    lib.w4a8moe_layer_desc_init_sized(ctypes.byref(d), ctypes.sizeof(d))
    d.max_tokens, d.hidden, d.inter = int(max_tokens), int(hidden), int(inter)
    d.num_experts, d.top_k, d.group_size = int(experts), int(top_k), int(group_size)
    d.activation = _enum(_lib.ACTIVATIONS, activation, "activation")
    if act_scheme in ("dynamic", "static"):
        act_scheme = {"dynamic": "fp8_token_dynamic", "static": "fp8_tensor_static"}[act_scheme]
    d.act_scheme = _enum(_lib.ACT_SCHEMES, act_scheme, "act_scheme")
    d.act_scale_in, d.act_scale_mid = float(act_scale_in or 0), float(act_scale_mid or 0)
    d.io_dtype = _lib.DTYPES[_dtype_name(io_dtype)]
    d.routing.kind = _enum(_lib.ROUTINGS, routing, "routing")
    d.routing.renormalize = int(bool(renormalize))
    d.routing.n_group, d.routing.topk_group = int(n_group), int(topk_group)
    d.routing.routed_scaling_factor = float(routed_scaling_factor)
    keep = []
    if score_bias is not None:
        bias = A.to_float32(A.to_host(score_bias), "score_bias")
        if A.shape(bias) != (int(experts),):
            raise ValueError(f"score_bias has shape {A.shape(bias)}; expected ({experts},)")
        keep.append(bias)
        d.routing.score_bias = ctypes.cast(A.pointer(bias), ctypes.POINTER(ctypes.c_float))
    d.router_weight_on_input = int(bool(router_weight_on_input))
    d.ep_rank, d.ep_size = int(ep_rank), int(ep_size)
    return d, keep


def _make_options(device="cpu", backend=None, num_threads=0, borrow_weights=False):
    o = _lib.LayerOptions()
    dev, ordinal = (device.split(":") + [None])[:2] if isinstance(device, str) else (device, None)
    if not isinstance(dev, str):  # a torch.device
        dev, ordinal = device.type, device.index
    o.device_kind = _enum(_lib.DEVICE_KINDS, dev, "device")
    o.device_ordinal = int(ordinal or 0)
    o.num_threads = int(num_threads)
    o.borrow_weights = int(bool(borrow_weights))
    o.backend = backend.encode() if backend else None
    return o


def _with_model(model, kw):
    if model is None:
        return kw
    merged = model_config(model)
    merged.update(kw)
    return merged


_DESC_KEYS = ("hidden", "inter", "experts", "top_k", "group_size", "max_tokens", "io_dtype",
              "activation", "act_scheme", "act_scale_in", "act_scale_mid", "routing",
              "renormalize", "n_group", "topk_group", "routed_scaling_factor", "score_bias",
              "router_weight_on_input", "ep_rank", "ep_size")
_OPT_KEYS = ("device", "backend", "num_threads", "borrow_weights")


def _split(kw):
    desc = {k: v for k, v in kw.items() if k in _DESC_KEYS}
    opts = {k: v for k, v in kw.items() if k in _OPT_KEYS}
    extra = set(kw) - set(desc) - set(opts)
    if extra:
        raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(extra))}")
    return desc, opts


def explain(model=None, **kw):
    """The oracle's report for a layer description: every backend, "selected" or the axis and
    reason that rejected it. Takes Layer's keyword arguments (weights not needed), or a built-in
    model name plus overrides: explain("qwen3-30b-a3b", device="cuda")."""
    lib = _lib.load()
    desc_kw, opt_kw = _split(_with_model(model, kw))
    d, keep = _make_desc(**desc_kw)
    o = _make_options(**opt_kw)
    needed = ctypes.c_size_t(0)
    cap = 4096
    while True:
        buf = ctypes.create_string_buffer(cap)
        st = lib.w4a8moe_explain(ctypes.byref(d), ctypes.byref(o), buf, cap, ctypes.byref(needed))
        if st != _lib.STATUS_OK:
            _raise_last(st)
        if needed.value <= cap:
            del keep
            return buf.value.decode("utf-8", "replace")
        cap = needed.value


def route(logits, top_k=None, model=None, **kw):
    """Runs the layer's router on the host: logits [T, E] (float) → (topk_ids int32 [T, k],
    topk_weights float32 [T, k]), arrays of the same kind and device as logits. Routing keyword
    arguments as for Layer (routing, renormalize, n_group, topk_group, routed_scaling_factor,
    score_bias), or a built-in model name."""
    lib = _lib.load()
    kw = _with_model(model, kw)
    if top_k is not None:
        kw["top_k"] = top_k
    if "top_k" not in kw:
        raise TypeError("route() needs top_k (or a model)")
    host = A.to_float32(A.to_host(logits), "logits")
    if len(A.shape(host)) != 2:
        raise ValueError(f"logits must be [T, E]; got shape {A.shape(host)}")
    T, E = A.shape(host)
    if kw.get("experts", E) != E:
        raise ValueError(f"logits have E = {E} columns but the layer has {kw['experts']} experts")
    # the router ignores the expert shapes, but the description must still be valid
    desc_kw = {k: v for k, v in kw.items() if k in _DESC_KEYS}
    desc_kw.update(experts=E, max_tokens=max(1, min(T, 1 << 24)))
    for k in ("hidden", "inter", "group_size"):
        desc_kw[k] = 128
    d, keep = _make_desc(**desc_kw)
    k = int(kw["top_k"])
    ids = A.empty_like_rows(host, T, k, "i32")
    wts = A.empty_like_rows(host, T, k, "f32")
    P = ctypes.POINTER
    st = lib.w4a8moe_route(ctypes.byref(d), T, ctypes.cast(A.pointer(host), P(ctypes.c_float)),
                           ctypes.cast(A.pointer(ids), P(ctypes.c_int32)),
                           ctypes.cast(A.pointer(wts), P(ctypes.c_float)))
    del keep
    if st != _lib.STATUS_OK:
        _raise_last(st)
    if A.is_torch(logits) and logits.device.type != "cpu":
        ids, wts = ids.to(logits.device), wts.to(logits.device)
    return ids, wts


# ---- weights ------------------------------------------------------------------------------------

_WEIGHT_KEYS = ("w13_packed", "w13_scale", "w2_packed", "w2_scale", "w13_channel_scale",
                "w2_channel_scale")


def _get(weights, key):
    if isinstance(weights, dict):
        return weights.get(key)
    return getattr(weights, key, None)


def _host_weight(x, key, shapes):
    """x on the host, contiguous, checked against the accepted shapes (None: unchecked)."""
    if x is None:
        return None
    x = A.contiguous(A.to_host(x))
    if shapes is not None and A.shape(x) not in shapes:
        want = " or ".join(str(list(s)) for s in shapes)
        raise ValueError(f"weights[{key!r}] has shape {list(A.shape(x))}; expected {want}")
    return x


def _check_int32(x, key):
    if A.is_torch(x):
        ok = x.dtype == A.torch().int32
    else:
        ok = x.dtype.name in ("int32", "uint32")
    if not ok:
        raise TypeError(f"weights[{key!r}] must be int32 (8 int4 nibbles per word), got {x.dtype}")


def _build_weights(weights, H, I, E, g):
    """A Weights struct over host copies of the stacked arrays, and the list to keep alive."""
    unknown = set(weights) - set(_WEIGHT_KEYS) if isinstance(weights, dict) else set()
    if unknown:
        raise TypeError(f"unknown weight key(s) {sorted(unknown)}; expected {_WEIGHT_KEYS}")
    # a description the library will reject anyway (g not dividing H, ...) is left to its
    # message, which says what is wrong better than a shape mismatch would
    dims_ok = min(H, I, E, g) > 0 and H % g == 0 and I % g == 0 and H % 8 == 0 and I % 8 == 0
    g = g if g > 0 else 1
    specs = {
        "w13_packed": ((E, 2 * I, H // 8), (E * 2 * I, H // 8)),
        "w13_scale": ((E, 2 * I, H // g), (E * 2 * I, H // g)),
        "w2_packed": ((E, H, I // 8), (E * H, I // 8)),
        "w2_scale": ((E, H, I // g), (E * H, I // g)),
        "w13_channel_scale": ((E, 2 * I), (E * 2 * I,)),
        "w2_channel_scale": ((E, H), (E * H,)),
    }
    arrs = {}
    for key, shapes in specs.items():
        x = _get(weights, key)
        if x is None and "channel" not in key:
            raise ValueError(f"weights[{key!r}] is missing")
        arrs[key] = _host_weight(x, key, shapes if dims_ok else None)
    _check_int32(arrs["w13_packed"], "w13_packed")
    _check_int32(arrs["w2_packed"], "w2_packed")
    sdt = A.float_dtype(arrs["w13_scale"])
    if sdt is None or sdt != A.float_dtype(arrs["w2_scale"]):
        raise TypeError(f"w13_scale ({arrs['w13_scale'].dtype}) and w2_scale "
                        f"({arrs['w2_scale'].dtype}) must share one of bf16 (torch.bfloat16 or "
                        "numpy uint16 bits), f16, f32")
    for key in ("w13_channel_scale", "w2_channel_scale"):
        if arrs[key] is not None:
            arrs[key] = A.to_float32(arrs[key], key)
    w = _lib.Weights()
    w.scale_dtype = _lib.DTYPES[sdt]
    P = ctypes.POINTER
    for mat, pre, rows, cols in ((w.w13_stacked, "w13", E * 2 * I, H),
                                 (w.w2_stacked, "w2", E * H, I)):
        mat.packed = ctypes.cast(A.pointer(arrs[pre + "_packed"]), P(ctypes.c_int32))
        mat.scale = A.pointer(arrs[pre + "_scale"])
        cs = arrs[pre + "_channel_scale"]
        if cs is not None:
            mat.channel_scale = ctypes.cast(A.pointer(cs), P(ctypes.c_float))
        mat.rows, mat.cols = rows, cols
    return w, [a for a in arrs.values() if a is not None]


# ---- the layer ----------------------------------------------------------------------------------

# Live layers by op handle: a torch custom op cannot take a Python object, so
# torch.ops.w4a8moe.layer_forward names its layer by this integer (w4a8moe/torch_ops.py). Handles
# are never reused, so a stale compiled graph finds no layer instead of another one; the table
# holds no reference, so it does not keep a layer alive.
_LIVE = weakref.WeakValueDictionary()
_OP_HANDLES = itertools.count(1)


def layer_from_op_handle(handle):
    """The live Layer whose op_handle is `handle`, or ValueError."""
    layer = _LIVE.get(int(handle))
    if layer is None or not layer._handle:
        raise ValueError(f"no live w4a8moe Layer has op_handle {handle} (closed or "
                         "garbage-collected: keep the Layer alive while a graph uses it)")
    return layer


class Layer:
    """One MoE layer: Layer(hidden=, inter=, experts=, top_k=, group_size=, weights=, ...).

    weights: a dict (or object with these attributes) of stacked arrays, numpy or torch:
      w13_packed int32 [E, 2I, H/8] (gate rows then up rows per expert), w13_scale [E, 2I, H/g],
      w2_packed int32 [E, H, I/8], w2_scale [E, H, I/g], optional w13_channel_scale f32 [E, 2I]
      and w2_channel_scale f32 [E, H]. Scales: torch.bfloat16 / numpy uint16 (bf16 bits),
      float16 or float32, the same for both.
    Other keywords: max_tokens (default 1024), io_dtype ("bf16", "f16", "f32" or a torch dtype),
      device ("cpu", "cuda", "cuda:1" or a torch.device), backend (force one by name),
      activation ("silu", "gelu_tanh"), act_scheme ("dynamic", "static" with act_scale_in /
      act_scale_mid), routing ("softmax_topk", "sigmoid_grouped_topk", "sigmoid_top1") with
      renormalize, n_group, topk_group, routed_scaling_factor, score_bias, and
      router_weight_on_input, ep_rank, ep_size, num_threads, borrow_weights (CPU: keep pointers
      into the weights instead of copying; the Layer then holds them alive), model (a built-in
      name supplying the shape and routing; keywords override it).
    """

    _handle = None

    def __init__(self, hidden=None, inter=None, experts=None, top_k=None, group_size=None,
                 weights=None, *, model=None, **kw):
        given = dict(hidden=hidden, inter=inter, experts=experts, top_k=top_k,
                     group_size=group_size)
        kw.update({k: v for k, v in given.items() if v is not None})
        kw = _with_model(model, kw)
        for k in ("hidden", "inter", "experts", "top_k"):
            if kw.get(k) is None:
                raise TypeError(f"Layer() needs {k} (or a model)")
        kw.setdefault("group_size", 128)
        if weights is None:
            raise TypeError("Layer() needs weights (see help(w4a8moe.Layer))")
        desc_kw, opt_kw = _split(kw)
        lib = _lib.load()
        d, keep = _make_desc(**desc_kw)
        o = _make_options(**opt_kw)
        w, arrays = _build_weights(weights, int(kw["hidden"]), int(kw["inter"]),
                                   int(kw["experts"]), int(kw["group_size"]))
        handle = ctypes.c_void_p()
        st = lib.w4a8moe_layer_create(ctypes.byref(d), ctypes.byref(w), ctypes.byref(o),
                                      ctypes.byref(handle))
        del keep
        if st != _lib.STATUS_OK:
            _raise_last(st)
        # the C layer may keep pointers into the host weights when it borrows them
        self._adopt(handle, d, o, arrays if o.borrow_weights else None)

    @classmethod
    def _from_handle(cls, handle, d, o, keep=None):
        """A Layer around a C layer made elsewhere (a checkpoint), described by d and o."""
        self = cls.__new__(cls)
        self._adopt(handle, d, o, keep)
        return self

    def _adopt(self, handle, d, o, keep):
        self._handle, self._lib, self._borrowed = handle, _lib.load(), keep
        # One C layer owns one workspace and must not run two forwards at once (the header's
        # thread-safety rule); ctypes drops the GIL during the call, so this lock is what keeps
        # two Python threads (or a torch op run from two threads) apart. CUDA: it orders the
        # enqueues; forwards queued on two streams must still be ordered by the caller.
        self._lock = threading.Lock()
        self.op_handle = next(_OP_HANDLES)  # the torch op's name for this layer
        _LIVE[self.op_handle] = self
        self.hidden, self.inter = int(d.hidden), int(d.inter)
        self.experts, self.top_k = int(d.num_experts), int(d.top_k)
        self.group_size = int(d.group_size)
        self.io_dtype = {v: k for k, v in _lib.DTYPES.items()}[d.io_dtype]
        self.max_tokens = int(d.max_tokens)
        self.device = "cuda" if o.device_kind == _lib.DEVICE_KINDS["cuda"] else "cpu"
        self.device_ordinal = int(o.device_ordinal)

    # -- properties --
    @property
    def backend(self):
        """The experts backend the oracle chose ("cpu_ref", "cuda_sm89", ...)."""
        return self._lib.w4a8moe_layer_backend(self._live()).decode()

    @property
    def prepfin(self):
        """The prepare/finalize stage ("local", ...)."""
        return self._lib.w4a8moe_layer_prepfin(self._live()).decode()

    @property
    def shared_backend(self):
        """The experts backend of the shared expert's pipeline, "" when there is none."""
        if not hasattr(self._lib, "w4a8moe_layer_shared_backend"):
            return ""
        return self._lib.w4a8moe_layer_shared_backend(self._live()).decode()

    def _live(self):
        if not self._handle:
            raise ValueError("this Layer has been closed")
        return self._handle

    # -- forward --
    def _check_device(self, arr, what):
        dev, ordinal = A.device(arr)
        if dev != self.device or (dev == "cuda" and ordinal != self.device_ordinal):
            where = self.device if self.device == "cpu" else f"cuda:{self.device_ordinal}"
            got = dev if ordinal is None else f"{dev}:{ordinal}"
            raise ValueError(f"{what} is on {got} but the layer runs on {where}")

    def _routing(self, T, topk_ids, topk_weights, router_logits):
        """A RoutingInput and the (converted) arrays it points into."""
        P, r, keep = ctypes.POINTER, _lib.RoutingInput(), []
        k, E = self.top_k, self.experts
        if topk_ids is not None or topk_weights is not None:
            if topk_ids is None or topk_weights is None:
                raise ValueError("give both topk_ids and topk_weights (or router_logits)")
            ids = A.to_int32(topk_ids, "topk_ids")
            wts = A.to_float32(topk_weights, "topk_weights")
            for name, arr in (("topk_ids", ids), ("topk_weights", wts)):
                if A.shape(arr) != (T, k):
                    raise ValueError(f"{name} has shape {list(A.shape(arr))}; expected [{T}, {k}]")
                self._check_device(arr, name)
            r.topk_ids = ctypes.cast(A.pointer(ids), P(ctypes.c_int32))
            r.topk_weights = ctypes.cast(A.pointer(wts), P(ctypes.c_float))
            keep += [ids, wts]
        elif router_logits is not None:
            logits = A.to_float32(router_logits, "router_logits")
            if A.shape(logits) != (T, E):
                raise ValueError(f"router_logits has shape {list(A.shape(logits))}; "
                                 f"expected [{T}, {E}]")
            self._check_device(logits, "router_logits")
            r.router_logits = ctypes.cast(A.pointer(logits), P(ctypes.c_float))
            keep.append(logits)
        else:
            raise ValueError("forward needs topk_ids and topk_weights, or router_logits")
        return r, keep

    def forward(self, x, topk_ids=None, topk_weights=None, router_logits=None, out=None,
                stream=None):
        """out[T, H] = MoE(x[T, H]). x and out in the layer's io_dtype (numpy bf16 = uint16
        bits), on the layer's device; topk_ids [T, k] (ints), topk_weights [T, k] (floats), or
        router_logits [T, E]. CUDA: runs on `stream` (a torch.cuda.Stream or a raw handle), by
        default torch's current stream. Returns out (allocated when not given)."""
        self._live()
        A.kind(x)
        if self.device == "cuda" and A.is_torch(x) and x.device.type == "cuda":
            t = A.torch()
            if stream is None:
                ts = t.cuda.current_stream(x.device)
            elif isinstance(stream, t.cuda.Stream):
                ts = stream
            else:
                ts = t.cuda.ExternalStream(int(stream), device=x.device)
            # every temporary (converted ids, out) is made on the stream the kernels use
            with t.cuda.stream(ts):
                return self._forward(x, topk_ids, topk_weights, router_logits, out,
                                     int(ts.cuda_stream))
        return self._forward(x, topk_ids, topk_weights, router_logits, out, None)

    __call__ = forward

    def check(self, stream=None):
        """Raises Error (INVALID_ARGUMENT, naming the token) when an earlier forward on a CUDA
        layer was given bad topk_ids (outside [-1, E) or repeated in a token: the device ran
        them as -1). Waits for the work queued on `stream` (a torch.cuda.Stream or a raw
        handle; default: torch's current stream). CPU layers refuse bad ids in forward, so
        this never raises for them. See w4a8moe_layer_check in include/w4a8moe.h."""
        self._live()
        if not hasattr(self._lib, "w4a8moe_layer_check"):
            return
        handle = None
        if self.device == "cuda":
            if stream is not None and not isinstance(stream, int):
                handle = int(stream.cuda_stream)
            elif stream is not None:
                handle = stream
            elif A.torch() is not None:
                handle = int(A.torch().cuda.current_stream(self.device_ordinal).cuda_stream)
        with self._lock:  # the layer's error word and message are the workspace's too
            st = self._lib.w4a8moe_layer_check(self._live(), handle or None)
            if st != _lib.STATUS_OK:
                _raise_last(st, self._handle)

    def _forward(self, x, topk_ids, topk_weights, router_logits, out, stream):
        shp = A.shape(x)
        if len(shp) != 2 or shp[1] != self.hidden:
            raise ValueError(f"x has shape {list(shp)}; expected [T, H = {self.hidden}]")
        if A.float_dtype(x) != self.io_dtype:
            raise TypeError(f"x is {x.dtype} but the layer's io_dtype is {self.io_dtype} "
                            "(numpy: bf16 is uint16 bits, see w4a8moe.f32_to_bf16)")
        self._check_device(x, "x")
        T = shp[0]
        x = A.contiguous(x)
        if out is None:
            out = A.empty_like_rows(x, T, self.hidden, self.io_dtype)
        else:
            if A.shape(out) != (T, self.hidden) or A.float_dtype(out) != self.io_dtype:
                raise ValueError(f"out must be [{T}, {self.hidden}] {self.io_dtype}; got "
                                 f"{list(A.shape(out))} {out.dtype}")
            if not A.is_contiguous(out):
                raise ValueError("out must be contiguous")
            self._check_device(out, "out")
        r, keep = self._routing(T, topk_ids, topk_weights, router_logits)
        with self._lock:
            handle = self._live()  # closed by another thread while this one waited
            st = self._lib.w4a8moe_layer_forward(handle, T, A.pointer(x), ctypes.byref(r),
                                                 A.pointer(out), stream or None)
            if st != _lib.STATUS_OK:  # the layer's message is read before another call
                _raise_last(st, handle)  # replaces it
        del keep  # host: the call is done; CUDA: the allocator orders reuse on this stream
        return out

    # -- lifetime --
    def close(self):
        """Frees the C layer now (also done when the Layer is garbage-collected); waits for a
        forward running in another thread."""
        lock = getattr(self, "_lock", None)  # absent when __init__ failed before _adopt
        if lock is None:
            return
        with lock:
            if self._handle:
                _LIVE.pop(self.op_handle, None)
                self._lib.w4a8moe_layer_free(self._handle)
                self._handle = None
                self._borrowed = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the library may already be gone
            pass

    def __repr__(self):
        state = f"backend={self.backend!r}" if self._handle else "closed"
        return (f"Layer(H={self.hidden}, I={self.inter}, E={self.experts}, k={self.top_k}, "
                f"g={self.group_size}, io={self.io_dtype}, device={self.device!r}, {state})")
