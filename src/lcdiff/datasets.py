"""Datasets: the embedded default screen, bundled real data, and loaders for raw layouts."""
