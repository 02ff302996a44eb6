"""Gene modules of a causal matrix by hierarchical clustering of shortest-path distances.

Following lcd-evaluation §1.10(b): two genes are close when a chain of strong effects (in either
direction) connects them. Closeness ``C = |E| + |E|ᵀ``, edge length ``1 / (C + ε)``,
all-pairs shortest paths (Dijkstra), symmetrized by the elementwise minimum; unreachable pairs
get ``5 ×`` the largest finite distance. Average linkage with optimal leaf ordering, cut at a
height (0.175 in the paper's Replogle analysis); clusters smaller than ``min_size`` become −1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.cluster.hierarchy import fcluster, leaves_list, linkage
from scipy.sparse.csgraph import shortest_path
from scipy.spatial.distance import squareform

from lcdiff.errors import LcdiffError

NO_MODULE = -1


class ModuleError(LcdiffError, ValueError):
    """The causal matrix cannot be clustered as given."""


@dataclass
class GeneModules:
    """Result of :func:`gene_modules`.

    Attributes
    ----------
    labels
        Module of each gene (index = gene, in the matrix's order); ``-1`` = in no module.
        Modules are numbered 0, 1, ... in dendrogram leaf order.
    linkage
        scipy linkage matrix ``[d − 1, 4]`` (average linkage, optimal leaf ordering).
    order
        Gene names in dendrogram leaf order.
    distances
        Symmetric shortest-path distance matrix [genes × genes].
    height
        Cut height used.
    """

    labels: pd.Series
    linkage: np.ndarray
    order: list[str]
    distances: pd.DataFrame
    height: float

    def members(self) -> dict[int, list[str]]:
        """Module id → its genes in leaf order (genes in no module are left out)."""
        out: dict[int, list[str]] = {}
        for gene in self.order:
            label = int(self.labels[gene])
            if label != NO_MODULE:
                out.setdefault(label, []).append(gene)
        return dict(sorted(out.items()))


def _as_frame(effects) -> pd.DataFrame:
    if isinstance(effects, pd.DataFrame):
        frame = effects
    else:
        arr = np.asarray(effects, dtype=np.float64)
        frame = pd.DataFrame(
            arr,
            index=[str(i) for i in range(arr.shape[0])],
            columns=[str(i) for i in range(arr.shape[-1])],
        )
    if frame.shape[0] != frame.shape[1] or list(frame.index) != list(frame.columns):
        raise ModuleError(
            "effects must be a square gene × gene matrix with the same genes, in the same order, "
            f"as rows and columns; got shape {frame.shape}."
        )
    if frame.shape[0] < 2:
        raise ModuleError("Clustering needs at least 2 genes.")
    if not np.isfinite(frame.to_numpy(dtype=np.float64)).all():
        raise ModuleError("effects contains NaN or inf; clean the matrix before clustering.")
    return frame


def shortest_path_distances(
    effects, eps: float = 1e-10, unreachable_factor: float = 5.0
) -> np.ndarray:
    """Symmetric shortest-path distances between genes of a causal matrix.

    Parameters
    ----------
    effects
        [d, d] causal matrix (array or DataFrame); the sign is ignored.
    eps
        Added to the closeness before inverting it into an edge length.
    unreachable_factor
        Unreachable pairs get this multiple of the largest finite distance.

    Returns
    -------
    [d, d] distances with a zero diagonal.
    """
    arr = np.abs(_as_frame(effects).to_numpy(dtype=np.float64))
    closeness = arr + arr.T
    with np.errstate(divide="ignore"):  # eps = 0 makes absent edges infinitely long
        lengths = 1.0 / (closeness + eps)
    np.fill_diagonal(lengths, 0.0)  # csgraph reads 0 as "no edge", which is right on the diagonal
    dist = shortest_path(lengths, method="D", directed=True)
    dist = np.minimum(dist, dist.T)
    finite = np.isfinite(dist)
    if not finite.all():
        largest = dist[finite].max() if finite.any() else 1.0
        dist[~finite] = unreachable_factor * largest
    np.fill_diagonal(dist, 0.0)
    return dist


def gene_modules(
    effects,
    height: float = 0.175,
    min_size: int = 5,
    eps: float = 1e-10,
    unreachable_factor: float = 5.0,
) -> GeneModules:
    """Gene modules of a causal matrix (average linkage on shortest-path distances).

    Parameters
    ----------
    effects
        [genes × genes] causal matrix (DataFrame with gene names, or an array).
    height
        Cut height of the dendrogram, in distance units (1 / effect size).
    min_size
        Smallest module kept; genes of smaller clusters get label −1.
    eps, unreachable_factor
        See :func:`shortest_path_distances`.

    Returns
    -------
    :class:`GeneModules`.

    Raises
    ------
    ModuleError
        For a non-square or non-finite matrix, or invalid parameters.
    """
    if not height > 0:
        raise ModuleError(f"height must be positive; got {height}.")
    if min_size < 1:
        raise ModuleError(f"min_size must be at least 1; got {min_size}.")
    frame = _as_frame(effects)
    genes = [str(g) for g in frame.index]
    dist = shortest_path_distances(frame, eps=eps, unreachable_factor=unreachable_factor)
    tree = linkage(squareform(dist, checks=False), method="average", optimal_ordering=True)
    flat = fcluster(tree, t=height, criterion="distance")
    leaf_order = leaves_list(tree)
    sizes = pd.Series(flat).value_counts()
    labels = np.full(len(genes), NO_MODULE, dtype=int)
    next_id = 0
    seen: dict[int, int] = {}
    for idx in leaf_order:  # number modules in leaf order
        cluster = int(flat[idx])
        if sizes[cluster] < min_size:
            continue
        if cluster not in seen:
            seen[cluster] = next_id
            next_id += 1
        labels[idx] = seen[cluster]
    return GeneModules(
        labels=pd.Series(labels, index=genes, name="module"),
        linkage=tree,
        order=[genes[i] for i in leaf_order],
        distances=pd.DataFrame(dist, index=genes, columns=genes),
        height=float(height),
    )
