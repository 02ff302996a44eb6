"""Tools that act on a fitted model: CLIPR and its downstream analyses."""

from lcdiff.causal.clipr import clipr  # noqa: F401
from lcdiff.causal.enrichment import enrichment, read_gmt  # noqa: F401
from lcdiff.causal.implication import (  # noqa: F401
    de_implication,
    implication_test,
    single_gene_de_signs,
)
from lcdiff.causal.modules import gene_modules  # noqa: F401
