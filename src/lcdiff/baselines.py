"""Baselines with the same ``fit(screen, split)`` / ``predict(labels, n_cells)`` interface as LCD."""
