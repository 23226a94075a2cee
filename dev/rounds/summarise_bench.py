#!/usr/bin/env python3
"""summarise_bench.py — a round's bench log as a table: each model's configurations, every run's
graph µs, their median and its change against the model's first configuration.

The round scripts (run_round39.sh's parts l and t) write logs of this shape:

    == qwen3-30b-a3b stage=3 quant_first=0 l2_layer=0
          1        31.2        27.1      ...      (w4a8moe bench's line: T, eager µs, graph µs, ...)

A configuration may run several times (alternating with the others, so drift shows); its runs
are pooled. Usage: summarise_bench.py LOG [LOG ...]   (markdown on stdout, one table a T)
"""
import statistics
import sys


def parse(paths):
    """{(model, T): {config: [graph µs, ...]}}, configurations in first-seen order."""
    runs = {}
    for path in paths:
        model = config = None
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                words = line.split()
                if line.startswith("== ") and len(words) >= 2:
                    model, config = words[1], " ".join(words[2:]) or "default"
                    continue
                if model is None or len(words) < 3:
                    continue
                try:
                    t, graph_us = int(words[0]), float(words[2])
                except ValueError:
                    continue
                runs.setdefault((model, t), {}).setdefault(config, []).append(graph_us)
    return runs


def main(argv):
    if len(argv) < 2:
        print("usage: summarise_bench.py LOG [LOG ...]", file=sys.stderr)
        return 2
    runs = parse(argv[1:])
    if not runs:
        print("no bench lines found", file=sys.stderr)
        return 1
    for t in sorted({t for _, t in runs}):
        print(f"\nT = {t} (graph µs; change of the median against each model's first configuration)\n")
        print("| model | configuration | runs | median | change |")
        print("|---|---|---|---|---|")
        for (model, tt), configs in runs.items():
            if tt != t:
                continue
            base = None
            for config, values in configs.items():
                med = statistics.median(values)
                base = med if base is None else base
                change = "—" if med == base else f"{100.0 * (med - base) / base:+.1f} %"
                listed = ", ".join(f"{v:.1f}" for v in values)
                print(f"| {model} | {config} | {listed} | {med:.1f} | {change} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
