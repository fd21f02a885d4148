"""Where ONNX Runtime CPU spends its time: kernel time per op type and per module, for one or more
graphs of an export side by side (ONNX Runtime's own profiler; batch 1, random input of the graph's
size; seconds per run, the first, warm-up run left out).

    python benchmarks/ort_profile.py out/model/model.onnx out/model/model_int8.onnx --runs 2 --depth 3

Module names come from the node names, which carry our modules' paths (`/net/decoder/decoder_block1/...`);
--depth 3 groups by `net/decoder/decoder_block1`, `net/bb/layers.0` and so on.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, markdown_table


def profile(onnx_paths: list[Path], runs: int, threads: int) -> list[list[dict]]:
    """For each graph, one record per node run: op type, node name, microseconds. The graphs' runs
    alternate (this machine's speed drifts), and each graph's warm-up run is dropped."""
    import numpy as np
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="ort-profile-") as tmp:
        sessions = []
        for index, path in enumerate(onnx_paths):
            options = ort.SessionOptions()
            options.log_severity_level = 3
            options.enable_profiling = True
            options.intra_op_num_threads = threads
            options.profile_file_prefix = str(Path(tmp) / f"profile{index}")
            sessions.append(ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]))
        graph_input = sessions[0].get_inputs()[0]
        x = np.random.default_rng(5).standard_normal(graph_input.shape[1:]).astype(np.float32)[None]
        for _ in range(runs + 1):
            for session in sessions:
                session.run(None, {graph_input.name: x})
        return [node_records(json.loads(Path(s.end_profiling()).read_text())) for s in sessions]


def node_records(events: list[dict]) -> list[dict]:
    measured_from = [e["ts"] for e in events if e.get("name") == "model_run"][1]
    return [
        {"op": e["args"]["op_name"], "node": e["name"].removesuffix("_kernel_time"), "us": e["dur"]}
        for e in events
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] > measured_from
    ]


def module_of(node: str, op: str, depth: int) -> str:
    parts = [p for p in node.split("/") if p]
    return "/".join(parts[:depth]) if node.startswith("/") and len(parts) > depth else f"({op})"


def seconds_by(records: list[dict], key, runs: int) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for record in records:
        totals[key(record)] += record["us"] / 1e6 / runs
    return dict(totals)


def table(per_graph: dict[str, dict[str, float]], top: int, title: str) -> str:
    names = list(per_graph)

    def largest(key: str) -> float:
        return max(seconds.get(key, 0.0) for seconds in per_graph.values())

    keys = sorted(set().union(*per_graph.values()), key=largest, reverse=True)[:top]
    rows = [{title: k} | {n: f"{per_graph[n].get(k, 0.0):.3f}" for n in names} for k in keys]
    rows.append({title: "all kernels"} | {n: f"{sum(per_graph[n].values()):.3f}" for n in names})
    return markdown_table(rows, [(title, title)] + [(f"{n} s", n) for n in names])


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("graphs", nargs="+", type=Path)
    parser.add_argument("--runs", type=int, default=2, help="measured runs, after one warm-up run")
    parser.add_argument("--threads", type=int, default=0, help="0: ONNX Runtime's default")
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    by_op, by_module = {}, {}
    for path, records in zip(args.graphs, profile(args.graphs, args.runs, args.threads), strict=True):
        by_op[path.name] = seconds_by(records, lambda r: r["op"], args.runs)
        module = lambda r: module_of(r["node"], r["op"], args.depth)  # noqa: E731
        by_module[path.name] = seconds_by(records, module, args.runs)
    cpu = machine()
    print(f"Machine: {cpu['cpu']}, {cpu['cores']} cores. Seconds per run, mean of {args.runs}.\n")
    print(table(by_op, args.top, "op type"), "\n")
    print(table(by_module, args.top, "module"))


if __name__ == "__main__":
    main()
