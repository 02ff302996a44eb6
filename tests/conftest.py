"""Shared fixtures. Tests that read ../shared/data skip cleanly where it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Keep JAX on CPU and quiet in tests; tests must not depend on an accelerator.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """Path to ../shared/data; skips the test where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA
