/*
 * w4a8moe.c — the `w4a8moe` command-line tool: main and the dispatch to subcommands.
 *
 * The command table is generated from W4A8MOE_CLI_COMMANDS in cli.h (one line per command;
 * each command lives in tools/cmd_<name>.c). Commands parse their own flags with cli_parse
 * and return an exit code: 0 success, 1 failure, 2 usage error.
 */
#include "cli.h"

#include "../src/core/backend.h"

#include <stdio.h>
#include <string.h>

typedef struct cli_command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} cli_command;

#define W4A8MOE_CLI_ENTRY(name, summary) {#name, cli_cmd_##name, summary},
static const cli_command commands[] = {W4A8MOE_CLI_COMMANDS(W4A8MOE_CLI_ENTRY)};
#undef W4A8MOE_CLI_ENTRY

#define NUM_COMMANDS (sizeof commands / sizeof commands[0])

static void print_usage(FILE *f)
{
    fprintf(f, "usage: w4a8moe COMMAND [options]\n\n"
           "Runs Mixture-of-Experts layers with int4 weights and FP8 e4m3 activations (W4A8).\n\n"
           "commands:\n");
    for (size_t i = 0; i < NUM_COMMANDS; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n"
           "  w4a8moe COMMAND --help   the command's options\n"
           "  w4a8moe --version        version and the backends compiled in\n\n"
           "environment: W4A8MOE_BACKEND forces an experts backend, W4A8MOE_LOG sets the log\n"
           "level (error|warn|info|debug).\n"
           "exit codes: 0 success, 1 failure (a check or the library), 2 usage error.\n");
}

/* "w4a8moe 0.2.0" and the registry's tables, in priority order */
static void print_version(void)
{
    size_t n;
    printf("w4a8moe %s\nexperts backends:", w4a8moe_version());
    const w4a8moe_experts_ops *const *ex = w4a8moe_registry_experts(&n);
    for (size_t i = 0; i < n; i++) printf(" %s", ex[i]->name);
    printf("\nprepare/finalize:");
    const w4a8moe_prepfin_ops *const *pf = w4a8moe_registry_prepfin(&n);
    for (size_t i = 0; i < n; i++) printf(" %s", pf[i]->name);
#ifdef W4A8MOE_WITH_CUDA
    printf("\ncuda: compiled in\n");
#else
    printf("\ncuda: not compiled in\n");
#endif
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        print_usage(stderr);
        return CLI_EXIT_USAGE;
    }
    const char *name = argv[1];
    if (strcmp(name, "-h") == 0 || strcmp(name, "--help") == 0 || strcmp(name, "help") == 0) {
        print_usage(stdout);
        return CLI_EXIT_OK;
    }
    if (strcmp(name, "--version") == 0 || strcmp(name, "version") == 0) {
        print_version();
        return CLI_EXIT_OK;
    }
    for (size_t i = 0; i < NUM_COMMANDS; i++)
        if (strcmp(name, commands[i].name) == 0) return commands[i].run(argc - 1, argv + 1);
    return cli_usage_error(NULL, "unknown %s '%s'; see 'w4a8moe --help'",
                           name[0] == '-' ? "option" : "command", name);
}
