/*
 * cmd_models.c — `w4a8moe models`: the built-in model shapes (src/core/models.h), one line
 * each, with the size of one layer's routed-expert weights in W4A8 form.
 */
#include "cli.h"

#include "../src/core/models.h"

#include <stdio.h>

/* "softmax_topk,renorm", "sigmoid_grouped_topk(8/4),renorm,x2.5", "sigmoid_top1,on-input" */
static void routing_text(const w4a8moe_model *m, char *buf, size_t cap)
{
    const w4a8moe_routing_desc *r = &m->routing;
    int n = snprintf(buf, cap, "%s", cli_routing_name(r->kind));
    if (r->kind == W4A8MOE_ROUTING_SIGMOID_GROUPED_TOPK)
        n += snprintf(buf + n, cap - (size_t)n, "(%d/%d)", r->n_group, r->topk_group);
    if (r->renormalize) n += snprintf(buf + n, cap - (size_t)n, ",renorm");
    if (r->routed_scaling_factor != 1.0f)
        n += snprintf(buf + n, cap - (size_t)n, ",x%g", (double)r->routed_scaling_factor);
    if (m->router_weight_on_input) snprintf(buf + n, cap - (size_t)n, ",on-input");
}

/* One layer's routed experts in MB: E × 3·H·I int4 (0.5 B) + bf16 group scales (2 B per g). */
static double layer_mb(const w4a8moe_model *m)
{
    double per = 3.0 * (double)m->hidden * (double)m->inter * (0.5 + 2.0 / m->group_size);
    return per * m->num_experts / 1e6;
}

int cli_cmd_models(int argc, char **argv)
{
    int json = 0;
    cli_opt opts[] = {
        CLI_FLAG("--json", "one JSON object per model instead of the table", &json),
    };
    static const cli_spec spec = {
        "models", "[options]", "List the built-in model shapes (routed experts of one MoE layer).",
        "columns: H hidden, I intermediate per expert, E experts, k top-k, g group size, routing,\n"
        "MB/layer = one layer's routed-expert weights (int4 + bf16 group scales).\n"
        "Use a name with bench, explain and verify (--model NAME).\n",
        0};
    cli_parse_result pr = cli_parse(&spec, opts, sizeof opts / sizeof opts[0], argc, argv, NULL, NULL);
    if (pr != CLI_PARSE_OK) return pr == CLI_PARSE_HELP ? CLI_EXIT_OK : CLI_EXIT_USAGE;

    if (!json)
        printf("%-16s %6s %6s %4s %2s %4s  %-38s %9s  %s\n", "name", "H", "I", "E", "k", "g",
               "routing", "MB/layer", "description");
    for (const w4a8moe_model *m = w4a8moe_models(); m->name; m++) {
        char routing[64];
        routing_text(m, routing, sizeof routing);
        if (json)
            printf("{\"name\": \"%s\", \"hidden\": %lld, \"inter\": %lld, \"experts\": %d, "
                   "\"top_k\": %d, \"group\": %d, \"routing\": \"%s\", \"layer_mb\": %.1f, "
                   "\"description\": \"%s\"}\n",
                   m->name, (long long)m->hidden, (long long)m->inter, m->num_experts, m->top_k,
                   m->group_size, routing, layer_mb(m), m->description);
        else
            printf("%-16s %6lld %6lld %4d %2d %4d  %-38s %9.1f  %s\n", m->name, (long long)m->hidden,
                   (long long)m->inter, m->num_experts, m->top_k, m->group_size, routing,
                   layer_mb(m), m->description);
    }
    return CLI_EXIT_OK;
}
