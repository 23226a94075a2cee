/*
 * quantizer.h — round-to-nearest int4 quantisation of an unquantised Hugging Face MoE
 * checkpoint into a compressed-tensors W4AFP8 checkpoint (what `w4a8moe quantize` runs).
 *
 * Where it sits: src/loader, beside the reader/writer it uses (safetensors.h) and the config
 * parser that names the architecture's modules (hf_config.h, names.h). Host only; the core
 * never calls it.
 *
 * The rounding is compressed-tensors' own min-max convention, bit for bit (docs/quantize.md
 * cites the code): for each group of g weights of a row, in the weight's dtype D (bf16, f16 or
 * f32) as PyTorch computes it on the CPU,
 *     absmax = max |w|                       (compressed_tensors/quantization/utils/helpers.py
 *     scale  = D(absmax / 7.5)                calculate_qparams: max_val_pos / (bit_range / 2))
 *     scale  = eps(D) where scale == 0        (same function, step 5: _get_dtype_eps)
 *     q      = round_half_even(clamp(D(w / scale), -8, 7))
 *                                            (quantization/lifecycle/forward_helpers.py _quantize
 *                                             + quant_args.py round_to_quantized_type_args)
 * where D(x) rounds an f32 value to D (round to nearest even). The scale is stored in D, as
 * compressed-tensors stores it in the weight's dtype.
 *
 * Output layouts (docs/formats.md): pack-quantized `weight_packed` I32 [N, K/8] (element i at bits
 * 4*(i%8) of word i/8, stored q + 8), `weight_scale` D [N, K/g], `weight_shape` I64 [2];
 * int-quantized `weight` I8 [N, K], `weight_scale` as above.
 */
#ifndef W4A8MOE_QUANTIZER_H
#define W4A8MOE_QUANTIZER_H

#include "../common/error.h"
#include "hf_config.h"
#include "safetensors.h"

#include <stddef.h>
#include <stdint.h>

/* ---- one matrix ---------------------------------------------------------------------------- */

/* A weight matrix W [rows, cols] (rows = output channels N, cols = reduction K) viewed in a
 * source tensor: element (n, k) is at data[offset + n * row_stride + k * col_stride] (elements,
 * not bytes). A plain Linear weight has row_stride = cols, col_stride = 1; Llama-4's fused,
 * input-major experts are the transposed views (see w4a8moe_quantize_checkpoint). */
typedef struct w4a8moe_weight_view {
    const void *data;
    w4a8moe_st_dtype dtype; /* BF16, F16 or F32 */
    int64_t rows, cols;
    int64_t offset, row_stride, col_stride;
} w4a8moe_weight_view;

/* Quantises one matrix. Outputs (each may be NULL when not wanted):
 *   packed int32 [rows, cols/8] (pack-quantized), q8 int8 [rows, cols] (int-quantized),
 *   scale [rows, cols/g] in the view's dtype (2 or 4 bytes each).
 * cols must be a multiple of g and of 8, g in {32, 64, 128}. A NaN or infinite weight is a
 * FORMAT_ERROR naming `what` (a tensor name), its row and column. */
w4a8moe_status w4a8moe_rtn_quantize(const w4a8moe_weight_view *w, int32_t g, int32_t *packed,
                                    int8_t *q8, void *scale, const char *what, w4a8moe_err *err);

/* ---- a whole checkpoint -------------------------------------------------------------------- */

#define W4A8MOE_QUANTIZE_DEFAULT_SHARD (5000ull * 1000 * 1000) /* bytes, as HF's "5GB" */
/* A 5 GB shard of int4 experts would otherwise sit in anonymous memory; past this the scratch
 * file lets the kernel write it back (one extra write of the quantised bytes). */
#define W4A8MOE_QUANTIZE_DEFAULT_RAM (256ull << 20)

/* Called after each quantised matrix and each copied tensor: done and total count output bytes;
 * what is the tensor just finished. */
typedef void (*w4a8moe_quantize_progress_fn)(void *ctx, uint64_t done, uint64_t total,
                                             const char *what);

typedef struct w4a8moe_quantize_opts {
    const char *src_dir;            /* config.json + model.safetensors or a sharded index */
    const char *dst_dir;            /* created if missing; must hold no checkpoint already */
    int32_t group_size;             /* g: 32, 64 or 128 (0 = 128) */
    w4a8moe_ckpt_format format;     /* PACK_QUANTIZED (the default, what vLLM loads) or
                                       INT_QUANTIZED */
    w4a8moe_act_scheme act_scheme;  /* FP8_TOKEN_DYNAMIC; static is refused (docs) */
    const char *calib_path;         /* reserved for static activation scales; must be NULL */
    const int32_t *layers;          /* decoder layers to quantise (each must be an MoE layer);
                                       NULL = every MoE layer */
    int32_t n_layers;
    uint64_t max_shard_bytes;       /* 0 = W4A8MOE_QUANTIZE_DEFAULT_SHARD */
    uint64_t max_ram_bytes;         /* one shard's quantised tensors are held in RAM up to this
                                       (0 = W4A8MOE_QUANTIZE_DEFAULT_RAM), in a scratch file
                                       mapped from dst_dir beyond it */
    w4a8moe_quantize_progress_fn progress; /* may be NULL */
    void *progress_ctx;
} w4a8moe_quantize_opts;

/* Fills o with the defaults (g = 128, pack-quantized, dynamic, every MoE layer). */
void w4a8moe_quantize_opts_init(w4a8moe_quantize_opts *o);

typedef struct w4a8moe_quantize_report {
    w4a8moe_arch arch;
    int32_t layers_quantized;       /* MoE layers whose experts were quantised */
    int64_t matrices_quantized;     /* routed and shared expert projections */
    int64_t tensors_copied;         /* unchanged tensors */
    int64_t ignored_linears;        /* entries of the written ignore list */
    int32_t shards;                 /* output safetensors files */
    uint64_t bytes_in, bytes_out;   /* tensor payload bytes read / written */
} w4a8moe_quantize_report;

/* Quantises src_dir into dst_dir: routed (and shared) expert Linear weights of the selected MoE
 * layers become int4 group-quantised, every other tensor is copied unchanged, config.json gets
 * a compressed-tensors quantization_config whose ignore list names every Linear left
 * unquantised, and the other files of src_dir (tokenizer, generation config, ...) are copied.
 * Output shards of at most max_shard_bytes (a larger single tensor gets a shard of its own)
 * with model.safetensors.index.json when there is more than one. Memory stays bounded: inputs
 * are mapped (and their pages dropped once a shard is written), and a shard's quantised
 * tensors beyond max_ram_bytes live in a scratch file mapped in dst_dir (unlinked at once), so
 * the kernel can write them back instead of holding them in RAM.
 * report may be NULL. On failure dst_dir may hold partial output. */
w4a8moe_status w4a8moe_quantize_checkpoint(const w4a8moe_quantize_opts *o,
                                           w4a8moe_quantize_report *report, w4a8moe_err *err);

#endif /* W4A8MOE_QUANTIZER_H */
