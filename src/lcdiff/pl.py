"""Plots (matplotlib). Functions take the object to draw first and return a ``Figure``."""

from lcdiff.plot.benchmark import benchmark_boxplots  # noqa: F401
from lcdiff.plot.causal import effects_heatmap, module_dendrogram  # noqa: F401
from lcdiff.plot.predictions import marker_distributions, mean_shift_scatter  # noqa: F401

effects = effects_heatmap  # the short name used in the design examples (lc.pl.effects)
