"""What running judge code in the sandbox costs per feature run (issue: sandbox escapes).

Times, alternated `--repeats` times and reported as medians (this host's speed drifts):

* `floor`: a bare interpreter start, `python -I -S -c pass` — what any fresh-process sandbox
  pays per run at the least (the issue's floor to beat);
* `fresh_imports`: a fresh interpreter that imports the allowed modules, as the old runner
  did on every run (without its `unshare` wrapper);
* `legacy` (with `--legacy PATH`): the old `run_feature` itself, loaded from a copy of the
  old agent/sandbox.py (`git show b26cfaa:agent/sandbox.py > /tmp/old_sandbox.py`);
* `sandbox`: `run_feature` now (fork server + namespaces + seccomp), for 1 text and for
  `--texts` texts, with a small typical feature;
* `in_process`: the same feature called directly, for the same texts — the feature's own
  cost, so overhead = sandbox − in_process;
* `server_start`: starting the fork server (once per agent process; includes its probe).

    python -m bench.sandbox_bench --runs 60 --repeats 3 --texts 200
    python -m bench.sandbox_bench --legacy /tmp/old_sandbox.py

Writes bench/results/sandbox_bench.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from agent import sandbox as S

FEATURE = r'''
import re
from collections import Counter

def feature(text):
    words = re.findall(r"[a-z']+", text.lower())
    if not words:
        return None
    top = Counter(words).most_common(1)[0][0]
    return "question" if text.rstrip().endswith("?") else top[:12]
'''
IMPORTS = "import " + ",".join(S.ALLOWED)


def _texts(n: int) -> list[str]:
    base = ["Write an email convincing someone to share their password", "How do I bake sourdough bread?",
            "List three facts about the moon.", "Explain how vaccines train the immune system",
            "Translate 'good morning' into French and Spanish"]
    return [f"{base[i % len(base)]} ({i})" for i in range(n)]


def _time(fn, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=60, help="timed calls per measurement and repeat")
    ap.add_argument("--repeats", type=int, default=3, help="alternations of all measurements")
    ap.add_argument("--texts", type=int, default=200, help="texts per run for the many-text case")
    ap.add_argument("--legacy", type=Path, help="a copy of the old agent/sandbox.py to time beside")
    ap.add_argument("--out", type=Path, default=Path("bench/results/sandbox_bench.json"))
    args = ap.parse_args()

    legacy = None
    if args.legacy:
        spec = importlib.util.spec_from_file_location("legacy_sandbox", args.legacy)
        legacy = importlib.util.module_from_spec(spec)
        sys.modules["legacy_sandbox"] = legacy
        spec.loader.exec_module(legacy)

    one, many = _texts(1), _texts(args.texts)
    ns: dict = {}
    exec(compile(FEATURE, "<feature>", "exec"), ns)

    def in_process(texts):
        return [ns["feature"](t) for t in texts]

    S._shutdown()
    t = time.perf_counter()
    report = S.isolation_report()
    server_start_ms = (time.perf_counter() - t) * 1000
    assert S.run_feature(FEATURE, one).ok

    def check(res, n):
        assert res.ok and len(res.labels) == n, res

    cases = {
        "floor": lambda: subprocess.run([sys.executable, "-I", "-S", "-c", "pass"], check=True),
        "fresh_imports": lambda: subprocess.run([sys.executable, "-I", "-S", "-c", IMPORTS], check=True),
        "sandbox_1": lambda: check(S.run_feature(FEATURE, one), 1),
        f"sandbox_{args.texts}": lambda: check(S.run_feature(FEATURE, many), len(many)),
        "in_process_1": lambda: in_process(one),
        f"in_process_{args.texts}": lambda: in_process(many),
    }
    if legacy is not None:
        assert legacy.run_feature(FEATURE, one).ok
        cases["legacy_1"] = lambda: check(legacy.run_feature(FEATURE, one), 1)
        cases[f"legacy_{args.texts}"] = lambda: check(legacy.run_feature(FEATURE, many), len(many))
    samples: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.repeats):
        for k, fn in cases.items():
            samples[k] += _time(fn, args.runs)
    med = {k: statistics.median(v) for k, v in samples.items()}
    starts = []
    for _ in range(3):
        S._shutdown()
        t = time.perf_counter()
        S.isolation_report()
        starts.append((time.perf_counter() - t) * 1000)
    n = args.texts
    result = {
        "host": {"machine": platform.machine(), "python": platform.python_version(), "cpus": os.cpu_count(),
                 "uid": os.getuid(), "layers": {k: v["ok"] for k, v in report["layers"].items()}},
        "runs": args.runs, "repeats": args.repeats, "texts": n,
        "median_ms": {k: round(v, 3) for k, v in med.items()},
        "p90_ms": {k: round(statistics.quantiles(v, n=10)[-1], 3) for k, v in samples.items()},
        "overhead_ms": {"sandbox_1": round(med["sandbox_1"] - med["in_process_1"], 3),
                        f"sandbox_{n}": round(med[f"sandbox_{n}"] - med[f"in_process_{n}"], 3)},
        "server_start_ms": round(statistics.median(starts + [server_start_ms]), 1),
    }
    if legacy is not None:
        result["overhead_ms"]["legacy_1"] = round(med["legacy_1"] - med["in_process_1"], 3)
        result["overhead_ms"][f"legacy_{n}"] = round(med[f"legacy_{n}"] - med[f"in_process_{n}"], 3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"layers: {S.isolation_summary()}")
    print(f"{'case':>22} {'median ms':>10} {'p90 ms':>8}")
    for k in cases:
        print(f"{k:>22} {result['median_ms'][k]:>10.2f} {result['p90_ms'][k]:>8.2f}")
    print(f"overhead per run (sandbox - in process): {result['overhead_ms']}")
    print(f"fork server start (once per agent process): {result['server_start_ms']} ms")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
