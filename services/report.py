"""The visual report: a self-contained HTML page (PNG plots embedded as data URIs) plus the PNGs.

Plots are drawn with matplotlib's Agg backend from plain arrays, so the report can be built
from any source of scores; :meth:`services.facade.Kindred.report` gathers those arrays from the
store. Sections:

- cumulative gain and lift curves per product and method, from the same evaluation
  (:func:`services.matching.evaluate.evaluate_holdout`, same seed and repeats) as ``kindred evaluate
  matching``, so the report's figures are the command's;
- the calibration curve of the propensity model (predicted probability vs observed rate, out
  of fold);
- score distributions of current consumers vs prospects for each product;
- the risk score distribution with the flag threshold;
- a 2-D map of customers (PCA of a vector column) coloured by holdings and by risk flag.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import matplotlib

from ingest.datamodel import CUSTOMERS, META_RISK

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .models import ReportResult

if TYPE_CHECKING:
    from vectorstore import VectorStore


@dataclass
class RankingCurve:
    """Ranking scores of one method for one product, with the truth (1 = holder/positive)."""

    product: str
    method: str
    y_true: np.ndarray
    scores: np.ndarray
    auc: float | None = None


@dataclass
class ProductScores:
    """Match scores of current consumers and of prospects (non-holders) for one product."""

    product: str
    consumers: np.ndarray
    prospects: np.ndarray


@dataclass
class RiskScores:
    scores: np.ndarray
    """Risk scores on the written scale (robust z-scores of the detector's scores)."""
    threshold: float | None
    """The flag threshold the scoring run recorded: flagged means ``score > threshold``."""
    model: str = ""
    auc: float | None = None
    """ROC-AUC on labelled/planted anomalies, when known."""
    n_flagged: int | None = None
    """Customers flagged in the table (the run's count; default: counted from ``scores``)."""
    y_true: np.ndarray | None = None
    """Known anomalies (aligned with ``scores``), for the ROC and precision-recall curves."""
    label: str = ""


@dataclass
class CustomerMap:
    """Customer vectors to project, with the holdings to colour by and the risk flags."""

    column: str
    vectors: np.ndarray
    holdings: dict[str, np.ndarray] = field(default_factory=dict)
    """product -> boolean array (customer holds it)."""
    risk_flag: np.ndarray | None = None


@dataclass
class CalibrationCurve:
    """Mean predicted probability vs observed rate per bin, for one product's model."""

    product: str
    bins: list[dict[str, float]]


@dataclass
class ReportData:
    title: str = "Kindred report"
    subtitle: str = ""
    curves: list[RankingCurve] = field(default_factory=list)
    calibration: list[CalibrationCurve] = field(default_factory=list)
    distributions: list[ProductScores] = field(default_factory=list)
    risk: RiskScores | None = None
    customer_map: CustomerMap | None = None
    facts: dict[str, str] = field(default_factory=dict)
    """Key figures shown as a table at the top (e.g. store, rows, AUCs)."""


# ---------------------------------------------------------------------- curves
def gain_curve(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fraction of the base targeted (by descending score) -> fraction of positives reached."""
    y = np.asarray(y_true, dtype=bool)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    hits = np.cumsum(y[order])
    n, pos = len(y), max(int(y.sum()), 1)
    frac = np.arange(1, n + 1) / n
    return np.concatenate([[0.0], frac]), np.concatenate([[0.0], hits / pos])


def lift_at(y_true: np.ndarray, scores: np.ndarray, fraction: float = 0.1) -> float:
    """Positive rate in the top ``fraction`` divided by the base rate."""
    y = np.asarray(y_true, dtype=bool)
    k = max(1, round(len(y) * fraction))
    top = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[:k]
    base = y.mean()
    return float(y[top].mean() / base) if base > 0 else float("nan")


# ---------------------------------------------------------------------- figures
def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90, format="png")
    plt.close(fig)
    return path


def _legends_saved(fig: plt.Figure, path: Path, *axes: Any) -> Path:
    """Small legends on ``axes``, then :func:`_save` (the end of every two-panel figure)."""
    for ax in axes:
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_gain_lift(curves: list[RankingCurve], path: Path) -> Path:
    """Cumulative gain (left) and lift (right) for every method of one product."""
    fig, (ax_g, ax_l) = plt.subplots(1, 2, figsize=(10, 4))
    for c in curves:
        x, g = gain_curve(c.y_true, c.scores)
        label = c.method + (f" (AUC {c.auc:.3f})" if c.auc is not None else "")
        ax_g.plot(x, g, label=label)
        with np.errstate(divide="ignore", invalid="ignore"):
            lift = np.where(x > 0, g / np.maximum(x, 1e-12), np.nan)
        ax_l.plot(x[1:], lift[1:], label=c.method)
    ax_g.plot([0, 1], [0, 1], "k--", lw=1, label="random")
    ax_l.axhline(1.0, color="k", ls="--", lw=1)
    product = curves[0].product if curves else ""
    ax_g.set(title=f"Cumulative gain: {product}", xlabel="fraction of customers targeted",
             ylabel="fraction of holders reached")
    ax_l.set(title=f"Lift: {product}", xlabel="fraction of customers targeted", ylabel="lift",
             xlim=(0.01, 1))
    return _legends_saved(fig, path, ax_g, ax_l)


def plot_calibration(curves: list[CalibrationCurve], path: Path) -> Path:
    """Reliability diagram: predicted probability (x) vs observed rate (y), one line per product."""
    fig, ax = plt.subplots(figsize=(5, 4.2))
    top = 0.0
    for c in curves:
        x = [b["predicted"] for b in c.bins]
        y = [b["observed"] for b in c.bins]
        top = max(top, *x, *y)
        ax.plot(x, y, "o-", label=c.product)
    top = min(1.0, top * 1.05 + 1e-3)
    ax.plot([0, top], [0, top], "k--", lw=1, label="perfectly calibrated")
    ax.set(title="Propensity calibration (out of fold)", xlabel="predicted probability",
           ylabel="observed rate", xlim=(0, top), ylim=(0, top))
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_distributions(ps: ProductScores, path: Path) -> Path:
    """Histogram of match scores: consumers vs prospects."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    both = np.concatenate([ps.consumers, ps.prospects]) if len(ps.consumers) + len(
        ps.prospects) else np.zeros(1)
    # an array (matplotlib's stubs list sequences only)
    bins = cast(Sequence[float], np.linspace(float(np.min(both)), float(np.max(both)) + 1e-9, 40))
    ax.hist(ps.prospects, bins=bins, alpha=0.6, density=True,
            label=f"prospects (n={len(ps.prospects):,})")
    ax.hist(ps.consumers, bins=bins, alpha=0.6, density=True,
            label=f"consumers (n={len(ps.consumers):,})")
    ax.set(title=f"Match scores: {ps.product}", xlabel="score", ylabel="density")
    ax.legend(fontsize=8)
    return _save(fig, path)


def risk_legend(threshold: float, n_flagged: int) -> str:
    """The threshold line's legend: the same figures ``kindred risk score`` prints."""
    return f"flag threshold: risk_score > {threshold:.3f} ({n_flagged:,} flagged)"


def plot_risk(risk: RiskScores, path: Path) -> Path:
    """Histogram of risk scores with the flag threshold."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.hist(risk.scores, bins=60, color="#4c72b0")
    if risk.threshold is not None:
        n_flag = (risk.n_flagged if risk.n_flagged is not None
                  else int((risk.scores > risk.threshold).sum()))
        ax.axvline(risk.threshold, color="#c44e52", ls="--",
                   label=risk_legend(risk.threshold, n_flag))
        ax.legend(fontsize=8)
    ax.set_yscale("log")
    title = "Risk scores" + (f" ({risk.model})" if risk.model else "")
    ax.set(title=title, xlabel="risk score (robust z: 0 = the median customer)",
           ylabel="customers")
    return _save(fig, path)


def plot_risk_curves(risk: RiskScores, path: Path) -> Path:
    """ROC (left) and precision-recall (right) curves of the risk scores against the label."""
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_curve

    assert risk.y_true is not None
    y = np.asarray(risk.y_true, dtype=bool)
    fig, (ax_r, ax_p) = plt.subplots(1, 2, figsize=(10, 4))
    fpr, tpr, _ = roc_curve(y, risk.scores)
    auc = f" (AUC {risk.auc:.3f})" if risk.auc is not None else ""
    ax_r.plot(fpr, tpr, label=f"risk score{auc}")
    ax_r.plot([0, 1], [0, 1], "k--", lw=1, label="random")
    prec, rec, _ = precision_recall_curve(y, risk.scores)
    ap = average_precision_score(y, risk.scores)
    ax_p.plot(rec, prec, label=f"risk score (AP {ap:.3f})")
    ax_p.axhline(y.mean(), color="k", ls="--", lw=1, label=f"base rate {y.mean():.3f}")
    name = f" on {risk.label}" if risk.label else ""
    ax_r.set(title=f"Risk ROC{name}", xlabel="false positive rate",
             ylabel="true positive rate")
    ax_p.set(title=f"Risk precision-recall{name}", xlabel="recall", ylabel="precision",
             ylim=(0, 1.02))
    return _legends_saved(fig, path, ax_r, ax_p)


def pca_2d(vectors: np.ndarray) -> np.ndarray:
    """The first two principal components of ``vectors`` (rows centred; exact SVD)."""
    x = np.asarray(vectors, dtype=np.float64)
    x = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[:2].T


def plot_customer_map(cm: CustomerMap, path: Path, max_products: int = 4) -> Path:
    """PCA of a vector column: one panel per product (holders highlighted) plus risk flags."""
    xy = pca_2d(cm.vectors)
    products = list(cm.holdings)[:max_products]
    panels = len(products) + (1 if cm.risk_flag is not None else 0)
    cols = min(panels, 3) or 1
    rows = max(1, -(-panels // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.8 * rows), squeeze=False)
    flat = list(axes.ravel())
    for ax, p in zip(flat, products, strict=False):
        held = np.asarray(cm.holdings[p], dtype=bool)
        ax.scatter(xy[~held, 0], xy[~held, 1], s=3, c="#bbbbbb", label="does not hold")
        ax.scatter(xy[held, 0], xy[held, 1], s=3, c="#2a9d8f", label=f"holds ({held.sum():,})")
        ax.set(title=f"{cm.column}: {p}")
        ax.legend(fontsize=7, markerscale=3)
    if cm.risk_flag is not None:
        ax = flat[len(products)]
        flag = np.asarray(cm.risk_flag, dtype=bool)
        ax.scatter(xy[~flag, 0], xy[~flag, 1], s=3, c="#bbbbbb", label="normal")
        ax.scatter(xy[flag, 0], xy[flag, 1], s=6, c="#c44e52", label=f"flagged ({flag.sum():,})")
        ax.set(title=f"{cm.column}: risk flag")
        ax.legend(fontsize=7, markerscale=3)
    for ax in flat[panels:]:
        ax.axis("off")
    for ax in flat[:panels]:
        ax.set(xlabel="PC 1", ylabel="PC 2")
    return _save(fig, path)


# ---------------------------------------------------------------------- page
_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
h1{margin-bottom:.2rem} .sub{color:#666;margin-top:0} figure{margin:1rem 0}
img{max-width:100%;border:1px solid #ddd} table{border-collapse:collapse}
td,th{padding:.25rem .8rem;border-bottom:1px solid #eee;text-align:left}
"""


# records on <body> how many plots decoded, so a headless browser can check the page rendered
_LOAD_CHECK = (
    "<script>window.addEventListener('load',function(){var n=0;"
    "for(var i=0;i<document.images.length;i++){if(document.images[i].naturalWidth>0){n++;}}"
    "document.body.setAttribute('data-plots-loaded',String(n));});</script>"
)


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text.lower()).strip("_") or "x"


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img class="plot" alt="{html.escape(alt)}" '
            f'src="data:image/png;base64,{data}"><figcaption>{html.escape(alt)}</figcaption>'
            "</figure>")


def write_report(data: ReportData, out_dir: str | Path) -> ReportResult:
    """Draw every section that has data, write the PNGs and ``report.html`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parts: list[str] = []
    images: list[Path] = []
    sections: list[str] = []
    if data.facts:
        rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                       for k, v in data.facts.items())
        parts.append(f"<h2>Key figures</h2><table>{rows}</table>")
    by_product: dict[str, list[RankingCurve]] = {}
    for c in data.curves:
        by_product.setdefault(c.product, []).append(c)
    if by_product:
        sections.append("gain")
        parts.append("<h2>Product matching: gain and lift</h2>")
        for product, curves in by_product.items():
            p = plot_gain_lift(curves, out / f"gain_{_slug(product)}.png")
            images.append(p)
            parts.append(_img(p, f"Gain and lift for {product}"))
    if data.calibration:
        sections.append("calibration")
        parts.append("<h2>Propensity calibration</h2>")
        p = plot_calibration(data.calibration, out / "calibration.png")
        images.append(p)
        parts.append(_img(p, "Calibration of the propensity probabilities"))
    if data.distributions:
        sections.append("distributions")
        parts.append("<h2>Match scores: consumers vs prospects</h2>")
        for ps in data.distributions:
            p = plot_distributions(ps, out / f"scores_{_slug(ps.product)}.png")
            images.append(p)
            parts.append(_img(p, f"Score distribution for {ps.product}"))
    if data.risk is not None and len(data.risk.scores):
        sections.append("risk")
        parts.append("<h2>Risk</h2>")
        p = plot_risk(data.risk, out / "risk_scores.png")
        images.append(p)
        parts.append(_img(p, "Risk score distribution"))
        y = data.risk.y_true
        if y is not None and 0 < int(np.sum(y)) < len(y):
            p = plot_risk_curves(data.risk, out / "risk_curves.png")
            images.append(p)
            parts.append(_img(p, "Risk ROC and precision-recall curves"))
    if data.customer_map is not None and len(data.customer_map.vectors) >= 3:
        sections.append("map")
        parts.append("<h2>Customer map</h2>")
        p = plot_customer_map(data.customer_map, out / "customer_map.png")
        images.append(p)
        parts.append(_img(p, f"PCA of {data.customer_map.column}"))
    if not images:
        parts.append("<p>No data to plot yet: ingest, embed, match and score first.</p>")
    page = (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(data.title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(data.title)}</h1><p class=\"sub\">{html.escape(data.subtitle)}</p>"
        + "".join(parts) + _LOAD_CHECK + "</body></html>"
    )
    html_path = out / "report.html"
    html_path.write_text(page, encoding="utf-8")
    return ReportResult(html=str(html_path.resolve()), images=[str(p.resolve()) for p in images],
                        sections=sections)


# ---------------------------------------------------------------------- from a store
def _vectors(table: pa.Table, column: str) -> np.ndarray:
    arr = table.column(column).combine_chunks()
    dim = arr.type.list_size
    return np.asarray(arr.flatten().to_numpy(zero_copy_only=False),
                      dtype=np.float32).reshape(-1, dim)


def collect(store: VectorStore, *, column: str | None, products: Sequence[str] = (),
            methods: Sequence[str] = ("centroid", "learned", "propensity"),
            holdout: float = 0.2, repeats: int = 3, max_rows: int = 50_000,
            map_rows: int = 5_000, label: str | None = None, positive: Any = None,
            seed: int = 0, title: str = "Kindred report", facts: dict[str, str] | None = None,
            learned_options: dict[str, Any] | None = None,
            propensity_options: dict[str, Any] | None = None) -> ReportData:
    """Gather the report's arrays from the ``customers`` table.

    Gain curves and their ROC-AUCs come from :func:`services.matching.evaluate.evaluate_holdout` with
    ``holdout``, ``seed`` and ``repeats`` (the figures are the repeats' means, the curves the
    first repeat's), exactly what ``kindred evaluate matching --product P`` computes with the
    same options. Score distributions, the risk section and the customer map read at most
    ``max_rows`` customers (a seeded sample above that). ``label`` (e.g. ``is_anomaly``, or
    ``Status`` with ``positive="bad"``) adds the risk ROC-AUC and curves against that column.
    A table without holdings (or ``column=None``, no vectors) gives only the sections it has
    data for: the risk distribution needs nothing but the written scores.
    """

    from .errors import ServiceError
    from .matching import build_query
    from .matching._data import holds
    from .matching.evaluate import evaluate_holdout

    info = store.table_info(CUSTOMERS)
    if column is not None:
        info.vector(column)
    names = info.schema.names
    if "holdings" not in names:
        products = ()
    read = ["customer_id", *[c for c in ("holdings", column, "risk_score", "risk_flag",
                                         "risk_model", label) if c and c in names]]
    data = store.to_arrow(CUSTOMERS, columns=list(dict.fromkeys(read)))
    rng = np.random.default_rng(seed)
    if data.num_rows > max_rows:
        data = data.take(pa.array(np.sort(rng.choice(data.num_rows, max_rows, replace=False))))
    if column is not None:
        data = data.filter(pc.is_valid(data.column(column)))
        X = _vectors(data, column)
    else:
        X = np.zeros((data.num_rows, 0), np.float32)
    rep = ReportData(title=title, facts=dict(facts or {}))
    usable = [m for m in methods if m == "propensity" or column is not None]
    holdings: dict[str, np.ndarray] = {}
    for product in products:
        held = holds(data, product)
        holdings[product] = held
        try:
            ev = evaluate_holdout(store, product, vector_columns=[column] if column else None,
                                  methods=usable, holdout=holdout, seed=seed, repeats=repeats,
                                  propensity_options=propensity_options,
                                  **(learned_options or {}))
        except ServiceError as exc:
            rep.facts[f"holdout {product}"] = f"not evaluated: {exc}"
            continue
        by = {(r.vector_column, r.method): r for r in ev.rows}
        for key, (y, s) in ev.curves.items():
            row = by[key]
            rep.curves.append(RankingCurve(product, key[1], y, s, auc=row.roc_auc))
            sd = f" +- {row.roc_auc_sd:.3f}" if row.roc_auc_sd is not None else ""
            rep.facts[f"holdout ROC-AUC {product} / {key[1]}"] = (
                f"{row.roc_auc:.3f}{sd} over {row.repeats} repeats "
                f"(lift@10% {row.lift_at_k:.2f})")
        for key, r in by.items():
            if r.error:
                rep.facts[f"holdout ROC-AUC {product} / {key[1]}"] = f"could not run: {r.error}"
        if ev.calibration:
            rep.calibration.append(CalibrationCurve(product, ev.calibration))
        for w in ev.warnings:
            rep.facts[f"warning {product}"] = w["message"]
        if ev.predictability and not ev.predictability["predictable"]:
            rep.facts[f"warning {product}"] = ev.predictability["message"]
        if column is not None and held.any() and (~held).any():
            q = build_query(store, product, "centroid", vector_column=column, min_consumers=2,
                            read_only=True)
            s = q.score(X)
            rep.distributions.append(ProductScores(product, s[held], s[~held]))
    flags = None
    if "risk_score" in data.column_names:
        rep.risk, flags = _risk_scores(store, data, label, positive)
        if rep.risk.auc is not None:
            rep.facts[f"risk ROC-AUC on {rep.risk.label}"] = f"{rep.risk.auc:.3f}"
    if column is not None and len(X):
        take = np.sort(rng.choice(len(X), min(map_rows, len(X)), replace=False))
        rep.customer_map = CustomerMap(
            column, X[take], {p: h[take] for p, h in holdings.items()},
            risk_flag=flags[take] if flags is not None else None)
    return rep


def _risk_scores(store: VectorStore, data: pa.Table, label: str | None, positive: Any
                 ) -> tuple[RiskScores, np.ndarray]:
    """The risk section's data: the written scores, the threshold and flag count the scoring
    run recorded (so the legend says what ``kindred risk score`` printed), and the label."""
    from sklearn.metrics import roc_auc_score

    from vectorstore import col

    from .risk.evaluate import labels

    scores = np.asarray(pc.fill_null(data.column("risk_score"), np.nan).to_numpy(
        zero_copy_only=False), dtype=np.float64)
    flags = np.asarray(pc.fill_null(data.column("risk_flag"), False).to_numpy(
        zero_copy_only=False), dtype=bool)
    ok = np.isfinite(scores)
    run = store.table_info(CUSTOMERS).metadata.get(META_RISK) or {}
    threshold = run.get("threshold")
    n_flagged = store.count(CUSTOMERS, col("risk_flag") == True)  # noqa: E712
    models = data.column("risk_model").drop_null().unique().to_pylist()
    risk = RiskScores(scores[ok], float(threshold) if threshold is not None else None,
                      model=", ".join(models), n_flagged=n_flagged)
    if label and label in data.column_names:
        y = labels(data.column(label).filter(pa.array(ok)), "customers", label, positive)
        if 0 < y.sum() < y.size:
            risk.y_true = y
            risk.auc = float(roc_auc_score(y, scores[ok]))
            risk.label = label if positive is None else f"{label} = {positive}"
    return risk, flags
