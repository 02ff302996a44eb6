"""Preprocessing: ``validate``, ``prepare``, ``split`` and ``assign_perturbations``."""

# Each helper module adds its public names here.
