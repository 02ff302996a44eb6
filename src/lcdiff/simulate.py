"""Simulators with known ground truth: the paper's linear SDE and a nonlinear count screen."""
