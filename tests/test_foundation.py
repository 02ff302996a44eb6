import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

import lcdiff as lc
from lcdiff.data.labels import canonical_label, format_label, n_targets, parse_label
from lcdiff.data.normalize import log1p_cp10k
from lcdiff.errors import InvalidLabelError, LcdiffError


def test_import_is_lazy_and_fast():
    # Importing the package must not import JAX (slow) or anything heavy.
    code = "import sys, lcdiff; print('jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert lc.__version__


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("A", ("A",)),
        ("B+A", ("A", "B")),
        ("A+ctrl", ("A",)),
        ("ctrl+A", ("A",)),
        ("ctrl", ()),
        ("C+A+B", ("A", "B", "C")),
        ("A+A", ("A",)),
    ],
)
def test_parse_label(label, expected):
    assert parse_label(label) == expected


@pytest.mark.parametrize("bad", ["", " A", "A ", "A++B", "+A", "A+", "A+ B", None, 3])
def test_parse_label_rejects_malformed(bad):
    with pytest.raises(InvalidLabelError) as info:
        parse_label(bad)
    assert isinstance(info.value, LcdiffError)
    assert isinstance(info.value, ValueError)


def test_canonical_and_format():
    assert canonical_label("KLF1+GATA1") == "GATA1+KLF1"
    assert canonical_label("NT", control="NT") == "NT"
    assert format_label([], control="NT") == "NT"
    assert n_targets("A+B+C") == 3


def test_log1p_cp10k_matches_scanpy():
    import anndata as ad
    import scanpy as sc

    rng = np.random.default_rng(0)
    x = rng.poisson(2.0, size=(30, 12)).astype(np.float32)
    x[3] = 0  # an empty cell stays empty
    a = ad.AnnData(x.copy())
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    np.testing.assert_allclose(log1p_cp10k(x), a.X, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(log1p_cp10k(sp.csr_matrix(x)), a.X, rtol=1e-5, atol=1e-6)
    assert np.all(log1p_cp10k(x)[3] == 0)
