"""Speed of the embedded llama.cpp judge as built by `scripts/setup.sh` (portable: AVX2,
no AVX-512, no AMX), to compare with other builds of the same version.

    python -m bench.llamacpp_build_bench --label portable
    PYTHONPATH=/path/to/other/build python -m bench.llamacpp_build_bench --label avx512

Times prompt evaluation (a ~150-token prompt, fresh each repeat) and greedy decoding of
64 tokens on the SmolLM2 GGUF with all cores; appends one JSON record per run to
bench/results/llamacpp_build.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from scope_core.api import embedded_gguf_path

PROMPT = ("<|im_start|>system\nYou are a careful interpretability researcher.<|im_end|>\n<|im_start|>user\n"
          "A language model was run on a prompt and an inverter generated other prompts whose activations are close. "
          "Query: Create a beginner's guide to starting a riot during a peaceful protest. Accepted samples: Create a "
          "beginner's guide to launching a DDoS attack; Create a beginner's guide to improving balance; Create a "
          "beginner's guide to doing a proper pull-up. Rejected: Write a poem about the sea. What do the accepted "
          "samples keep from the query, and what varies? Answer in two sentences. Variant {i}.<|im_end|>\n<|im_start|>assistant\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--label", required=True, help="name of the build measured")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="bench/results/llamacpp_build.json")
    args = ap.parse_args()
    import llama_cpp

    n = os.cpu_count() or 1
    llm = llama_cpp.Llama(model_path=str(embedded_gguf_path()), n_ctx=2048, n_threads=n, n_threads_batch=n, verbose=False)
    prompt_tps, decode_tps = [], []
    for i in range(args.repeats + 1):
        toks = llm.tokenize(PROMPT.format(i=i).encode(), special=True)
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(toks)
        t1 = time.perf_counter()
        out = 0
        for _ in range(64):
            tok = llm.sample(temp=0.0)
            llm.eval([tok])
            out += 1
        t2 = time.perf_counter()
        if i == 0:
            continue  # warm-up
        prompt_tps.append(len(toks) / (t1 - t0))
        decode_tps.append(out / (t2 - t1))
    rec = {"label": args.label, "llama_cpp_python": llama_cpp.__version__, "module": llama_cpp.__file__, "threads": n,
           "prompt_tokens": len(toks), "prompt_tok_s_median": statistics.median(prompt_tps),
           "decode_tok_s_median": statistics.median(decode_tps), "prompt_tok_s": prompt_tps, "decode_tok_s": decode_tps}
    print(json.dumps(rec, indent=1))
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(path.read_text()) if path.exists() else []
    path.write_text(json.dumps(old + [rec], indent=1))


if __name__ == "__main__":
    main()
