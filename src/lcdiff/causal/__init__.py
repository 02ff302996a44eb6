"""CLIPR: causal effects read off a fitted model, and the analyses downstream of them.

- :func:`clipr_solve` / :func:`clipr`: the published estimator (fixed points + drift at the origin);
- :func:`moments_solve`: a directed estimator from stationary moments (Lyapunov + mean shifts);
- :class:`LinearSDEOracle`: an exactly linear model with the CLIPR-facing interface of ``lc.LCD``;
- modules, enrichment and the DE-implication test (lcd-evaluation §1.10).
"""

from lcdiff.causal.clipr import (
    CliprError,
    CliprResult,
    bias_and_shifts,
    causal_frame,
    clipr,
    clipr_solve,
    estimate_covariance,
    query_labels,
)
from lcdiff.causal.enrichment import EnrichmentError, GeneSet, enrichment, read_gmt
from lcdiff.causal.implication import (
    ImplicationError,
    de_implication,
    effect_threshold,
    implication_test,
    single_gene_de_signs,
    wilson_interval,
)
from lcdiff.causal.modules import GeneModules, ModuleError, gene_modules, shortest_path_distances
from lcdiff.causal.moments import MomentsError, MomentsSolution, moments_solve, shrink_covariance
from lcdiff.causal.oracle import LinearSDEOracle, OracleError, stationary_covariance

__all__ = [
    "CliprError",
    "CliprResult",
    "EnrichmentError",
    "GeneModules",
    "GeneSet",
    "ImplicationError",
    "ModuleError",
    "LinearSDEOracle",
    "MomentsError",
    "MomentsSolution",
    "OracleError",
    "bias_and_shifts",
    "causal_frame",
    "clipr",
    "clipr_solve",
    "de_implication",
    "effect_threshold",
    "enrichment",
    "estimate_covariance",
    "gene_modules",
    "implication_test",
    "moments_solve",
    "query_labels",
    "read_gmt",
    "shortest_path_distances",
    "shrink_covariance",
    "single_gene_de_signs",
    "stationary_covariance",
    "wilson_interval",
]
