"""Figures that put predicted expression next to the observed cells.

- :func:`marker_distributions`: for a few conditions, the distribution of each of their top
  marker genes in the observed cells and in every method's predicted cells (step histograms on
  the log1p CP10k scale, so the mass at zero stays visible).
- :func:`mean_shift_scatter`: per gene and condition, the predicted change of the mean against
  the observed change (both relative to control cells), one panel per method.

Both take the observed screen first (a prepared screen, or any AnnData with
``obs["perturbation"]`` and ``X`` on the log1p CP10k scale) and a mapping method name →
predictions (AnnData as returned by ``LCD.predict`` or a baseline's ``predict``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from anndata import AnnData

from lcdiff.data.normalize import dense
from lcdiff.data.screen import PERTURBATION_KEY, UNS_KEY

__all__ = ["marker_distributions", "mean_shift_scatter"]

OBSERVED_COLOR = "#4d4d4d"
METHOD_COLORS = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def _cells(adata: AnnData, label: str, genes: Sequence[str] | None = None) -> np.ndarray:
    """Dense ``[n_cells, n_genes]`` X of one condition, columns in the order of ``genes``."""
    mask = (adata.obs[PERTURBATION_KEY].astype(str) == label).to_numpy()
    if not mask.any():
        from lcdiff.errors import UnknownPerturbationError

        raise UnknownPerturbationError(
            f"No cells with perturbation {label!r} to plot; the data holds "
            f"{sorted(adata.obs[PERTURBATION_KEY].astype(str).unique())[:10]}..."
        )
    sub = adata[mask]
    if genes is not None:
        missing = [g for g in genes if g not in sub.var_names]
        if missing:
            from lcdiff.errors import UnknownGeneError

            raise UnknownGeneError(f"Genes {missing} are not in this AnnData's var_names.")
        sub = sub[:, list(genes)]
    return np.asarray(dense(sub.X), dtype=np.float64)


def _control_label(adata: AnnData, control: str | None) -> str:
    if control is not None:
        return control
    info = adata.uns.get(UNS_KEY, {})
    return str(info.get("control", "ctrl")) if isinstance(info, Mapping) else "ctrl"


def _top_genes(observed: AnnData, label: str, n_genes: int, control: str) -> list[str]:
    """The condition's stored markers, else the genes whose mean moves most from control."""
    info = observed.uns.get(UNS_KEY, {})
    markers = info.get("markers", {}) if isinstance(info, Mapping) else {}
    if label in markers and len(markers[label]) > 0:
        return [str(g) for g in list(markers[label])[:n_genes]]
    shift = _cells(observed, label).mean(0) - _cells(observed, control).mean(0)
    order = np.argsort(-np.abs(shift), kind="stable")[:n_genes]
    return [str(observed.var_names[i]) for i in order]


def marker_distributions(
    observed: AnnData,
    predictions: Mapping[str, AnnData],
    labels: str | Sequence[str],
    *,
    n_genes: int = 5,
    genes: Mapping[str, Sequence[str]] | None = None,
    control: str | None = None,
    bins: int = 30,
):
    """Observed vs predicted distributions of each condition's top marker genes.

    Parameters
    ----------
    observed
        Observed cells ``[n_cells, n_genes]`` with ``obs["perturbation"]``; ``X`` on the log1p
        CP10k scale. Markers are read from ``uns["lcdiff"]["markers"]`` when present (the
        prepared-screen contract), else the genes whose mean moves most from the control cells.
    predictions
        Method name → predicted cells (same genes; ``X`` on the same scale).
    labels
        Condition(s) to show, one row each.
    n_genes
        Genes (columns) per condition.
    genes
        Optional label → genes to show instead of the markers.
    control
        Control label (default: ``uns["lcdiff"]["control"]`` or ``"ctrl"``).
    bins
        Histogram bins per panel (shared by observed and predicted cells).

    Returns
    -------
    matplotlib ``Figure`` with ``len(labels)`` rows and ``n_genes`` columns.
    """
    import matplotlib.pyplot as plt

    labels = [labels] if isinstance(labels, str) else list(labels)
    if not labels:
        raise ValueError("Give at least one condition label to plot.")
    control = _control_label(observed, control)
    fig, axes = plt.subplots(
        len(labels), n_genes, figsize=(2.3 * n_genes, 2.0 * len(labels) + 0.6), squeeze=False
    )
    for row, label in enumerate(labels):
        row_genes = list(genes[label]) if genes and label in genes else None
        row_genes = row_genes or _top_genes(observed, label, n_genes, control)
        true = _cells(observed, label, row_genes)
        preds = {name: _cells(p, label, row_genes) for name, p in predictions.items()}
        for col in range(n_genes):
            ax = axes[row, col]
            if col >= len(row_genes):
                ax.axis("off")
                continue
            values = [true[:, col]] + [p[:, col] for p in preds.values()]
            lo = min(v.min() for v in values)
            hi = max(max(v.max() for v in values), lo + 1e-3)
            edges = np.linspace(lo, hi, bins + 1)
            ax.hist(
                true[:, col],
                bins=edges,
                density=True,
                color=OBSERVED_COLOR,
                alpha=0.35,
                label="observed",
            )
            for i, (name, p) in enumerate(preds.items()):
                ax.hist(
                    p[:, col],
                    bins=edges,
                    density=True,
                    histtype="step",
                    linewidth=1.5,
                    color=METHOD_COLORS[i % len(METHOD_COLORS)],
                    label=name,
                )
            ax.set_title(row_genes[col], fontsize=9)
            ax.set_yticks([])
            ax.tick_params(labelsize=7)
            if col == 0:
                ax.set_ylabel(label, fontsize=9)
    fig.supxlabel("expression, log1p(counts per 10k)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="upper center", ncol=len(names), fontsize=8, frameon=False)
    return fig


def _mean_shifts(
    adata: AnnData, labels: Sequence[str], genes: Sequence[str], control_mean: np.ndarray
) -> np.ndarray:
    """``[n_labels, n_genes]`` condition mean minus control mean."""
    return np.stack([_cells(adata, lab, genes).mean(0) - control_mean for lab in labels])


def mean_shift_scatter(
    observed: AnnData,
    predictions: Mapping[str, AnnData],
    labels: Sequence[str] | None = None,
    *,
    control: str | None = None,
):
    """Predicted vs observed change of each gene's mean, one panel per method.

    Each point is one gene in one condition: x = observed mean minus the control mean, y = the
    method's predicted mean minus the same control mean. Points on the diagonal are perfect;
    the title gives the Pearson correlation and the root-mean-square error over all points.

    Parameters
    ----------
    observed
        Observed cells including the control cells, ``obs["perturbation"]``, ``X`` log1p CP10k.
    predictions
        Method name → predicted cells (e.g. ``{"LCD": ..., "additive": ...}``).
    labels
        Conditions to pool (default: every condition that all predictions contain).
    control
        Control label (default: ``uns["lcdiff"]["control"]`` or ``"ctrl"``).

    Returns
    -------
    matplotlib ``Figure`` with one square panel per method, sharing axes.
    """
    import matplotlib.pyplot as plt

    if not predictions:
        raise ValueError("Give at least one method's predictions to plot.")
    control = _control_label(observed, control)
    if labels is None:
        common = set.intersection(
            *(set(p.obs[PERTURBATION_KEY].astype(str)) for p in predictions.values())
        )
        labels = sorted(common & set(observed.obs[PERTURBATION_KEY].astype(str)) - {control})
    labels = list(labels)
    genes = list(observed.var_names)
    control_mean = _cells(observed, control).mean(0)
    true = _mean_shifts(observed, labels, genes, control_mean).ravel()
    shifts = {
        name: _mean_shifts(p, labels, genes, control_mean).ravel()
        for name, p in predictions.items()
    }
    lim = max(np.abs(true).max(), *(np.abs(s).max() for s in shifts.values())) * 1.05 or 1.0
    n = len(shifts)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.8), squeeze=False, sharex=True, sharey=True)
    for i, (ax, (name, pred)) in enumerate(zip(axes[0], shifts.items(), strict=True)):
        ax.axline((0, 0), slope=1, color="#999999", linewidth=0.8, zorder=0)
        ax.scatter(
            true, pred, s=5, alpha=0.45, linewidths=0, color=METHOD_COLORS[i % len(METHOD_COLORS)]
        )
        r = np.corrcoef(true, pred)[0, 1] if true.std() > 0 and pred.std() > 0 else np.nan
        rmse = float(np.sqrt(np.mean((pred - true) ** 2)))
        ax.set_title(f"{name}\nPearson r = {r:.2f}, RMSE = {rmse:.3f}", fontsize=9)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xlabel("observed change of mean", fontsize=9)
        if i == 0:
            ax.set_ylabel("predicted change of mean", fontsize=9)
    fig.tight_layout()
    return fig
