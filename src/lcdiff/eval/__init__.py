"""lcdiff.eval"""

# Metrics (metrics, gi, causal: lcd-evaluation.md §3–4); runner, tables and export (§3.8, §5).
from lcdiff.eval.benchmark import BenchmarkResult, benchmark  # noqa: F401
from lcdiff.eval.causal import (  # noqa: F401
    causal_auroc,
    causal_f1,
    causal_metrics,
    causal_pearson,
)
from lcdiff.eval.export import cell_eval_command, export_cell_eval  # noqa: F401
from lcdiff.eval.gi import (  # noqa: F401
    calibrate_gi_thresholds,
    classify_gi,
    distance_correlation,
    gi_deltas,
    gi_gene_mask,
    gi_scores,
    gi_scores_from_deltas,
    quantile_gi_thresholds,
)
from lcdiff.eval.metrics import (  # noqa: F401
    DETest,
    average_precision,
    binary_auroc,
    condition_metrics,
    de_calls,
    de_classification,
    de_test,
    energy_distance,
    gene_masks,
    mmd,
    pearson_delta,
    rmse_mean,
    topk_metrics,
    w1_marginals,
)
from lcdiff.eval.tables import (  # noqa: F401
    higher_is_better,
    summary_markdown,
    summary_table,
    wide_table,
)
