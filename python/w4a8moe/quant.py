"""quant.py — number formats and the int4 quantiser, in numpy (and torch where noted), for
examples and tests: bf16 bits <-> float32, e4m3 rounding, int4 packing, and the
compressed-tensors round-to-nearest min-max quantiser (docs/quantize.md).

Packed int4 (the checkpoint's pack-quantized form and the library's logical form): int32
[N, K/8], element i of a row at bits 4*(i%8) of word i/8, stored as q + 8, q in [-8, 7].

Quantiser (what llm-compressor writes): per row and group of g inputs,
  scale = bf16(absmax(w) / 7.5),  q = round_half_even(clamp(bf16(w / scale), -8, 7)),
with w first rounded to bf16 and the division done as bf16 arithmetic (computed in f32, rounded
to bf16, like torch). A group that is all zero gets scale 0 and q 0.
"""
from . import _arrays as A


def _np():
    np = A.numpy()
    if np is None:
        raise ImportError("this helper needs numpy (pip install numpy)")
    return np


# ---- bf16 ---------------------------------------------------------------------------------------

def f32_to_bf16(x):
    """float array → uint16 bf16 bit patterns, round to nearest even, NaN kept quiet."""
    np = _np()
    u = np.asarray(x, dtype=np.float32).view(np.uint32)
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(nan, ((u >> 16) | 0x40).astype(np.uint16), r)


def bf16_to_f32(b):
    """uint16 bf16 bit patterns → float32 (exact)."""
    np = _np()
    # np.uint32(16), not 16: numpy 1.x's value-based casting widens a 0-d uint32 shifted by a
    # Python int to int64, whose view as float32 then fails (numpy 2 keeps uint32 either way)
    u = np.asarray(b, dtype=np.uint16).astype(np.uint32) << np.uint32(16)
    return np.asarray(u, dtype=np.uint32).view(np.float32)


def round_bf16(x):
    """float32 values rounded to the nearest bf16 value (returned as float32)."""
    return bf16_to_f32(f32_to_bf16(x))


def io_to_f32(x, io_dtype):
    """An x/out array of the given io dtype as float32 values (bf16 = uint16 bits)."""
    np = _np()
    if io_dtype == "bf16":
        return bf16_to_f32(x)
    return np.asarray(x, dtype=np.float32)


def f32_to_io(x, io_dtype):
    """float32 values → an array of the io dtype (bf16 = uint16 bits), round to nearest even."""
    np = _np()
    if io_dtype == "bf16":
        return f32_to_bf16(x)
    return np.asarray(x, dtype={"f16": np.float16, "f32": np.float32}[io_dtype])


# ---- e4m3 ---------------------------------------------------------------------------------------

E4M3_MAX = 448.0
MIN_SCALE = 1.0 / (448.0 * 512.0)


def round_e4m3(x):
    """float32 → the nearest e4m3 (fn) value as float32: round to nearest even, saturate to
    ±448 (infinities too), NaN stays NaN. Exact: x / quantum is a power-of-two scaling."""
    np = _np()
    x = np.asarray(x, dtype=np.float32)
    a = np.abs(x)
    _, e = np.frexp(a)  # a = m * 2^e, m in [0.5, 1)
    # 3 mantissa bits: quantum 2^(e-4); subnormals (a < 2^-6) have the fixed quantum 2^-9
    q = np.ldexp(np.float32(1.0), np.maximum(e - 4, -9)).astype(np.float32)
    with np.errstate(invalid="ignore"):
        r = (np.round(a / q) * q).astype(np.float32)
        r = np.where(a >= E4M3_MAX, np.float32(E4M3_MAX), r)
        r = np.minimum(r, np.float32(E4M3_MAX))
    r = np.where(np.isnan(x), np.float32(np.nan), r)
    return np.copysign(r, x).astype(np.float32)


def act_scale(amax):
    """The contract's dynamic scale max(amax / 448, 1/(448*512)) in f32 (NaN for NaN/inf)."""
    np = _np()
    amax = np.asarray(amax, dtype=np.float32)
    with np.errstate(invalid="ignore"):
        s = np.maximum(amax / np.float32(E4M3_MAX), np.float32(MIN_SCALE)).astype(np.float32)
    return np.where(np.isfinite(amax), s, np.float32(np.nan)).astype(np.float32)


# ---- int4 packing (numpy) ---------------------------------------------------------------------

def pack_int4(q):
    """int array q [..., K] in [-8, 7] (K a multiple of 8) → int32 [..., K/8]."""
    np = _np()
    q = np.asarray(q)
    if q.shape[-1] % 8:
        raise ValueError(f"K = {q.shape[-1]} must be a multiple of 8")
    if q.size and (q.min() < -8 or q.max() > 7):
        raise ValueError("int4 values must be in [-8, 7]")
    nib = (q.astype(np.int64) + 8).astype(np.uint32).reshape(q.shape[:-1] + (q.shape[-1] // 8, 8))
    shifts = (4 * np.arange(8, dtype=np.uint32))
    words = np.bitwise_or.reduce(nib << shifts, axis=-1).astype(np.uint32)
    return words.view(np.int32)


def unpack_int4(packed):
    """int32 [..., K/8] → int8 [..., K] in [-8, 7]."""
    np = _np()
    w = np.asarray(packed).astype(np.int32).view(np.uint32)
    shifts = (4 * np.arange(8, dtype=np.uint32))
    nib = (w[..., None] >> shifts) & 0xF
    return (nib.astype(np.int8) - 8).reshape(w.shape[:-1] + (w.shape[-1] * 8,))


def quantize_int4(w, group_size):
    """float weights [..., N, K] → (packed int32 [..., N, K/8], scale uint16 bf16 bits
    [..., N, K/g]) with the compressed-tensors min-max quantiser (module docstring)."""
    np = _np()
    w = round_bf16(np.asarray(w, dtype=np.float32))
    K = w.shape[-1]
    if K % group_size or K % 8:
        raise ValueError(f"K = {K} must be a multiple of g = {group_size} and of 8")
    wg = w.reshape(w.shape[:-1] + (K // group_size, group_size))
    scale = round_bf16(np.abs(wg).max(axis=-1) / np.float32(7.5))
    safe = np.where(scale == 0, np.float32(1), scale)[..., None]
    q = np.clip(np.round(round_bf16(wg / safe)), -8, 7)
    q = np.where(scale[..., None] == 0, 0, q).reshape(w.shape).astype(np.int8)
    return pack_int4(q), f32_to_bf16(scale)


def dequantize_int4(packed, scale, group_size, channel_scale=None):
    """Packed int4 [..., N, K/8] with scale [..., N, K/g] (float32, float16 or uint16 bf16
    bits) and optional channel_scale [..., N] → float32 [..., N, K]: C[n] * S[n, k/g] * q."""
    np = _np()
    q = unpack_int4(packed).astype(np.float32)
    s = np.asarray(scale)
    s = bf16_to_f32(s) if s.dtype == np.uint16 else s.astype(np.float32)
    K = q.shape[-1]
    w = (q.reshape(q.shape[:-1] + (K // group_size, group_size)) * s[..., None]).reshape(q.shape)
    if channel_scale is not None:
        w = w * np.asarray(channel_scale, dtype=np.float32)[..., None]
    return w.astype(np.float32)


# ---- torch ----------------------------------------------------------------------------------

def quantize_int4_torch(w, group_size):
    """torch weights [..., N, K] → (packed int32 tensor [..., N, K/8], scale torch.bfloat16
    [..., N, K/g]) on w's device; the same quantiser as quantize_int4 (bit-identical)."""
    t = A.torch()
    if t is None:
        raise ImportError("quantize_int4_torch needs torch imported")
    w = w.to(t.bfloat16)
    K = w.shape[-1]
    if K % group_size or K % 8:
        raise ValueError(f"K = {K} must be a multiple of g = {group_size} and of 8")
    wg = w.reshape(*w.shape[:-1], K // group_size, group_size)
    scale = wg.abs().amax(dim=-1) / 7.5  # bf16 arithmetic, like compressed-tensors
    safe = t.where(scale == 0, t.ones_like(scale), scale)
    q = t.round(wg / safe.unsqueeze(-1)).clamp(-8, 7)
    q = t.where(scale.unsqueeze(-1) == 0, t.zeros_like(q), q).reshape(w.shape)
    return pack_int4_torch(q.to(t.int64)), scale


def pack_int4_torch(q):
    """int tensor q [..., K] in [-8, 7] → int32 [..., K/8] (same layout as pack_int4)."""
    t = A.torch()
    nib = (q.to(t.int64) + 8).reshape(*q.shape[:-1], q.shape[-1] // 8, 8)
    shifts = 4 * t.arange(8, device=q.device, dtype=t.int64)
    words = (nib << shifts).sum(dim=-1)  # < 2^32: no overlap between nibbles
    words = t.where(words >= 2 ** 31, words - 2 ** 32, words)
    return words.to(t.int32)
