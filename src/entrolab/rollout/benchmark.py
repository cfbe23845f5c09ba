"""Time the KV-cache sampler against ``model.generate`` on the same prompts.

``python -m entrolab.rollout.benchmark --model PATH`` (any HF causal LM folder; Countdown test
prompts). Both sides produce what the trainer needs: tokens plus behaviour log-probs and
entropies (``generate`` returns the raw logits, which are then tempered and reduced). The greedy
completions of both are compared first, as a check that they decode the same thing. Results are
recorded in docs/testbed.md.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from entrolab.rollout.draw import logp_and_entropy
from entrolab.rollout.sampler import encode_prompts, left_pad, sample


@torch.no_grad()
def generate_with_stats(model, tokenizer, texts: list[str], *, group_size: int, max_new_tokens: int,
                        temperature: float, batch_size: int, greedy: bool = False) -> tuple[list[str], int]:
    """``model.generate`` over the same rows as ``sample``; returns (texts, generated tokens)."""
    ids = encode_prompts(tokenizer, texts)
    rows = [ids[b // group_size] for b in range(len(ids) * group_size)]
    device = next(model.parameters()).device
    out_texts, n_tokens = [], 0
    for start in range(0, len(rows), batch_size):
        ids_BL, mask_BL = left_pad(rows[start:start + batch_size], tokenizer.pad_token_id)
        kw = dict(do_sample=False) if greedy else dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
        gen = model.generate(input_ids=ids_BL.to(device), attention_mask=mask_BL.long().to(device),
                             max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=tokenizer.eos_token_id, output_logits=True,
                             return_dict_in_generate=True, **kw)
        comp_BT = gen.sequences[:, ids_BL.shape[1]:]
        logits_BTV = torch.stack(gen.logits, dim=1)
        logp_BTV, entropy_BT = logp_and_entropy(logits_BTV.flatten(0, 1), temperature=temperature)
        logp_BT = logp_BTV.view(*comp_BT.shape, -1).gather(-1, comp_BT.unsqueeze(-1)).squeeze(-1)
        is_eos_BT = comp_BT == tokenizer.eos_token_id
        # valid = up to and including the first EOS
        mask_BT = (is_eos_BT.long().cumsum(-1) - is_eos_BT.long()) == 0
        n_tokens += int(mask_BT.sum())
        del logp_BT, entropy_BT
        for b in range(comp_BT.shape[0]):
            n = int(mask_BT[b].sum()) - int(is_eos_BT[b][mask_BT[b]].any())
            out_texts.append(tokenizer.decode(comp_BT[b, :n].tolist(), skip_special_tokens=True))
    return out_texts, n_tokens


def main(argv: list[str] | None = None) -> dict:
    from entrolab.models.loading import load_policy
    from entrolab.tasks.countdown import Countdown

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="HF causal LM folder")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--group-size", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tok = load_policy(args.model, device=args.device)
    prompts = Countdown().prompts("test")[: args.prompts]
    texts = [p.text for p in prompts]

    ours_greedy = sample(model, tok, prompts, group_size=1, max_new_tokens=args.max_new_tokens, generator=None,
                         greedy=True).texts
    hf_greedy, _ = generate_with_stats(model, tok, texts, group_size=1, max_new_tokens=args.max_new_tokens,
                                       temperature=1.0, batch_size=args.batch_size, greedy=True)
    result = {"greedy_agree": sum(a == b for a, b in zip(ours_greedy, hf_greedy)) / len(texts),
              "rows": len(texts) * args.group_size, "threads": torch.get_num_threads()}
    t0 = time.perf_counter()
    b = sample(model, tok, prompts, group_size=args.group_size, max_new_tokens=args.max_new_tokens,
               generator=torch.Generator().manual_seed(0), batch_size=args.batch_size)
    result["ours_s"] = time.perf_counter() - t0
    result["ours_tokens"] = int(b.mask_BT.sum())
    torch.manual_seed(0)
    t0 = time.perf_counter()
    _, n = generate_with_stats(model, tok, texts, group_size=args.group_size, max_new_tokens=args.max_new_tokens,
                               temperature=1.0, batch_size=args.batch_size)
    result["generate_s"] = time.perf_counter() - t0
    result["generate_tokens"] = n
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}))
    return result


if __name__ == "__main__":
    main()
