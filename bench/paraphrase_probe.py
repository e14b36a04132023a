"""Can the embedded backbone reword users' prompts into extra (activation, text) pairs (issue 24,
NOTES §49)? Asks SmolLM2 through its chat template to reword a few real prompts and prints what it
writes, for a person to read; nothing is scored.

    python -m bench.paraphrase_probe --n 4

Reads the first --n prompts of ../shared/data/refusal/harmful_train.json and of harmless_val.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from agent.prompts import messages
from scope_core.api import load_target

SYSTEM = "You rewrite requests in other words. You never answer them."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/refusal")
    ap.add_argument("--n", type=int, default=4, help="prompts from each of the harmful and harmless sets")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    root = Path(args.data)
    texts = [d["instruction"] for name in ("harmful_train.json", "harmless_val.json")
             for d in json.loads((root / name).read_text())[: args.n]]
    target = load_target()
    tok = target.tokenizer
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    chats = [tok.apply_chat_template(messages("paraphrase_request", system=SYSTEM, request=x), tokenize=False, add_generation_prompt=True)
             for x in texts]
    enc = tok(chats, return_tensors="pt", padding=True)
    torch.manual_seed(args.seed)
    t = time.perf_counter()
    with torch.no_grad():
        out = target.model.generate(**enc, max_new_tokens=args.max_new_tokens, do_sample=True, temperature=0.7, top_p=0.95)
    print(f"{len(texts)} rewordings in {time.perf_counter() - t:.0f} s")
    for x, o in zip(texts, out):
        print(f"- {x[:100]!r}\n  -> {tok.decode(o[enc.input_ids.shape[1]:], skip_special_tokens=True)[:160]!r}")


if __name__ == "__main__":
    main()
