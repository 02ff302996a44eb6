"""Data layer: labels, normalization, the prepared-screen contract, preprocessing, splits,
loaders, simulators and embedded datasets."""
