"""Text embedding throughput: Kindred's text embedder (store write included) vs raw encode.

10,000 rendered customer profiles (``--quick``: 500). Each repeat, in one fresh process per
side: Kindred = ``embed(store, "customers", TextEmbedder(column="profile"))`` (render, hash,
encode, write vectors and hashes back, record metadata) on a fresh table; baseline =
``SentenceTransformer(path).encode`` of the same texts with the same batch size. Target ratio
(baseline seconds / Kindred seconds) >= 0.95. Then the ONNX int8 backend: its speed-up over the
PyTorch encode and the cosine agreement of its vectors with the PyTorch vectors.

    .venv/bin/python -m bench.embed_text [--quick] [--repeats 3] [--n 10000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import pyarrow as pa

from bench._harness import report, run_isolated

OCC = ["manager", "teacher", "nurse", "engineer", "student", "retired clerk", "driver"]
REG = ["North", "South", "East", "West", "Capital"]
PROD = ["savings", "a credit card", "a mortgage", "a current account", "insurance", "a loan"]
CAT = ["travel", "groceries", "restaurants", "fuel", "electronics", "home goods"]


def profiles(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        held = rng.choice(PROD, rng.integers(1, 4), replace=False)
        holds = held[0] if len(held) == 1 else ", ".join(held[:-1]) + " and " + held[-1]
        out.append(f"{rng.integers(18, 90)}-year-old {rng.choice(OCC)} in the {rng.choice(REG)} "
                   f"region, customer for {rng.integers(0, 30)} years, holds {holds}, spends "
                   f"mostly on {rng.choice(CAT)}")
    return out


def kindred(texts: list[str], batch_size: int) -> dict:
    import vectorstore
    from ingest.embedders import TextEmbedder, embed

    with tempfile.TemporaryDirectory() as d:
        s = vectorstore.connect(d)
        t = pa.table({"customer_id": [f"c{i}" for i in range(len(texts))], "profile": texts})
        s.create_table("customers", t.schema, key="customer_id")
        s.write("customers", t)
        emb = TextEmbedder(column="profile", batch_size=batch_size)
        emb.load()  # model load outside the timed part, as for the baseline
        t0 = time.perf_counter()
        r = embed(s, "customers", emb)
        return {"seconds": time.perf_counter() - t0, "rows": r.rows_embedded}


def raw(texts: list[str], batch_size: int) -> dict:
    from sentence_transformers import SentenceTransformer

    from ingest.embedders.text import default_model_path

    m = SentenceTransformer(str(default_model_path()), device="cpu")
    t0 = time.perf_counter()
    v = m.encode(texts, batch_size=batch_size, normalize_embeddings=True)
    sec = time.perf_counter() - t0
    return {"seconds": sec, "vectors": v}


def onnx(texts: list[str], batch_size: int) -> dict:
    from ingest.embedders import TextEmbedder

    emb = TextEmbedder(column="x", backend="onnx", quantize=True, batch_size=batch_size)
    emb.load()
    t0 = time.perf_counter()
    v = emb.encode(texts)
    return {"seconds": time.perf_counter() - t0, "vectors": v}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--n", type=int, default=None, help="number of profiles (default 10,000)")
    a = ap.parse_args()
    n = a.n or (500 if a.quick else 10_000)
    print("load at start:", os.getloadavg())
    texts = profiles(n)
    ks, rs, kp, rp = [], [], 0.0, 0.0
    ref = None
    for _ in range(a.repeats):
        r, p = run_isolated(raw, texts, a.batch_size)
        rs.append(r["seconds"])
        rp = max(rp, p)
        ref = r["vectors"]
        k, p = run_isolated(kindred, texts, a.batch_size)
        ks.append(k["seconds"])
        kp = max(kp, p)
        print(f"repeat: raw {rs[-1]:.1f}s, kindred {ks[-1]:.1f}s, load {os.getloadavg()[0]:.1f}",
              flush=True)
    o, op = run_isolated(onnx, texts, a.batch_size)
    cos = (o["vectors"] * ref).sum(axis=1)
    k_med, r_med = float(np.median(ks)), float(np.median(rs))
    report(f"embed_text: {n} profiles, batch {a.batch_size}, {a.repeats} repeats", [
        {"side": "raw SentenceTransformer.encode", "median_s": r_med, "texts_per_s": n / r_med,
         "peak_rss_mib": rp},
        {"side": "kindred embed (store write incl.)", "median_s": k_med,
         "texts_per_s": n / k_med, "peak_rss_mib": kp},
        {"side": "onnx int8 encode (1 run)", "median_s": o["seconds"],
         "texts_per_s": n / o["seconds"], "peak_rss_mib": op},
    ])
    print("load at end:", os.getloadavg())
    print(f"raw runs {[round(x, 1) for x in rs]}, kindred runs {[round(x, 1) for x in ks]}")
    print(f"\nratio raw/kindred = {r_med / k_med:.3f} (target >= 0.95)")
    print(f"onnx int8 speed-up over torch encode = {r_med / o['seconds']:.2f}x; cosine with torch "
          f"vectors: mean {cos.mean():.4f}, min {cos.min():.4f}")


if __name__ == "__main__":
    main()
