"""_lib.py — the ctypes face of libw4a8moe.so: finding and loading the shared library, the
enums, the C structs of include/w4a8moe.h mirrored member for member, and the prototypes.

The structs must match the header EXACTLY (order, types, padding): python/tests/test_abi.py
checks every member's offset and every struct's size against a C program compiled from the
header, and checks that no member of the header is missing here. New members are only ever
appended to the C structs (the header's ABI rule), so keeping up means appending here too.

Library search order: $W4A8MOE_LIB, then libw4a8moe.so inside this package (what `pip install .`
puts there), then ../../build/libw4a8moe.so relative to this package (the repository's default
build), then the system's libw4a8moe.so(.1).
"""
import ctypes
import ctypes.util
import os

# ---- enums (numbers are stable in the C header) ------------------------------------------------

STATUS_NAMES = {
    0: "OK",
    1: "INVALID_ARGUMENT",
    2: "UNSUPPORTED",
    3: "OUT_OF_MEMORY",
    4: "IO_ERROR",
    5: "FORMAT_ERROR",
    6: "NOT_FOUND",
    7: "DEVICE_ERROR",
    8: "INTERNAL",
}
STATUS_OK = 0
STATUS_INVALID_ARGUMENT = 1
STATUS_UNSUPPORTED = 2

DTYPE_BF16, DTYPE_F16, DTYPE_F32 = 0, 1, 2
DTYPES = {"bf16": DTYPE_BF16, "f16": DTYPE_F16, "f32": DTYPE_F32}
DTYPE_ALIASES = {"bfloat16": "bf16", "float16": "f16", "half": "f16", "float32": "f32",
                 "float": "f32"}

ACTIVATIONS = {"silu": 0, "gelu_tanh": 1}
WEIGHT_SCHEMES = {"int4_group": 0, "bf16": 1}
ACT_SCHEMES = {"fp8_token_dynamic": 0, "fp8_tensor_static": 1, "bf16": 2}
ROUTINGS = {"softmax_topk": 0, "sigmoid_grouped_topk": 1, "sigmoid_top1": 2}
DEVICE_KINDS = {"cpu": 0, "cuda": 1}

# ---- structs ------------------------------------------------------------------------------------
# C enums are int-sized on every ABI we target (the header's values are small and non-negative).
c_enum = ctypes.c_int


class Sized(ctypes.Structure):
    """A growable struct of the header: its first member, struct_size, is set to this mirror's
    sizeof at construction, so a library newer than this binding reads only what the binding
    knows, and an older one refuses members it does not know that are set (header: "ABI")."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.struct_size = ctypes.sizeof(self)


class RoutingDesc(ctypes.Structure):
    """w4a8moe_routing_desc"""
    _fields_ = [
        ("kind", c_enum),
        ("renormalize", ctypes.c_int32),
        ("n_group", ctypes.c_int32),
        ("topk_group", ctypes.c_int32),
        ("routed_scaling_factor", ctypes.c_float),
        ("score_bias", ctypes.POINTER(ctypes.c_float)),
    ]


class LayerDesc(Sized):
    """w4a8moe_layer_desc"""
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("max_tokens", ctypes.c_int64),
        ("hidden", ctypes.c_int64),
        ("inter", ctypes.c_int64),
        ("num_experts", ctypes.c_int32),
        ("top_k", ctypes.c_int32),
        ("group_size", ctypes.c_int32),
        ("activation", c_enum),
        ("weight_scheme", c_enum),
        ("act_scheme", c_enum),
        ("act_scale_in", ctypes.c_float),
        ("act_scale_mid", ctypes.c_float),
        ("io_dtype", c_enum),
        ("routing", RoutingDesc),
        ("router_weight_on_input", ctypes.c_int32),
        ("ep_rank", ctypes.c_int32),
        ("ep_size", ctypes.c_int32),
    ]


class Int4Matrix(ctypes.Structure):
    """w4a8moe_int4_matrix"""
    _fields_ = [
        ("packed", ctypes.POINTER(ctypes.c_int32)),
        ("scale", ctypes.c_void_p),
        ("channel_scale", ctypes.POINTER(ctypes.c_float)),
        ("rows", ctypes.c_int64),
        ("cols", ctypes.c_int64),
    ]


class ExpertWeights(ctypes.Structure):
    """w4a8moe_expert_weights"""
    _fields_ = [
        ("gate", Int4Matrix),
        ("up", Int4Matrix),
        ("down", Int4Matrix),
    ]


class DenseMatrix(ctypes.Structure):
    """w4a8moe_dense_matrix"""
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("dtype", c_enum),
        ("rows", ctypes.c_int64),
        ("cols", ctypes.c_int64),
    ]


class SharedExpert(Sized):
    """w4a8moe_shared_expert"""
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("inter", ctypes.c_int64),
        ("weight_scheme", c_enum),
        ("act_scheme", c_enum),
        ("group_size", ctypes.c_int32),
        ("act_scale_in", ctypes.c_float),
        ("act_scale_mid", ctypes.c_float),
        ("scale_dtype", c_enum),
        ("int4", ExpertWeights),
        ("gate", DenseMatrix),
        ("up", DenseMatrix),
        ("down", DenseMatrix),
        ("gate_weight", ctypes.c_void_p),
        ("gate_weight_dtype", c_enum),
    ]


class Weights(Sized):
    """w4a8moe_weights"""
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("scale_dtype", c_enum),
        ("experts", ctypes.POINTER(ExpertWeights)),
        ("w13_stacked", Int4Matrix),
        ("w2_stacked", Int4Matrix),
        ("shared", ctypes.POINTER(SharedExpert)),  # API version 2
    ]


class LayerOptions(Sized):
    """w4a8moe_layer_options"""
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("backend", ctypes.c_char_p),
        ("device_kind", c_enum),
        ("device_ordinal", ctypes.c_int32),
        ("num_threads", ctypes.c_int32),
        ("borrow_weights", ctypes.c_int32),
        ("workspace", ctypes.c_void_p),  # API 4: a w4a8moe_workspace (not wrapped yet), NULL
    ]


class RoutingInput(Sized):
    """w4a8moe_routing_input"""
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("topk_ids", ctypes.POINTER(ctypes.c_int32)),
        ("topk_weights", ctypes.POINTER(ctypes.c_float)),
        ("router_logits", ctypes.POINTER(ctypes.c_float)),
    ]


class CheckpointInfo(Sized):
    """w4a8moe_checkpoint_info (API version 2)"""
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("architecture", ctypes.c_char_p),
        ("format", ctypes.c_char_p),
        ("quant_method", ctypes.c_char_p),
        ("weight_scheme", c_enum),
        ("act_scheme", c_enum),
        ("num_layers", ctypes.c_int32),
        ("num_moe_layers", ctypes.c_int32),
        ("moe_layers", ctypes.POINTER(ctypes.c_int32)),
        ("hidden", ctypes.c_int64),
        ("inter", ctypes.c_int64),
        ("num_experts", ctypes.c_int32),
        ("top_k", ctypes.c_int32),
        ("group_size", ctypes.c_int32),
        ("activation", c_enum),
        ("routing", RoutingDesc),
        ("router_weight_on_input", ctypes.c_int32),
        ("has_shared_expert", ctypes.c_int32),
        ("shared_inter", ctypes.c_int64),
        ("shared_gated", ctypes.c_int32),
    ]


# C struct name -> ctypes class; the ABI test walks this table.
STRUCTS = {
    "w4a8moe_routing_desc": RoutingDesc,
    "w4a8moe_layer_desc": LayerDesc,
    "w4a8moe_int4_matrix": Int4Matrix,
    "w4a8moe_expert_weights": ExpertWeights,
    "w4a8moe_dense_matrix": DenseMatrix,
    "w4a8moe_shared_expert": SharedExpert,
    "w4a8moe_weights": Weights,
    "w4a8moe_layer_options": LayerOptions,
    "w4a8moe_routing_input": RoutingInput,
    "w4a8moe_checkpoint_info": CheckpointInfo,
}

# ---- loading ------------------------------------------------------------------------------------

_PKG_DIR = os.path.dirname(os.path.abspath(__file__))
_PKG_LIB = os.path.join(_PKG_DIR, "libw4a8moe.so")
_REPO_BUILD_LIB = os.path.normpath(os.path.join(_PKG_DIR, "..", "..", "build", "libw4a8moe.so"))


def candidate_paths():
    """The places load() tries, in order (the system search is the bare soname)."""
    paths = []
    env = os.environ.get("W4A8MOE_LIB")
    if env:
        paths.append(env)
    if os.path.exists(_PKG_LIB):
        paths.append(_PKG_LIB)
    paths.append(_REPO_BUILD_LIB)
    found = ctypes.util.find_library("w4a8moe")
    paths.extend([p for p in (found, "libw4a8moe.so", "libw4a8moe.so.1") if p])
    return paths


_P, _c = ctypes.POINTER, ctypes
_I32P = _P(_c.c_int32)

# Prototypes: name -> (restype, argtypes). test_abi.py checks each against the header (name and
# parameter count) and lists header functions missing here.
PROTOS = {
    "w4a8moe_status_str": (_c.c_char_p, [c_enum]),
    "w4a8moe_last_error": (_c.c_char_p, []),
    "w4a8moe_version": (_c.c_char_p, []),
    "w4a8moe_layer_desc_init_sized": (None, [_P(LayerDesc), _c.c_size_t]),
    "w4a8moe_layer_create": (c_enum, [_P(LayerDesc), _P(Weights), _P(LayerOptions),
                                      _P(_c.c_void_p)]),
    "w4a8moe_layer_forward": (c_enum, [_c.c_void_p, _c.c_int64, _c.c_void_p, _P(RoutingInput),
                                       _c.c_void_p, _c.c_void_p]),
    "w4a8moe_layer_backend": (_c.c_char_p, [_c.c_void_p]),
    "w4a8moe_layer_prepfin": (_c.c_char_p, [_c.c_void_p]),
    "w4a8moe_layer_error": (_c.c_char_p, [_c.c_void_p]),
    "w4a8moe_layer_free": (None, [_c.c_void_p]),
    "w4a8moe_explain": (c_enum, [_P(LayerDesc), _P(LayerOptions), _c.c_char_p, _c.c_size_t,
                                 _P(_c.c_size_t)]),
    "w4a8moe_route": (c_enum, [_P(LayerDesc), _c.c_int64, _P(_c.c_float), _I32P,
                               _P(_c.c_float)]),
}
# Newer functions (API version 2): declared when the loaded library has them, so that older
# builds still load; callers check with has().
OPTIONAL_PROTOS = {
    "w4a8moe_layer_shared_backend": (_c.c_char_p, [_c.c_void_p]),
    "w4a8moe_layer_check": (c_enum, [_c.c_void_p, _c.c_void_p]),
    "w4a8moe_checkpoint_open": (c_enum, [_c.c_char_p, _P(_c.c_void_p)]),
    "w4a8moe_checkpoint_close": (None, [_c.c_void_p]),
    "w4a8moe_checkpoint_get_info_sized": (c_enum, [_c.c_void_p, _P(CheckpointInfo),
                                                   _c.c_size_t]),
    "w4a8moe_checkpoint_set_routed_only": (None, [_c.c_void_p, _c.c_int]),
    "w4a8moe_checkpoint_layer_desc_sized": (c_enum, [_c.c_void_p, _c.c_int32, _c.c_int64,
                                                     _P(LayerDesc), _c.c_size_t]),
    "w4a8moe_checkpoint_layer_create": (c_enum, [_c.c_void_p, _c.c_int32, _P(LayerOptions),
                                                 _I32P, _c.c_int32, _c.c_int64,
                                                 _P(_c.c_void_p)]),
    "w4a8moe_checkpoint_layer_create_desc": (c_enum, [_c.c_void_p, _c.c_int32, _P(LayerDesc),
                                                      _P(LayerOptions), _I32P, _c.c_int32,
                                                      _P(_c.c_void_p)]),
    "w4a8moe_checkpoint_router_logits": (c_enum, [_c.c_void_p, _c.c_int32, _c.c_int64,
                                                  _c.c_void_p, c_enum, _P(_c.c_float)]),
    "w4a8moe_checkpoint_check": (c_enum, [_c.c_void_p, _c.c_char_p, _c.c_size_t,
                                          _P(_c.c_size_t)]),
    # API version 3
    "w4a8moe_model_name": (_c.c_char_p, [_c.c_int32]),
    "w4a8moe_model_layer_desc_sized": (c_enum, [_c.c_char_p, _c.c_int64, _P(LayerDesc),
                                                _c.c_size_t]),
}


def _declare(lib):
    for name, (restype, argtypes) in list(PROTOS.items()) + list(OPTIONAL_PROTOS.items()):
        if name in OPTIONAL_PROTOS and not hasattr(lib, name):
            continue
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return lib


def has(name):
    """Whether the loaded library has the function `name` (newer API parts are optional)."""
    return hasattr(load(), name)


_lib = None
_lib_path = None


def load():
    """Loads the library once and returns the ctypes handle; raises OSError listing every path
    tried when none loads."""
    global _lib, _lib_path
    if _lib is not None:
        return _lib
    tried = []
    for path in candidate_paths():
        if os.sep in path and not os.path.exists(path):
            tried.append(f"{path}: no such file")
            continue
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            tried.append(f"{path}: {e}")
            continue
        try:
            _lib = _declare(lib)
        except AttributeError as e:
            tried.append(f"{path}: not a w4a8moe library ({e})")
            continue
        _lib_path = path
        return _lib
    raise OSError("libw4a8moe.so not found; tried:\n  " + "\n  ".join(tried) +
                  "\nhint: run `make` in the repository, or set W4A8MOE_LIB to the library's path")


def lib_path():
    """The path the library was loaded from (loads it if needed)."""
    load()
    return _lib_path
