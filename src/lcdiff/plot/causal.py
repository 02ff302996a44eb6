"""Figures of a CLIPR causal matrix: the effect map ordered by module and the module dendrogram."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["effects_heatmap", "module_dendrogram"]

MODULE_CMAP = "tab20"


def _figure_and_ax(ax, figsize):
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def effects_heatmap(
    effects: pd.DataFrame,
    modules=None,
    ax=None,
    vmax: float | None = None,
    quantile: float = 0.99,
    cmap: str = "RdBu_r",
    show_labels: bool | None = None,
    title: str | None = "CLIPR causal effects (row = source, column = target)",
):
    """Heat map of a causal matrix, genes in module (dendrogram) order.

    Parameters
    ----------
    effects
        Causal matrix [genes × genes] (index = source, columns = target).
    modules
        Optional :class:`~lcdiff.causal.modules.GeneModules`; genes are drawn in its leaf order
        with a coloured module bar and lines between modules. Without it, the matrix order.
    ax
        Axes to draw into; a new figure when ``None``.
    vmax
        Symmetric colour limit; default the ``quantile`` of the off-diagonal magnitudes.
    quantile
        See ``vmax``.
    cmap
        Diverging colour map.
    show_labels
        Gene names on the axes; default only for at most 60 genes.
    title
        Axes title.

    Returns
    -------
    matplotlib ``Figure``.
    """
    import matplotlib
    from matplotlib.colors import ListedColormap

    if not isinstance(effects, pd.DataFrame):
        effects = pd.DataFrame(np.asarray(effects))
    order = list(effects.index) if modules is None else list(modules.order)
    mat = effects.loc[order, order].to_numpy(dtype=np.float64)
    if vmax is None:
        off = np.abs(mat[~np.eye(len(order), dtype=bool)]) if len(order) > 1 else np.abs(mat)
        vmax = float(np.quantile(off, quantile)) if off.size else 1.0
        vmax = vmax if vmax > 0 else 1.0
    fig, ax = _figure_and_ax(ax, (7, 6))
    image = ax.imshow(mat, cmap=cmap, vmin=-vmax, vmax=vmax, interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8, label="effect (source → target)")
    if modules is not None:
        labels = modules.labels.loc[order].to_numpy()
        bar = np.where(labels >= 0, labels % 20, np.nan)[None, :]
        cmap_mod = ListedColormap(matplotlib.colormaps[MODULE_CMAP](np.arange(20)))
        ax.imshow(
            bar,
            cmap=cmap_mod,
            vmin=0,
            vmax=19,
            aspect="auto",
            extent=(-0.5, len(order) - 0.5, -0.5 - 0.04 * len(order), -0.5),
            interpolation="nearest",
        )
        ax.set_ylim(len(order) - 0.5, -0.5 - 0.04 * len(order))
        edges = np.flatnonzero(np.diff(labels) != 0) + 0.5
        for edge in edges:
            ax.axhline(edge, color="k", lw=0.3)
            ax.axvline(edge, color="k", lw=0.3)
    if show_labels is None:
        show_labels = len(order) <= 60
    if show_labels:
        ax.set_xticks(range(len(order)), order, rotation=90, fontsize=6)
        ax.set_yticks(range(len(order)), order, fontsize=6)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_xlabel("target gene")
    ax.set_ylabel("source gene")
    if title:
        ax.set_title(title)
    return fig


def module_dendrogram(
    modules,
    ax=None,
    show_labels: bool | None = None,
    title: str | None = "Gene modules (average linkage on shortest-path distances)",
):
    """Dendrogram of :func:`~lcdiff.causal.modules.gene_modules`, with its cut height.

    Parameters
    ----------
    modules
        :class:`~lcdiff.causal.modules.GeneModules`.
    ax
        Axes to draw into; a new figure when ``None``.
    show_labels
        Gene names under the leaves; default only for at most 60 genes.
    title
        Axes title.

    Returns
    -------
    matplotlib ``Figure``.
    """
    from scipy.cluster.hierarchy import dendrogram

    genes = list(modules.labels.index)
    fig, ax = _figure_and_ax(ax, (9, 4))
    if show_labels is None:
        show_labels = len(genes) <= 60
    dendrogram(
        modules.linkage,
        ax=ax,
        labels=genes if show_labels else None,
        no_labels=not show_labels,
        color_threshold=modules.height,
        above_threshold_color="0.6",
        leaf_font_size=6,
    )
    ax.axhline(modules.height, color="k", ls="--", lw=0.8, label=f"cut = {modules.height:g}")
    ax.set_ylabel("shortest-path distance")
    n_modules = int((modules.labels.unique() >= 0).sum())
    ax.legend(loc="upper right", title=f"{n_modules} modules", fontsize=8)
    if title:
        ax.set_title(title)
    return fig
