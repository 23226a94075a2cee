/*
 * cli.h — what the w4a8moe command-line tool's files share: the command list, the option
 * parser every command uses (so every command has --help and the same error style), the
 * value parsers for common flags, and the one place that handles the device a command runs on.
 *
 * Adding a command: add one X(name, summary) line to W4A8MOE_CLI_COMMANDS below and write
 * tools/cmd_<name>.c defining `int cli_cmd_<name>(int argc, char **argv)` (argv[0] is the
 * command's name). The dispatcher (w4a8moe.c) and the top-level --help are generated from
 * the list.
 *
 * Exit codes, for every command: 0 success, 1 the work failed (a check, a verification, a
 * library error), 2 usage error (bad flag or value: one line on stderr).
 */
#ifndef W4A8MOE_CLI_H
#define W4A8MOE_CLI_H

#include "w4a8moe.h"

#include <stddef.h>
#include <stdint.h>

/* name, one-line summary; in the order `w4a8moe --help` lists them */
#define W4A8MOE_CLI_COMMANDS(X)                                                                \
    X(models, "list the built-in model shapes")                                                \
    X(explain, "show a layer and every backend's verdict (selected, or why not)")              \
    X(bench, "time a layer (synthetic or a checkpoint's) against the machine's floor")        \
    X(verify, "check every backend against cpu_ref on random inputs and edge cases")          \
    X(quantize, "bf16 Hugging Face MoE checkpoint -> compressed-tensors W4AFP8 (int4 experts)") \
    X(inspect, "describe a checkpoint directory and check its tensors")                      \
    X(run, "run one MoE layer of a checkpoint on tokens from a safetensors file")

#define W4A8MOE_CLI_DECLARE(name, summary) int cli_cmd_##name(int argc, char **argv);
W4A8MOE_CLI_COMMANDS(W4A8MOE_CLI_DECLARE)
#undef W4A8MOE_CLI_DECLARE

/* `verify --checkpoint CKPT ...` (tools/cmd_verify_ckpt.c); cli_cmd_verify hands over to it. */
int cli_verify_checkpoint(int argc, char **argv);

enum { CLI_EXIT_OK = 0, CLI_EXIT_FAIL = 1, CLI_EXIT_USAGE = 2 };

/* ---- options ------------------------------------------------------------------------------ */

typedef enum cli_opt_kind {
    CLI_OPT_FLAG,   /* no value; *(int *)dst = 1 */
    CLI_OPT_INT,    /* int64_t in [min, max] */
    CLI_OPT_U64,    /* uint64_t, any (seeds) */
    CLI_OPT_STR,    /* const char * (points into argv) */
    CLI_OPT_CUSTOM, /* parse(value, dst, why, cap) */
} cli_opt_kind;

/* Returns 0 and fills dst, or -1 with a short reason in why ("must be a positive integer"). */
typedef int (*cli_value_parser)(const char *value, void *dst, char *why, size_t cap);

typedef struct cli_opt {
    const char *name;    /* "--tokens" */
    const char *metavar; /* "LIST"; NULL for flags */
    const char *help;    /* one line; says the default */
    cli_opt_kind kind;
    void *dst;
    int64_t min, max;       /* CLI_OPT_INT */
    cli_value_parser parse; /* CLI_OPT_CUSTOM */
    int given;              /* set by cli_parse when the flag appears */
} cli_opt;

#define CLI_FLAG(n, h, d) {n, NULL, h, CLI_OPT_FLAG, d, 0, 0, NULL, 0}
#define CLI_INT(n, m, h, d, lo, hi) {n, m, h, CLI_OPT_INT, d, lo, hi, NULL, 0}
#define CLI_U64(n, m, h, d) {n, m, h, CLI_OPT_U64, d, 0, 0, NULL, 0}
#define CLI_STR(n, m, h, d) {n, m, h, CLI_OPT_STR, d, 0, 0, NULL, 0}
#define CLI_CUSTOM(n, m, h, d, fn) {n, m, h, CLI_OPT_CUSTOM, d, 0, 0, fn, 0}

typedef struct cli_spec {
    const char *name;        /* "bench" */
    const char *args;        /* usage after the name, e.g. "[options]" or "[options] PATH" */
    const char *summary;     /* one line */
    const char *details;     /* paragraphs printed after the options, or NULL */
    int max_positional;      /* 0 for commands without positional arguments */
} cli_spec;

typedef enum cli_parse_result {
    CLI_PARSE_OK = 0,
    CLI_PARSE_HELP = 1,  /* --help was printed: exit 0 */
    CLI_PARSE_ERROR = 2, /* a one-line message was printed on stderr: exit 2 */
} cli_parse_result;

/* Parses argv[1..argc-1] ("--name value", "--name=value", "-h"/"--help", "--" ends options)
 * into opts. Positional arguments go to pos[0..max_positional-1] (*npos counts them; both may
 * be NULL when max_positional is 0). */
cli_parse_result cli_parse(const cli_spec *spec, cli_opt *opts, size_t nopts, int argc,
                           char **argv, const char **pos, int *npos);

/* Prints "w4a8moe <cmd>: <message>" and a newline on stderr; returns CLI_EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Prints "w4a8moe <cmd>: <message>" on stderr; returns CLI_EXIT_FAIL. */
int cli_fail(const char *cmd, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* ---- value parsers (cli_value_parser) ----------------------------------------------------- */

#define CLI_LIST_CAP 32
typedef struct cli_int_list {
    int64_t v[CLI_LIST_CAP];
    int n;
} cli_int_list;

int cli_parse_tokens(const char *value, void *dst, char *why, size_t cap);     /* cli_int_list */
int cli_parse_model(const char *value, void *dst, char *why, size_t cap);      /* const w4a8moe_model * */
int cli_parse_activation(const char *value, void *dst, char *why, size_t cap); /* w4a8moe_activation */
int cli_parse_dtype(const char *value, void *dst, char *why, size_t cap);      /* w4a8moe_dtype */
int cli_parse_scale_pair(const char *value, void *dst, char *why, size_t cap); /* float[2] */
int cli_parse_device(const char *value, void *dst, char *why, size_t cap);     /* cli_device */

const char *cli_dtype_name(w4a8moe_dtype dt);
const char *cli_activation_name(w4a8moe_activation act);
const char *cli_routing_name(w4a8moe_routing r);

/* ---- device: the one place the CLI decides where a command's data lives ------------------- */

typedef struct cli_device {
    w4a8moe_device_kind kind;
    int32_t ordinal;
    int is_auto; /* --device auto (the default): kind/ordinal are what cli_device_resolve chose */
} cli_device;

/* The default of every command's --device: auto, resolved before use. */
#define CLI_DEVICE_DEFAULT {W4A8MOE_DEVICE_CPU, 0, 1}
#define CLI_DEVICE_HELP "auto, cpu or cuda[:N] (default auto: cuda:0 when visible, else cpu)"

/* auto → cuda:0 when this build has CUDA and the device answers its query, else cpu. A device
 * given explicitly is left as it is. */
void cli_device_resolve(cli_device *dev);
/* auto only: a layer the CUDA device refused with UNSUPPORTED (e.g. a shared expert the CUDA
 * backends do not run yet) is retried on the CPU. Prints "device: auto falls back to cpu:
 * <why>" on stdout, switches dev to the CPU and returns 1; returns 0 (nothing changed) when
 * the device was given explicitly, is not CUDA, or st is another status. */
int cli_device_fallback(cli_device *dev, w4a8moe_status st, const char *why);
/* Fills opts->device_kind / device_ordinal. */
void cli_device_apply(const cli_device *dev, w4a8moe_layer_options *opts);
/* The device's own query (what the oracle's device predicates see): 0, or -1 with the reason in
 * why (a build without that device, or the library's error message). */
struct w4a8moe_device_info;
int cli_device_query(const cli_device *dev, struct w4a8moe_device_info *info, char *why, size_t cap);
/* "cpu (x86-64 avx2)" or the CUDA device's name; the reason when the query fails. */
void cli_device_describe(const cli_device *dev, char *buf, size_t cap);
/* What the commands print after "device: ": "cpu (x86-64 avx2)" or "cuda:0 (NVIDIA H200)", and
 * ", chosen by --device auto" when it was. */
void cli_device_label(const cli_device *dev, char *buf, size_t cap);


/* `run CKPT --all-layers ...` (tools/cmd_run_model.c); cli_cmd_run hands over to it. */
typedef struct cli_run_model_args {
    const char *ckpt_dir, *backend;
    int64_t tokens, threads;
    int64_t workspace_mb; /* 0: a workspace for every token at once */
    uint64_t seed;
    int router;           /* 1: the checkpoint's router (logits on the host); 0: random ids */
    int failed;           /* set when the memory check fails */
    cli_device device;
} cli_run_model_args;
int cli_run_model(cli_run_model_args *a, w4a8moe_checkpoint *ck);

#endif /* W4A8MOE_CLI_H */
