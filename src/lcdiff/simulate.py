"""Simulators with known ground truth: the paper's linear SDE and a nonlinear count screen."""

from lcdiff.data.simulate import additivity_report, linear_sde, screen  # noqa: F401
