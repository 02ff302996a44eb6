"""Peer methods (GEARS, CPA) in their own environments, behind a versioned file contract.

- :mod:`lcdiff.peers.envs`: where each peer's virtual environment lives and how it is created
  (``lcdiff peers install gears|cpa``, ``make peers``).
- :mod:`lcdiff.peers.contract`: the files exchanged with a peer runner (AnnData in, predicted
  AnnData out) and their checks.
- :mod:`lcdiff.peers.adapters`: GEARS and CPA behind the baseline interface (registered as
  ``gears`` and ``cpa`` in :mod:`lcdiff.eval.baselines`).
- :mod:`lcdiff.peers.gene_ontology`: GEARS' GO inputs, built offline from local GO gene sets.
- ``gears_runner.py``, ``cpa_runner.py``: the scripts run *inside* the peer environments; they
  import the peer's stack and numpy/pandas/anndata only, never lcdiff.

Nothing here imports JAX, torch or a peer package into lcdiff's process.
"""
