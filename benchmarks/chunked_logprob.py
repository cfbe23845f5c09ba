"""Peak memory and time of per-token log-probs + entropies: naive full-logits path vs chunked path.

Workload (one sequence, float32, one thread): h [T, D] and an LM-head weight W [V, D], both requiring
grad; forward + backward of sum_t (log p(y_t) + 0.01 · H_t) with logits = h Wᵀ.

* naive:   ``token_logp_entropy(h @ W.T, ids)`` (what ``models/forward.py`` does with ``chunk_size=0``)
* chunked: ``chunked_logp_entropy(h, W, ids, chunk_size=C)``

Each measurement runs in a fresh subprocess. Memory = the process's peak resident set size
(``getrusage(RUSAGE_SELF).ru_maxrss``, a kernel high-water mark, so short-lived temporaries count)
minus the resident size just before the forward, after h, W and the ids exist: every byte a tensor
of the computation wrote (logits, softmax, gradients including the [V, D] weight gradient) shows up.
Large tensors are mmap'd by the allocator, so freed ones leave the RSS and do not mask later peaks.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/chunked_logprob.py            # the docs table
    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/chunked_logprob.py --quick    # chunk-size scan, T=512
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


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
    h = (torch.randn(T, D, generator=gen) * 0.5).requires_grad_()
    w = (torch.randn(V, D, generator=gen) * D ** -0.5).requires_grad_()
    ids = torch.randint(0, V, (T,), generator=gen)
    base = _rss_bytes()
    t0 = time.perf_counter()
    run(h, w, ids)
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    return {"path": path, "T": T, "chunk": chunk if path == "chunked" else None, "time_s": dt,
            "peak_extra_bytes": peak - base, "base_rss_bytes": base,
            "grad_checksum": float(w.grad.double().abs().sum())}


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
    ap.add_argument("--quick", action="store_true", help="scan chunk sizes 64..1024 at T=512 instead")
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        path, T, D, V, chunk = a.child[0], *map(int, a.child[1:])
        print(json.dumps(child(path, T, D, V, chunk)))
        return
    D, V = a.hidden, a.vocab
    if a.quick:
        plan = [("naive", 512, 0)] + [("chunked", 512, c) for c in (64, 128, 256, 512, 1024)]
    else:  # interleave the two paths at the same T, then the long chunked run
        plan = [("naive", a.T, 0), ("chunked", a.T, a.chunk), ("chunked", a.T_long, a.chunk)]
    print(f"# chunked log-prob benchmark, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"# machine: {machine()}")
    print(f"# hidden {D}, vocab {V:,}, one sequence, float32, forward + backward of sum(logp + 0.01*entropy)")
    rows = [measure(p, T, D, V, c) for p, T, c in plan]
    naive = {r["T"]: r for r in rows if r["path"] == "naive"}
    print("\n| path | T | chunk | time (s) | peak extra memory (GB) | memory vs naive | time vs naive | load avg (1 min) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ref = naive.get(r["T"])
        mem_ratio = f"1/{ref['peak_extra_bytes'] / r['peak_extra_bytes']:.1f}" if ref and r is not ref else "—"
        t_ratio = f"{r['time_s'] / ref['time_s']:.2f}×" if ref and r is not ref else "—"
        print(f"| {r['path']} | {r['T']:,} | {r['chunk'] or '—'} | {r['time_s']:.1f} | "
              f"{r['peak_extra_bytes'] / 1e9:.2f} | {mem_ratio} | {t_ratio} | {r['load1']:.1f} |")
    for T, ref in naive.items():
        for r in rows:
            if r["path"] == "chunked" and r["T"] == T:
                rel = abs(r["grad_checksum"] - ref["grad_checksum"]) / ref["grad_checksum"]
                print(f"\n# Σ|∂L/∂W| agrees between the paths at T={T:,} to a relative {rel:.1e}")
    print(f"# load average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
