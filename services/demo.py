"""End-to-end check of the embedded store: create, write, upsert, filter, search, version."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa

import vectorstore
from vectorstore import VectorColumn, col


def main(path: str = "kindred-demo") -> int:
    target = Path(path)
    shutil.rmtree(target, ignore_errors=True)
    rng = np.random.default_rng(0)
    n, d = 5_000, 32
    vectors = rng.normal(size=(n, d)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with vectorstore.connect(str(target)) as store:
        store.create_table(
            "customers",
            pa.schema([("customer_id", pa.string()), ("age", pa.int64()), ("region", pa.string())]),
            key="customer_id",
            vectors=[VectorColumn("vec", d)],
        )
        ids = [f"c{i:05d}" for i in range(n)]
        regions = rng.choice(["EU", "UK", "US"], size=n)
        store.write("customers", pa.table({
            "customer_id": ids, "age": rng.integers(18, 90, size=n), "region": regions,
            "vec": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), d),
        }))
        q = vectors[0]
        hits = store.search("customers", q, k=5, filter=(col("region") == str(regions[0])))
        exact = np.argsort(-(vectors @ q))
        print(f"store at {target.resolve()}: {store.count('customers')} customers")
        print("top 5 for c00000 in its region:", hits.column("customer_id").to_pylist())
        assert hits.column("customer_id")[0].as_py() == ids[int(exact[0])]
        print("versions:", [v.version for v in store.versions("customers")])
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
