"""The visual report: a self-contained HTML page (PNG plots embedded as data URIs) plus the PNGs.

Plots are drawn with matplotlib's Agg backend from plain arrays, so the report can be built
from any source of scores; :meth:`services.facade.Kindred.report` gathers those arrays from the
store. Sections:

- cumulative gain and lift curves per product and method (holdout or label evaluation);
- score distributions of current consumers vs prospects for each product;
- the risk score distribution with the flag threshold;
- a 2-D map of customers (PCA of a vector column) coloured by holdings and by risk flag.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from .models import ReportResult


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
    threshold: float | None
    model: str = ""
    auc: float | None = None
    """ROC-AUC on labelled/planted anomalies, when known."""


@dataclass
class CustomerMap:
    """Customer vectors to project, with the holdings to colour by and the risk flags."""

    column: str
    vectors: np.ndarray
    holdings: dict[str, np.ndarray] = field(default_factory=dict)
    """product -> boolean array (customer holds it)."""
    risk_flag: np.ndarray | None = None


@dataclass
class ReportData:
    title: str = "Kindred report"
    subtitle: str = ""
    curves: list[RankingCurve] = field(default_factory=list)
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
    ax_g.legend(fontsize=8)
    ax_l.legend(fontsize=8)
    return _save(fig, path)


def plot_distributions(ps: ProductScores, path: Path) -> Path:
    """Histogram of match scores: consumers vs prospects."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    both = np.concatenate([ps.consumers, ps.prospects]) if len(ps.consumers) + len(
        ps.prospects) else np.zeros(1)
    bins = np.linspace(float(np.min(both)), float(np.max(both)) + 1e-9, 40)
    ax.hist(ps.prospects, bins=bins, alpha=0.6, density=True,
            label=f"prospects (n={len(ps.prospects):,})")
    ax.hist(ps.consumers, bins=bins, alpha=0.6, density=True,
            label=f"consumers (n={len(ps.consumers):,})")
    ax.set(title=f"Match scores: {ps.product}", xlabel="score", ylabel="density")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_risk(risk: RiskScores, path: Path) -> Path:
    """Histogram of risk scores with the flag threshold."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.hist(risk.scores, bins=60, color="#4c72b0")
    if risk.threshold is not None:
        n_flag = int((risk.scores >= risk.threshold).sum())
        ax.axvline(risk.threshold, color="#c44e52", ls="--",
                   label=f"flag threshold {risk.threshold:.3g} ({n_flag:,} flagged)")
        ax.legend(fontsize=8)
    ax.set_yscale("log")
    title = "Risk scores" + (f" ({risk.model})" if risk.model else "")
    ax.set(title=title, xlabel="anomaly score (higher = more unusual)", ylabel="customers")
    return _save(fig, path)


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
