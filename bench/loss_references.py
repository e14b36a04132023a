"""What an "unconditional" held-out loss is measured against (issue 24's loss-gain target).

`train` reports the generator's held-out loss beside the frozen target's own loss on the same
prompts, written where the generator writes them: after the chat template's system prompt and
user header. How much that context already tells the backbone decides how many nats a
condition can still add, so a gain measured against one context cannot be compared with a
gain measured against another. This script scores one run's validation prompts with the
frozen target, full vocabulary, under three contexts:

- `template`: autoscope's system prompt + user header (its generator and `train`'s reference),
- `template_own_system`: the chat template with no system message given (SmolLM2's template
  then writes its own default system prompt),
- `user_only`: the user header alone, no system turn,
- `bare`: no template, the text after the end-of-text token that separates documents,

each over the text's own tokens and with the end of the turn counted too.

    python -m bench.loss_references --run real_r2_cos_sftup        # any run on the real sets

Prints a table and writes bench/results/loss_references_<run>.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from scope_core.api import RunData, TargetConfig, load_target

RESULTS = Path(__file__).resolve().parent / "results"


def context_ids(tokenizer, system_prompt: str | None) -> tuple[list[int], list[int]]:
    """(prefix, end) token ids around a user text in the chat template; `system_prompt` None
    leaves the system turn to the template."""
    sentinel = "\u2063TEXT\u2063"
    msgs = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [{"role": "user", "content": sentinel}]
    before, after = tokenizer.apply_chat_template(msgs, tokenize=False).split(sentinel)
    end = tokenizer(after, add_special_tokens=False).input_ids[:1]  # the end of the turn
    return tokenizer(before, add_special_tokens=False).input_ids, end


@torch.no_grad()
def scored_loss(model, prefix: list[int], texts: list[list[int]], end: list[int], batch: int = 32) -> dict[str, float]:
    """Mean nats per token of each text after `prefix`: over the text's tokens alone, and with
    the end token counted (what `train` reports)."""
    tot_text = tot_all = 0.0
    n_text = n_all = 0
    for i in range(0, len(texts), batch):
        chunk = texts[i : i + batch]
        seqs = [prefix + t + end for t in chunk]
        width = max(map(len, seqs))
        ids = torch.zeros(len(seqs), width, dtype=torch.long)
        mask = torch.zeros(len(seqs), width, dtype=torch.long)
        for r, s in enumerate(seqs):
            ids[r, : len(s)], mask[r, : len(s)] = torch.tensor(s), 1
        logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)
        for r, t in enumerate(chunk):
            start, stop = len(prefix), len(prefix) + len(t) + len(end)  # positions of the scored tokens
            nll = -logp[r, start - 1 : stop - 1].gather(-1, ids[r, start:stop, None])[:, 0]
            tot_text, n_text = tot_text + float(nll[: len(t)].sum()), n_text + len(t)
            tot_all, n_all = tot_all + float(nll.sum()), n_all + len(nll)
    return {"text_only": tot_text / max(n_text, 1), "with_end": tot_all / max(n_all, 1), "tokens": n_text}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a run under runs/ whose prompts to score (its validation split)")
    ap.add_argument("--runs-dir", default="runs")
    ap.add_argument("--split", default="valid", choices=["valid", "heldout"])
    args = ap.parse_args()
    torch.manual_seed(0)
    data = RunData.load(Path(args.runs_dir) / args.run / "data")
    texts = [data.examples[i].text for i in (data.valid if args.split == "valid" else data.heldout)]
    target = load_target(TargetConfig())
    tok, model = target.tokenizer, target.model
    ids = [tok(t, add_special_tokens=False).input_ids for t in texts]
    system = TargetConfig().system_prompt
    (ours, end), (own, _) = context_ids(tok, system), context_ids(tok, None)
    rows = {"template": scored_loss(model, ours, ids, end), "template_own_system": scored_loss(model, own, ids, end)}
    header = tok("<|im_start|>user\n", add_special_tokens=False).input_ids
    if ours[-len(header):] == header:  # a ChatML template: its user header alone
        rows["user_only"] = scored_loss(model, header, ids, end)
    sep = tok.convert_tokens_to_ids("<|endoftext|>")
    sep = sep if isinstance(sep, int) and sep != tok.unk_token_id else tok.eos_token_id
    rows["bare"] = scored_loss(model, [sep], ids, [sep])
    out = {"run": args.run, "split": args.split, "n_prompts": len(texts), "system_prompt": system, "rows": rows}
    print(f"{len(texts)} {args.split} prompts of {args.run}, frozen target, full vocabulary (nats/token)")
    print(f"{'context':<20} {'text only':>10} {'with end':>10}")
    for name, r in rows.items():
        print(f"{name:<20} {r['text_only']:>10.3f} {r['with_end']:>10.3f}")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"loss_references_{args.run}.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
