"""The kill -9 matrix: every write command, killed at each of its commit boundaries.

:data:`STEPS` is the table of write commands: one line each (the store it starts from, its
``kindred`` arguments, and the boundaries of the fixed sample ``make test`` runs). A step's
boundaries are not listed by hand: an uninterrupted run with ``KINDRED_FAULT_TRACE`` records
every boundary it reaches (:mod:`vectorstore.faults`), and the matrix kills a fresh copy of
the store at each one (``<point>:<table>@<n>``), then checks

- every table (rows by key, schema, key, vector columns, metadata without timestamps) is
  exactly as before the command or exactly as the uninterrupted run left it, and the
  artifacts are the old ones plus, at most, ones the uninterrupted run also wrote (models
  and states are content-addressed and deterministic, so a killed run cannot leave a
  different one behind);
- a re-run succeeds and leaves exactly what the uninterrupted run left: the same rows, the
  same metadata, the same artifacts (same names and bytes: model ids included) and indexes.

Kills at random moments (:func:`random_kill`) check the same. Used by
``tests/faults/test_kill_points.py`` and the figures of ``tests/faults/report.py``.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

import vectorstore
from ingest.freshness import ROW_STAMP, STAMP_PREFIX
from vectorstore.faults import ENV, ERROR_ENV, PAUSE_ENV, TRACE_ENV

ROOT = Path(__file__).resolve().parents[2]
PLAN = "migration.plan"  # services.admin.PLAN_ARTIFACT: present only while a migrate runs


@dataclass(frozen=True)
class Step:
    """One write command of the matrix.

    ``args`` are ``kindred`` arguments with ``{files}``, ``{day2}`` (the generated bank and
    its next day), ``{bad}`` (a CSV with bad rows) and ``{target}`` (a second store this
    trial owns) filled in; ``target_base`` names a base store copied to ``{target}`` first.
    ``sample`` lists the boundaries the fixed sample kills at (``"*"``: all of them).
    """

    name: str
    base: str
    args: tuple[str, ...]
    sample: tuple[str, ...] = ()
    target_base: str | None = None
    observe_target: bool = False
    resumable: bool = False
    """A sequence of steps, each one commit, that a re-run resumes (``refresh``: what is up to
    date is skipped): a kill between two of them may leave some done, so only the re-run is
    judged (it must succeed and equal the uninterrupted run)."""


TX = "_kindred_artifacts"
STEPS: tuple[Step, ...] = (
    Step("ingest customers", "bank-embedded",
         ("ingest", "customers", "{day2}/customers.csv", "--id-column", "customer_id",
          "--holdings-column", "products", "--holdings-separator", ";",
          "--text-column", "note"), sample=("commit:customers",)),
    Step("ingest customers, quarantine", "plain",
         ("ingest", "customers", "{bad}", "--id-column", "id", "--on-error", "quarantine"),
         sample=("committed:customers",)),
    Step("ingest events", "bank",
         ("ingest", "events", "{day2}/transactions.parquet"), sample=("commit:events",)),
    Step("ingest products", "bank",
         ("ingest", "products", "{products}", "--id-column", "product_id")),
    Step("ingest into a new table", "empty",
         ("ingest", "customers", "{files}/customers.csv", "--id-column", "customer_id")),
    Step("consolidate", "bank", ("consolidate",), sample=("commit:customers",)),
    Step("consolidate, creating customers", "events-only", ("consolidate",)),
    Step("embed tabular", "plain", ("embed", "tabular"),
         sample=("stage:customers@2", f"committed:{TX}")),
    Step("embed text", "bank", ("embed", "text", "--column", "note")),
    Step("embed behavior", "bank-consolidated", ("embed", "behavior"),
         sample=("committed:products",)),
    Step("embed combined", "bank-embedded",
         ("embed", "combined", "--source", "vec_tabular", "--source", "vec_behavior")),
    Step("index", "bank-embedded", ("index", "--column", "vec_tabular")),
    Step("fit (propensity)", "bank-embedded", ("fit", "term_deposit")),
    Step("fit (propensity, small grid)", "bank-embedded",
         ("py", "from services.facade import Kindred; import sys; Kindred(sys.argv[1]).fit("
                "['term_deposit'], propensity_options={'grid': [{'learning_rate': 0.1, "
                "'max_leaf_nodes': 15, 'min_samples_leaf': 20, 'l2_regularization': 0.0}], "
                "'folds': 3, 'max_iter': 100})"), sample=("commit:customers",)),
    Step("fit (learned)", "bank-embedded",
         ("fit", "term_deposit", "--method", "learned", "--column", "vec_tabular")),
    Step("risk score", "bank-embedded", ("risk", "score", "--detector", "iforest"),
         sample=(f"committed:{TX}",)),
    Step("risk rescore", "bank-day2",
         ("py", "from services.risk import rescore; import vectorstore as v, sys; "
                "rescore(v.connect(sys.argv[1]), 'customers')")),
    Step("recommend", "bank-consolidated", ("recommend",), sample=(f"committed:{TX}",)),
    Step("recommend (vector)", "bank-embedded",
         ("recommend", "--method", "vector", "--column", "vec_behavior")),
    Step("migrate", "bank-scored", ("migrate", "--to", "{target}"), observe_target=True,
         sample=("committed:customers", "commit:events")),
    Step("migrate --replace", "bank-scored", ("migrate", "--to", "{target}", "--replace"),
         target_base="plain", observe_target=True),
    Step("optimize", "bank-embedded", ("optimize",)),
    Step("restore", "embedded", ("restore", "2", "--table", "customers")),
    Step("refresh", "bank-day2", ("refresh",), sample=("committed:customers@1",),
         resumable=True),
)
READ_ONLY: tuple[tuple[str, ...], ...] = (
    ("match", "term_deposit"), ("match", "term_deposit", "--method", "learned"),
    ("match", "term_deposit", "--method", "propensity"),
    ("explain", "C00000001", "--product", "term_deposit"),
    ("risk", "top"), ("risk", "explain", "C00000001"), ("recommendations", "C00000001"),
    ("evaluate", "matching", "--product", "term_deposit", "--repeats", "1"),
    ("stats",), ("tables",), ("versions",),
)
"""Commands that must reach no commit boundary (run on ``bank-scored``)."""


# ---------------------------------------------------------------------- running kindred
def command(store: Path, args: tuple[str, ...] | list[str],
            fill: dict[str, str] | None = None) -> list[str]:
    """The process to run: ``kindred --store STORE ARGS`` (or Python code for ``py``)."""
    if args and args[0] == "py":  # Python code, called with the store as sys.argv[1]
        return [sys.executable, "-c", args[1], str(store)]
    args = [a.format(**(fill or {})) for a in args]
    return [sys.executable, "-c", "from services.cli import main; main()", "--store",
            str(store), *args]


def environment(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for k in (ENV, PAUSE_ENV, TRACE_ENV, ERROR_ENV):
        env.pop(k, None)
    env.update(extra)
    return env


def run(store: Path, args: tuple[str, ...] | list[str], fill: dict[str, str] | None = None,
        timeout: float = 900, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(command(store, args, fill), env=environment(**env), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------------- the bases
def build_bases(root: Path, *, customers: int = 500) -> dict[str, Path]:
    """The stores the steps start from, and the files they read."""
    from services.facade import Kindred

    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {"root": root}
    files = root / "files"
    Kindred.generate(files, customers=customers, events_per_customer=4, seed=3)
    Kindred.generate(files, day=2)
    out["files"], out["day2"] = files, files / "day2"
    products = [json.loads(line) for line in (files / "products.json").read_text().splitlines()
                if line.strip()]
    for p in products[:2]:
        p["name"] += " (renamed)"
    products.append({**products[0], "product_id": "green_mortgage", "name": "Green Mortgage"})
    out["products"] = root / "products.jsonl"
    out["products"].write_text("".join(json.dumps(p) + "\n" for p in products))
    a = _csv(root / "a.csv", "id,age,income,region",
             [f"c{i},{20 + i % 50},{1000 + 37 * i % 900},r{i % 5}" for i in range(600)])
    a2 = _csv(root / "a2.csv", "id,age,income,region",
              [f"c{i},{20 + i % 50},{1000 + 37 * i % 900},r{i % 5}" for i in range(600, 800)])
    out["bad"] = _csv(root / "bad.csv", "id,age,income,region,tier",
                      [f"c{i},{70 + i % 9},{1000 + i},r{i % 5},gold" for i in range(0, 800, 7)]
                      + [f"n{i},{'old' if i % 10 == 0 else 30 + i},{500 + i},r1,bronze"
                         for i in range(60)])
    (root / "empty").mkdir()
    out["empty"] = root / "empty"
    with Kindred(str(root / "plain"), create=True) as k:  # customers in two commits: two fragments
        for f in (a, a2):
            k.ingest(str(f), table="customers", id_column="id")
    out["plain"] = root / "plain"
    out["embedded"] = _derive(root, "plain", "embedded", lambda k: k.embed("tabular"))
    with Kindred(str(root / "bank"), create=True) as k:
        from synthetic_bank.demo import _ingest_all

        _ingest_all(k, {n: str(files / f) for n, f in (
            ("customers", "customers.csv"), ("transactions", "transactions.parquet"),
            ("web_events", "web_events.jsonl"), ("products", "products.json"),
            ("truth", "truth.parquet"))})
    out["bank"] = root / "bank"
    out["bank-consolidated"] = _derive(root, "bank", "bank-consolidated",
                                       lambda k: k.consolidate())

    def embeds(k: Any) -> None:
        k.embed("tabular")
        k.embed("behavior")

    out["bank-embedded"] = _derive(root, "bank-consolidated", "bank-embedded", embeds)

    def scored(k: Any) -> None:
        k.score_risk(detector="iforest")
        k.fit(["term_deposit"])
        k.recommend()
        k.fit(["term_deposit"], method="learned", column="vec_tabular")

    out["bank-scored"] = _derive(root, "bank-embedded", "bank-scored", scored)
    def day2(k: Any) -> None:  # new customers, embedded with the fitted embedder (no refit)
        from ingest.embedders import load_embedder
        from ingest.embedders.runner import embed_columns

        k.ingest(str(files / "day2" / "customers.csv"), table="customers",
                 id_column="customer_id", holdings_column="products", holdings_separator=";",
                 text_columns=["note"])
        embed_columns(k.store, "customers", [
            (load_embedder(k.store, "customers", c), c) for c in ("vec_tabular",
                                                                  "vec_tabular_raw")],
            fit=False)

    out["bank-day2"] = _derive(root, "bank-scored", "bank-day2", day2)
    with Kindred(str(root / "bank")) as k:
        k.migrate(str(root / "events-only"), tables=["events"])
    out["events-only"] = root / "events-only"
    return out


def _csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def _derive(root: Path, base: str, name: str, build: Any) -> Path:
    from services.facade import Kindred

    shutil.copytree(root / base, root / name)
    with Kindred(str(root / name), create=True) as k:
        build(k)
    return root / name


# ---------------------------------------------------------------------- state
VOLATILE = {"at", "seconds"}


def _plain(value: Any) -> Any:
    """Metadata without timestamps; NaN made comparable."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()
                if k not in VOLATILE and not k.endswith("_at") and not k.startswith("seconds")}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value


def ranked_stamps(rows: pa.Table) -> pa.Table:
    """Change stamps (``row_stamp``, ``stamp_*``) as dense ranks: which rows one write stamped
    together, and in which order, without the clock time each run stamped them at."""
    for i, name in enumerate(rows.column_names):
        if name == ROW_STAMP or name.startswith(STAMP_PREFIX):
            col = rows.column(name)
            rank = pc.rank(col, sort_keys="ascending", tiebreaker="dense")
            rows = rows.set_column(i, name, pc.if_else(pc.is_null(col), None, rank))
    return rows


@dataclass
class State:
    tables: dict[str, Any]
    artifacts: dict[str, str]
    indexes: dict[str, list[tuple[str, tuple[str, ...]]]] = field(default_factory=dict)


def snapshot(path: Path) -> State:
    """Every table's rows (by key), schema, key, vector columns and metadata; the artifacts
    (name -> sha256); the indexes. A missing store is an empty one."""
    tables: dict[str, Any] = {}
    artifacts: dict[str, str] = {}
    indexes: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
    if not path.exists():
        return State(tables, artifacts, indexes)
    with vectorstore.connect(str(path)) as store:
        for name in store.list_tables():
            info = store.table_info(name)
            rows = store.to_arrow(name)
            if info.key:
                rows = rows.sort_by(info.key)
            tables[name] = (_plain(ranked_stamps(rows).to_pydict()), str(info.schema), info.key,
                            sorted(v.to_dict()["name"] for v in info.vectors.values()),
                            _plain(info.metadata))
            indexes[name] = sorted((i.name, i.columns) for i in store.list_indexes(name))
        for name in store.list_artifacts():
            artifacts[name] = store.get_artifact(name)[1]["sha256"]
    return State(tables, artifacts, indexes)


def observed(step: Step, store: Path) -> State:
    """The state a step changes: its store, or the migration target."""
    return snapshot(_target(store) if step.observe_target else store)


def _target(store: Path) -> Path:
    return store.parent / f"{store.name}.target"


def problems(state: State, before: State, after: State) -> list[str]:
    """What makes ``state`` other than 'each table before or after' (empty: fine)."""
    out = []
    for name in sorted(set(before.tables) | set(after.tables) | set(state.tables)):
        got = state.tables.get(name)
        if got != before.tables.get(name) and got != after.tables.get(name):
            out.append(f"table {name!r} is neither as before nor as after")
    for name, sha in state.artifacts.items():
        if name == PLAN:
            continue
        if sha not in (before.artifacts.get(name), after.artifacts.get(name)):
            out.append(f"artifact {name!r} is one the uninterrupted run does not write")
    lost = sorted(set(before.artifacts) - set(state.artifacts))
    if lost:
        out.append(f"artifacts lost: {lost}")
    return out


def differences(state: State, after: State) -> list[str]:
    """How a re-run's state differs from the uninterrupted run's (empty: equal)."""
    out = [f"table {n!r} differs" for n in sorted(set(state.tables) | set(after.tables))
           if state.tables.get(n) != after.tables.get(n)]
    if state.artifacts != after.artifacts:
        extra = sorted(set(state.artifacts) - set(after.artifacts))
        missing = sorted(set(after.artifacts) - set(state.artifacts))
        changed = sorted(n for n in set(state.artifacts) & set(after.artifacts)
                         if state.artifacts[n] != after.artifacts[n])
        out.append(f"artifacts differ: extra {extra}, missing {missing}, changed {changed}")
    if state.indexes != after.indexes:
        out.append(f"indexes differ: {state.indexes} vs {after.indexes}")
    return out


# ---------------------------------------------------------------------- trials
@dataclass
class Reference:
    step: Step
    before: State
    after: State
    boundaries: list[str]
    seconds: float


@dataclass
class Outcome:
    step: str
    kill: str
    killed: bool
    partial: list[str]
    rerun_failed: str | None
    rerun_differs: list[str]
    rerun_refused: str | None = None  # killed once done; the re-run refused with one line

    @property
    def ok(self) -> bool:
        return self.killed and not self.partial and self.rerun_failed is None \
            and not self.rerun_differs


def fill_for(bases: dict[str, Path], store: Path) -> dict[str, str]:
    return {"files": str(bases["files"]), "day2": str(bases["day2"]), "bad": str(bases["bad"]),
            "products": str(bases["products"]), "target": str(_target(store))}


def prepare(step: Step, bases: dict[str, Path], store: Path) -> None:
    """A fresh copy of the step's base (and target base) at ``store``."""
    for p in (store, _target(store)):
        shutil.rmtree(p, ignore_errors=True)
    shutil.copytree(bases[step.base], store)
    if step.target_base:
        shutil.copytree(bases[step.target_base], _target(store))


def reference(step: Step, bases: dict[str, Path], work: Path) -> Reference:
    """The uninterrupted run: its before and after states and the boundaries it reached."""
    store = work / "uninterrupted"
    prepare(step, bases, store)
    before = observed(step, store)
    trace = work / "trace"
    trace.unlink(missing_ok=True)
    t0 = time.perf_counter()
    r = run(store, step.args, fill_for(bases, store), **{TRACE_ENV: str(trace)})
    seconds = time.perf_counter() - t0
    if r.returncode != 0:
        raise AssertionError(f"{step.name}: the uninterrupted run failed: {r.stderr[-3000:]}")
    seen: Counter[str] = Counter()
    points = []
    for line in trace.read_text().splitlines() if trace.exists() else []:
        seen[line] += 1
        points.append(f"{line}@{seen[line]}")
    return Reference(step, before, observed(step, store), points, seconds)


def kill_at(ref: Reference, bases: dict[str, Path], work: Path, point: str) -> Outcome:
    """Kill the step at ``point`` on a fresh copy, check the state, re-run, compare."""
    store = work / point.replace(":", "-").replace("@", "-")
    prepare(ref.step, bases, store)
    fill = fill_for(bases, store)
    r = run(store, ref.step.args, fill, **{ENV: point})
    if r.returncode != -signal.SIGKILL:
        return Outcome(ref.step.name, point, False, [f"not killed: exit {r.returncode}: "
                                                     f"{r.stderr[-1500:]}"], None, [])
    return _judge(ref, bases, store, point, True)


def random_kill(ref: Reference, bases: dict[str, Path], work: Path, seed: int) -> Outcome:
    """Kill the step with SIGKILL at a random moment of its run."""
    store = work / f"random-{seed}"
    prepare(ref.step, bases, store)
    delay = random.Random(seed).uniform(0.3, max(ref.seconds * 0.95, 0.4))
    proc = subprocess.Popen(command(store, ref.step.args, fill_for(bases, store)),
                            env=environment(), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=delay)
        killed = False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed = True
    return _judge(ref, bases, store, f"random {delay:.2f}s" + ("" if killed else
                                                                " (finished first)"), True)


def _judge(ref: Reference, bases: dict[str, Path], store: Path, kill: str,
           killed: bool) -> Outcome:
    state = observed(ref.step, store)
    partial = [] if ref.step.resumable else problems(state, ref.before, ref.after)
    again = run(store, ref.step.args, fill_for(bases, store))
    done = not partial and not differences(state, ref.after)
    lines = again.stderr.strip().splitlines()
    if again.returncode == 1 and done and lines and lines[-1].startswith("Error:") \
            and not differences(observed(ref.step, store), ref.after):
        # killed after its last commit: finished; a command that refuses to run twice (migrate
        # onto a target that has the tables) may say so, as after an uninterrupted run
        return Outcome(ref.step.name, kill, killed, [], None, [], lines[-1])
    if again.returncode != 0:
        return Outcome(ref.step.name, kill, killed, partial,
                       again.stderr.strip().splitlines()[-1] if again.stderr.strip()
                       else f"exit {again.returncode}", [])
    return Outcome(ref.step.name, kill, killed, partial, None,
                   differences(observed(ref.step, store), ref.after))


def sample_points(step: Step, ref: Reference) -> list[str]:
    """The fixed sample's boundaries of a step (each must be one the step reaches)."""
    if "*" in step.sample:
        return list(ref.boundaries)
    want = [p if "@" in p else f"{p}@1" for p in step.sample]
    missing = [p for p in want if p not in ref.boundaries]
    if missing:
        raise AssertionError(f"{step.name}: sample boundaries {missing} are not reached; "
                             f"it reaches {ref.boundaries}")
    return want


def trials(step: Step, bases: dict[str, Path], work: Path, *, full: bool = False,
           randoms: int = 0, workers: int = 2) -> tuple[Reference, list[Outcome]]:
    """The uninterrupted run of ``step``, then a kill at each boundary of the fixed sample
    (``full``: at every boundary it reaches) and at ``randoms`` random moments."""
    from concurrent.futures import ThreadPoolExecutor

    work = work / step.name.replace(" ", "_").replace("(", "").replace(")", "").replace(
        ",", "")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ref = reference(step, bases, work)
    points = list(ref.boundaries) if full else sample_points(step, ref)
    jobs: list[Any] = [lambda p=p: kill_at(ref, bases, work, p) for p in points]
    jobs += [lambda s=s: random_kill(ref, bases, work, s) for s in range(randoms)]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        outcomes = list(pool.map(lambda job: job(), jobs))
    return ref, outcomes


def read_only_boundaries(bases: dict[str, Path], work: Path) -> dict[str, list[str]]:
    """What each read-only command does to ``bank-scored`` that it should not: the commit
    boundaries it reaches, a failure, any change to the store (all empty: read-only)."""
    store = work / "read-only"
    shutil.rmtree(store, ignore_errors=True)
    shutil.copytree(bases["bank-scored"], store)
    out: dict[str, list[str]] = {}
    for args in READ_ONLY:
        trace = work / "read-only.trace"
        trace.unlink(missing_ok=True)
        before = snapshot(store)
        r = run(store, args, **{TRACE_ENV: str(trace)})
        reached = trace.read_text().split() if trace.exists() else []
        if r.returncode != 0:
            reached.append(f"exit {r.returncode}: {r.stderr.strip()[-300:]}")
        if differences(snapshot(store), before):
            reached.append("the store changed")
        out[" ".join(args)] = reached
    return out


def describe_outcome(o: Outcome) -> str:
    """One line saying what went wrong in a trial (empty when nothing did)."""
    if o.ok:
        return ""
    parts = [] if o.killed else ["not killed"]
    parts += o.partial
    if o.rerun_failed:
        parts.append(f"re-run failed: {o.rerun_failed}")
    parts += [f"re-run: {d}" for d in o.rerun_differs]
    return f"{o.step} killed at {o.kill}: " + "; ".join(parts)
