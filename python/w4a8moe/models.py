"""models.py — the built-in model shapes (src/core/models.c; `w4a8moe models`), as keyword
arguments for Layer, explain and route. Routed experts only, like the C table.

python/tests/test_layer.py checks this table against the library's own (models.c) when the
library exports it.
"""

_SOFTMAX_RENORM = {"routing": "softmax_topk", "renormalize": True}
_LLAMA4 = {"routing": "sigmoid_top1", "router_weight_on_input": True}

MODELS = {
    "tiny": dict(hidden=256, inter=128, experts=8, top_k=2, group_size=64, **_SOFTMAX_RENORM),
    "mixtral-8x7b": dict(hidden=4096, inter=14336, experts=8, top_k=2, group_size=128,
                         **_SOFTMAX_RENORM),
    "qwen3-30b-a3b": dict(hidden=2048, inter=768, experts=128, top_k=8, group_size=128,
                          **_SOFTMAX_RENORM),
    "qwen3-235b-a22b": dict(hidden=4096, inter=1536, experts=128, top_k=8, group_size=128,
                            **_SOFTMAX_RENORM),
    "deepseek-v3": dict(hidden=7168, inter=2048, experts=256, top_k=8, group_size=128,
                        routing="sigmoid_grouped_topk", renormalize=True, n_group=8,
                        topk_group=4, routed_scaling_factor=2.5),
    "llama4-scout": dict(hidden=5120, inter=8192, experts=16, top_k=1, group_size=128, **_LLAMA4),
    "llama4-maverick": dict(hidden=5120, inter=8192, experts=128, top_k=1, group_size=128,
                            **_LLAMA4),
}


def model_config(name):
    """Keyword arguments (a fresh dict) describing the built-in model `name`."""
    try:
        return dict(MODELS[name])
    except KeyError:
        raise KeyError(f"unknown model {name!r}; built-in models: {', '.join(MODELS)}") from None
