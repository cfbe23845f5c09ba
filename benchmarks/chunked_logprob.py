"""Peak memory and time of per-token log-probs + entropies: naive full-logits path vs chunked path.

Workload (one sequence, float32, one thread): h [T, D] and an LM-head weight W [V, D], both requiring
grad; forward + backward of sum_t (log p(y_t) + 0.01 · H_t) with logits = h Wᵀ.

* naive:   ``token_logp_entropy(h @ W.T, ids)`` (what ``models/forward.py`` does with ``chunk_size=0``)
* chunked: ``chunked_logp_entropy(h, W, ids, chunk_size=C)``

Each measurement runs in a fresh subprocess. Memory = the process's peak resident set size (the
kernel's high-water mark VmHWM, reset with ``/proc/self/clear_refs`` just before the forward, so
short-lived temporaries count and the set-up's do not) minus the resident size at that moment, after
h, W and the ids exist: every byte a tensor of the computation wrote (logits, softmax, gradients
including the [V, D] weight gradient, BLAS work buffers) shows up.
Large tensors are mmap'd by the allocator, so freed ones leave the RSS and do not mask later peaks.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/chunked_logprob.py --testbed  # the docs table
    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/chunked_logprob.py --quick    # chunk-size scan, T=512

Time is reported as wall and as process CPU time; on a machine shared with other jobs the CPU time
is the steadier of the two (it does not count the time spent waiting for a core), so the ratio uses it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux >= 4.0), so the set-up's own
    transient peak (e.g. building W) does not count."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child(path: str, T: int, D: int, V: int, chunk: int) -> dict:
    import torch

    from entrolab.models.chunked_logprob import chunked_logp_entropy
    from entrolab.models.forward import token_logp_entropy

    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)

    def run(h, w, ids):
        if path == "naive":
            logp, ent = token_logp_entropy(h @ w.T, ids)
        else:
            logp, ent = chunked_logp_entropy(h, w, ids, chunk_size=chunk)
        (logp + 0.01 * ent).sum().backward()

    # warm-up on a tiny problem: loads kernels and thread pools outside the measured window
    hs = torch.randn(4, D, requires_grad=True)
    run(hs, torch.randn(16, D, requires_grad=True), torch.zeros(4, dtype=torch.long))
    h = torch.randn(T, D, generator=gen).mul_(0.5).requires_grad_()
    w = torch.randn(V, D, generator=gen).mul_(D ** -0.5).requires_grad_()
    ids = torch.randint(0, V, (T,), generator=gen)
    _reset_peak_rss()
    base = _rss_bytes()
    t0, c0 = time.perf_counter(), time.process_time()
    run(h, w, ids)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = _peak_rss_bytes()
    return {"path": path, "T": T, "chunk": chunk if path == "chunked" else None, "time_s": dt, "cpu_s": cpu,
            "peak_extra_bytes": peak - base, "base_rss_bytes": base,
            "grad_checksum": float(w.grad.double().abs().sum())}


def testbed(repeats: int, chunk: int) -> None:
    """Training forward + backward through ``completion_stats`` on the CPU testbed's tiny model
    (Countdown vocabulary, 128 completions × 40 tokens after 32 prompt tokens), naive vs chunked,
    interleaved; prints the median wall time of each."""
    import statistics

    import torch

    from entrolab.models.forward import completion_stats
    from entrolab.models.tiny import build_tiny_model
    from entrolab.models.tokenizer import build_char_tokenizer
    from entrolab.tasks.countdown import Countdown

    torch.set_num_threads(1)
    tok = build_char_tokenizer(Countdown(n_train=1, n_validation=1, n_test=1).charset())
    model = build_tiny_model("tiny", tok).train()
    gen = torch.Generator().manual_seed(0)
    V, B, L, T = len(tok), 128, 32, 40
    prompt, comp = torch.randint(4, V, (B, L), generator=gen), torch.randint(4, V, (B, T), generator=gen)
    mask_BT = torch.arange(T)[None] < torch.randint(10, T + 1, (B,), generator=gen)[:, None]
    args = (prompt, torch.ones(B, L, dtype=torch.bool), comp, mask_BT)
    times: dict[int, list[float]] = {0: [], chunk: []}
    for _ in range(repeats):
        for cs in times:
            model.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            out = completion_stats(model, *args, chunk_size=cs)
            ((out.logp_BT + 0.01 * out.entropy_BT) * mask_BT).sum().backward()
            times[cs].append(time.perf_counter() - t0)
    print(f"# testbed: tiny model (vocab {V}), {B} x {T} completion tokens ({int(mask_BT.sum())} valid), "
          f"forward + backward, median of {repeats} interleaved runs, load {os.getloadavg()[0]:.1f}")
    for cs, ts in times.items():
        print(f"#   chunk {cs or '0 (naive)'}: {statistics.median(ts) * 1e3:.0f} ms")


def measure(path: str, T: int, D: int, V: int, chunk: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    load = os.getloadavg()[0]
    out = subprocess.run([sys.executable, __file__, "--child", path, str(T), str(D), str(V), str(chunk)],
                         capture_output=True, text=True, env=env, check=True)
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "load1": load}


def machine() -> str:
    import torch

    cpu = "unknown CPU"
    if Path("/proc/cpuinfo").exists():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, {platform.system()}, Python "
            f"{platform.python_version()}, torch {torch.__version__}, 1 thread")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hidden", type=int, default=896)
    ap.add_argument("--vocab", type=int, default=151_936)
    ap.add_argument("--T", type=int, default=2048, help="length measured with both paths (naive needs ~3.3 GB/1k)")
    ap.add_argument("--T-long", type=int, default=8192, help="length measured with the chunked path alone")
    ap.add_argument("--chunk", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2, help="interleaved rounds of the same-T pair")
    ap.add_argument("--quick", action="store_true", help="scan chunk sizes 128, 256, 512 at T=512 instead")
    ap.add_argument("--testbed", action="store_true", help="also time the testbed model's training forward")
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        path, T, D, V, chunk = a.child[0], *map(int, a.child[1:])
        print(json.dumps(child(path, T, D, V, chunk)))
        return
    D, V = a.hidden, a.vocab
    if a.quick:
        pair = [("naive", 512, 0)] + [("chunked", 512, c) for c in (128, 256, 512)]
        long = []
    else:
        pair, long = [("naive", a.T, 0), ("chunked", a.T, a.chunk)], [("chunked", a.T_long, a.chunk)]
    print(f"# chunked log-prob benchmark, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"# machine: {machine()}")
    print(f"# hidden {D}, vocab {V:,}, one sequence, float32, forward + backward of sum(logp + 0.01*entropy);")
    print(f"# same-T configurations interleaved {a.repeats}x (fresh process each), best run reported")
    runs: dict[tuple, list[dict]] = {}
    for _ in range(a.repeats):  # interleaved rounds, so a change in machine load hits both paths
        for cfg in pair:
            runs.setdefault(cfg, []).append(measure(cfg[0], cfg[1], D, V, cfg[2]))
    for cfg in long:
        runs.setdefault(cfg, []).append(measure(cfg[0], cfg[1], D, V, cfg[2]))
    best = {cfg: {"wall": min(r["time_s"] for r in rs), "cpu": min(r["cpu_s"] for r in rs),
                  "mem": max(r["peak_extra_bytes"] for r in rs), "load": [r["load1"] for r in rs],
                  "checksum": rs[0]["grad_checksum"], "n": len(rs)} for cfg, rs in runs.items()}
    naive = {cfg[1]: b for cfg, b in best.items() if cfg[0] == "naive"}
    print("\n| path | T | chunk | runs | wall s | CPU s | peak extra memory (GB) | memory vs naive "
          "| CPU time vs naive | load avg (1 min) at start |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (path, T, chunk), b in best.items():
        ref = naive.get(T)
        rel = ref is not None and path != "naive"
        mem_ratio = f"1/{ref['mem'] / b['mem']:.1f}" if rel else "—"
        t_ratio = f"{b['cpu'] / ref['cpu']:.2f}×" if rel else "—"
        loads = ", ".join(f"{x:.1f}" for x in b["load"])
        print(f"| {path} | {T:,} | {chunk or '—'} | {b['n']} | {b['wall']:.1f} | {b['cpu']:.1f} | {b['mem'] / 1e9:.2f} "
              f"| {mem_ratio} | {t_ratio} | {loads} |")
    for (path, T, chunk), b in best.items():
        if path == "chunked" and T in naive:
            rel = abs(b["checksum"] - naive[T]["checksum"]) / naive[T]["checksum"]
            print(f"# T={T:,}, chunk {chunk}: sum |dL/dW| agrees with the naive path to a relative {rel:.1e}")
    print(f"# load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if a.testbed:
        testbed(15, a.chunk)


if __name__ == "__main__":
    main()
