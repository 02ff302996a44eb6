"""Peers (GEARS, CPA): environments, file contract, GO graph and adapters.

The fast tests need neither torch nor a peer environment: they check the adapter logic
(labels, GO graph, training layouts, scale conversion) and the file contract against a small
*contract test runner* (``tests/peer_contract_runner.py``, an echo of control cells that makes
no claim to be a peer). The slow tests run the real GEARS and CPA in their environments and
skip, saying why, when those are not installed (``lcdiff peers install gears|cpa``).
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData

import lcdiff as lc
from lcdiff.errors import ConfigError, DependencyError, PeerError, UnknownPerturbationError
from lcdiff.eval.benchmark import BenchmarkFailureWarning
from lcdiff.peers import adapters, contract, envs
from lcdiff.peers.gene_ontology import find_go_gmt, gene2go, go_edges, read_gmt

HERE = Path(__file__).resolve().parent
CONTRACT_RUNNER = HERE / "peer_contract_runner.py"

# Real gene symbols with GO biological-process terms (interferon signalling, Papalexi 2021).
REAL_GENES = ["STAT1", "JAK2", "IFNGR2", "STAT2", "IRF1", "CMTM6", "UBE2L6", "NFKBIA"]


# --- helpers --------------------------------------------------------------------------------
def write_gmt(path: Path, terms: dict[str, list[str]]) -> Path:
    with gzip.open(path, "wt") as handle:
        for term, genes in terms.items():
            handle.write("\t".join([term, f"name of {term}", *genes]) + "\n")
    return path


def fake_env(root: Path, name: str) -> Path:
    """A folder that passes envs.find: marker + an interpreter (this test's own Python)."""
    (root / "bin").mkdir(parents=True)
    python = root / "bin" / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    (root / envs.MARKER).write_text(
        json.dumps({"peer": name, "distribution": envs.spec(name).distribution, "version": "x"})
    )
    return root


def small_screen(genes: list[str], seed: int = 0) -> AnnData:
    """A prepared screen on the given gene symbols: ctrl, every single of the first 4, 3 doubles."""
    rng = np.random.default_rng(seed)
    targets = genes[:4]
    labels = ["ctrl"] * 150
    for g in targets:
        labels += [g] * 120
    for a, b in [(targets[0], targets[1]), (targets[1], targets[2]), (targets[2], targets[3])]:
        labels += [f"{a}+{b}"] * 120
    n, d = len(labels), len(genes)
    base = rng.gamma(2.0, 3.0, size=d)
    rates = np.tile(base, (n, 1))
    for i, lab in enumerate(labels):
        for g in lab.split("+"):
            if g != "ctrl":
                rates[i, genes.index(g)] *= 0.2
    counts = rng.poisson(rates * rng.lognormal(0, 0.2, size=(n, 1))).astype(np.float32)
    obs = pd.DataFrame({"perturbation": labels}, index=[f"c{i}" for i in range(n)])
    raw = AnnData(X=counts, obs=obs, var=pd.DataFrame(index=genes))
    return lc.pp.prepare(raw, n_genes=None, min_cells_per_perturbation=50)


# --- GO graph ---------------------------------------------------------------------------------
def test_gene2go_and_edges_follow_gears_definition(tmp_path):
    gmt = write_gmt(
        tmp_path / "go.gmt.gz",
        {"GO:1": ["A", "B", "C"], "GO:2": ["A", "B"], "GO:3": ["C", "Z"], "GO:4": ["D"]},
    )
    terms = read_gmt(gmt)
    assert terms["GO:1"] == {"A", "B", "C"}
    g2go = gene2go(terms, ["A", "B", "C", "D", "Q"])
    assert g2go == {
        "A": {"GO:1", "GO:2"},
        "B": {"GO:1", "GO:2"},
        "C": {"GO:1", "GO:3"},
        "D": {"GO:4"},
    }
    assert "Q" not in g2go  # no term: left out, as GEARS' perturbation graph would
    edges = go_edges(g2go)
    pairs = {(s, t): w for s, t, w in edges.itertuples(index=False)}
    assert pairs[("A", "B")] == pytest.approx(1.0)
    assert pairs[("A", "C")] == pytest.approx(1 / 3)  # Jaccard {1,2} vs {1,3}
    assert all(pairs[(g, g)] == 1.0 for g in g2go)  # GEARS keeps self-edges
    assert ("A", "D") not in pairs and ("D", "A") not in pairs  # Jaccard 0 <= 0.1
    assert all(w > 0.1 for w in pairs.values())


def test_read_gmt_refuses_garbage(tmp_path):
    bad = tmp_path / "bad.gmt"
    bad.write_text("only-one-field\n")
    with pytest.raises(lc.errors.DataFormatError):
        read_gmt(bad)


def test_find_go_gmt_order(tmp_path, monkeypatch):
    gmt = write_gmt(tmp_path / "a.gmt.gz", {"GO:1": ["A"]})
    assert find_go_gmt(gmt) == gmt
    monkeypatch.setenv("LCDIFF_GO_GMT", str(gmt))
    assert find_go_gmt() == gmt
    monkeypatch.setenv("LCDIFF_GO_GMT", str(tmp_path / "missing.gmt.gz"))
    with pytest.raises(lc.errors.InputNotFoundError, match="LCDIFF_GO_GMT"):
        find_go_gmt()


def test_shared_go_sets_cover_real_symbols_not_toy_genes(shared_data):
    terms = read_gmt(shared_data / "go-bp-human" / "go_bp_human.gmt.gz")
    g2go = gene2go(terms, REAL_GENES + ["G001", "G002"])
    assert {"STAT1", "JAK2", "IFNGR2"} <= set(g2go)
    assert "GO:0060333" in g2go["STAT1"]  # interferon-gamma-mediated signalling
    assert "G001" not in g2go and "G002" not in g2go


# --- labels -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "label,control,gears,cpa",
    [
        ("ctrl", "ctrl", "ctrl", "ctrl"),
        ("NT", "NT", "ctrl", "ctrl"),
        ("STAT1", "NT", "STAT1+ctrl", "STAT1"),
        ("STAT1+JAK2", "ctrl", "JAK2+STAT1", "JAK2+STAT1"),
    ],
)
def test_label_conversion_round_trips(label, control, gears, cpa):
    assert adapters.to_peer_label(label, control, single_suffix=True) == gears
    assert adapters.to_peer_label(label, control, single_suffix=False) == cpa
    canon = lc.data.labels.canonical_label(label, control)
    assert adapters.from_peer_label(gears, control) == canon
    assert adapters.from_peer_label(cpa, control) == canon
    if canon != control:  # GEARS also writes a single as "ctrl+A"
        first = canon.split("+")[0]
        assert adapters.from_peer_label(f"ctrl+{first}", control) == first


# --- environments -----------------------------------------------------------------------------
def test_env_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("LCDIFF_PEER_GEARS", raising=False)
    monkeypatch.setenv("LCDIFF_PEERS_DIR", str(tmp_path / "peers"))
    assert envs.env_dir("gears") == tmp_path / "peers" / "gears"
    monkeypatch.setenv("LCDIFF_PEER_GEARS", str(tmp_path / "own"))
    assert envs.env_dir("gears") == tmp_path / "own"
    assert envs.env_dir("gears", tmp_path / "explicit") == tmp_path / "explicit"
    monkeypatch.delenv("LCDIFF_PEERS_DIR")
    monkeypatch.delenv("LCDIFF_PEER_GEARS")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert envs.env_dir("cpa") == tmp_path / "cache" / "lcdiff" / "peers" / "cpa"
    with pytest.raises(ConfigError, match="Unknown peer"):
        envs.env_dir("scgpt")


@pytest.mark.parametrize("name", ["gears", "cpa"])
def test_missing_environment_is_a_clear_error(name, tmp_path, monkeypatch):
    monkeypatch.setenv("LCDIFF_PEERS_DIR", str(tmp_path))
    monkeypatch.delenv(f"LCDIFF_PEER_{name.upper()}", raising=False)
    with pytest.raises(DependencyError, match=f"lcdiff peers install {name}") as info:
        lc.baselines.get(name)
    assert "not installed" in str(info.value) and str(tmp_path / name) in str(info.value)
    # an unfinished install (folder without marker) is not taken for a working one
    (tmp_path / name / "bin").mkdir(parents=True)
    with pytest.raises(DependencyError, match="incomplete"):
        lc.baselines.get(name)
    assert not envs.is_installed(name)


def test_requirements_are_fully_pinned_and_shipped():
    for name in envs.PEERS:
        path = envs.requirements_path(name)
        lines = [ln.strip() for ln in path.read_text().splitlines()]
        pins = [ln for ln in lines if ln and not ln.startswith("#")]
        assert pins and all("==" in ln for ln in pins), path
        assert envs.runner_path(name).is_file()
    gears = envs.requirements_path("gears").read_text()
    assert "cell-gears==0.1.2" in gears and "torch-geometric==" in gears
    cpa_cmds = envs.install_commands("cpa", Path("/x/cpa"))
    assert any("--no-deps" in c and "cpa-tools==0.8.1" in c for c in cpa_cmds)
    assert cpa_cmds[0][1:3] == ["-m", "venv"]
    assert all(str(Path("/x/cpa")) in " ".join(c) for c in cpa_cmds[1:])  # never the core venv


def test_runners_import_no_lcdiff():
    for name in envs.PEERS:
        text = envs.runner_path(name).read_text()
        assert "import lcdiff" not in text and "from lcdiff" not in text
        assert "jax" not in text


def test_cli_peers_list_and_unknown(tmp_path, monkeypatch, capsys):
    from lcdiff.cli import main

    monkeypatch.setenv("LCDIFF_PEERS_DIR", str(tmp_path))
    for key in ("LCDIFF_PEER_GEARS", "LCDIFF_PEER_CPA"):
        monkeypatch.delenv(key, raising=False)
    assert main(["peers", "list"]) == 0
    out = capsys.readouterr().out
    assert "gears\tnot installed" in out and "lcdiff peers install cpa" in out
    assert main(["peers", "install", "scgpt"]) == 2
    assert "Unknown peer" in capsys.readouterr().err


# --- adapters: training layouts ---------------------------------------------------------------
@pytest.fixture
def peer_envs(tmp_path, monkeypatch):
    root = tmp_path / "peers"
    for name in envs.PEERS:
        fake_env(root / name, name)
    monkeypatch.setenv("LCDIFF_PEERS_DIR", str(root))
    for key in ("LCDIFF_PEER_GEARS", "LCDIFF_PEER_CPA"):
        monkeypatch.delenv(key, raising=False)
    return root


@pytest.fixture
def go_gmt(tmp_path, monkeypatch):
    terms = {
        "GO:0060333": ["STAT1", "JAK2", "IFNGR2", "IRF1"],
        "GO:0060337": ["STAT1", "STAT2", "IRF1"],
        "GO:0032480": ["NFKBIA", "STAT1"],
    }
    path = write_gmt(tmp_path / "go.gmt.gz", terms)
    monkeypatch.setenv("LCDIFF_GO_GMT", str(path))
    return path


def test_gears_skips_screen_without_go_terms(peer_envs, go_gmt):
    toy = small_screen([f"G{i:03d}" for i in range(1, 13)])
    method = lc.baselines.get("gears")
    with pytest.raises(PeerError, match="GEARS skipped: none of the screen's 4 perturbed genes"):
        method.fit(toy)


def test_gears_training_layout_and_cannot_predict(peer_envs, go_gmt):
    genes = ["STAT1", "JAK2", "IFNGR2", "CMTM6"] + [f"G{i:03d}" for i in range(8)]
    screen = small_screen(genes)
    split = lc.pp.split(screen, scheme="custom", test=["IFNGR2+JAK2"])
    method = lc.baselines.get("gears").fit(screen, split)
    ad = method.train_adata
    assert sp.issparse(ad.X) and list(ad.var["gene_name"]) == list(screen.var_names)
    conds = set(ad.obs["condition"])
    assert "ctrl" in conds and "STAT1+ctrl" in conds and "JAK2+STAT1" in conds
    assert "IFNGR2+JAK2" not in conds  # held out
    assert not any("CMTM6" in c for c in conds)  # no GO term in the test GMT: left out
    assert any("CMTM6" in n for n in method.notes)
    # GEARS trains on the screen's log1p CP10k values
    ctrl = screen.obs["perturbation"].astype(str).to_numpy() == "ctrl"
    np.testing.assert_allclose(
        ad.X[ad.obs["condition"].to_numpy() == "ctrl"].toarray().mean(0),
        np.asarray(screen.X[ctrl]).mean(0),
        rtol=1e-5,
    )
    assert set(ad.obs["cell_type"]) == {"cell"}
    assert method.cannot_predict("IFNGR2+JAK2") is None
    assert "no GO term" in method.cannot_predict("CMTM6+STAT1")
    assert "at most two" in method.cannot_predict("IFNGR2+JAK2+STAT1")
    with pytest.raises(UnknownPerturbationError, match="GO term"):
        method.predict(["CMTM6"], n_cells=5)


def test_cpa_training_layout_and_cannot_predict(peer_envs):
    genes = REAL_GENES + [f"G{i:03d}" for i in range(6)]
    screen = small_screen(genes)
    split = lc.pp.split(screen, scheme="custom", test=["JAK2+STAT1", "STAT2"])
    method = lc.baselines.get("cpa", seed=3).fit(screen, split)
    ad = method.train_adata
    assert set(ad.obs["condition"]) == {
        "ctrl",
        "STAT1",
        "JAK2",
        "IFNGR2",
        "IFNGR2+JAK2",
        "IFNGR2+STAT2",
    }
    # raw counts, not the log scale
    train_counts = screen.layers["counts"][
        screen.obs["perturbation"].astype(str).isin(list(split.train)).to_numpy()
    ]
    assert ad.X.sum() == pytest.approx(float(np.asarray(train_counts).sum()))
    assert {"smiles", "cell_type", "split"} <= set(ad.obs)
    valid = set(ad.obs.loc[ad.obs["split"] == "valid", "condition"])
    assert valid and all("+" in c for c in valid)  # validation = a share of training doubles
    assert method.cannot_predict("JAK2+STAT1") is None  # both genes have embeddings
    assert method.cannot_predict("STAT1+STAT2") is None  # STAT2 is trained within a double
    assert "perturbed in no training condition" in method.cannot_predict("NFKBIA")
    with pytest.raises(ConfigError, match="Unknown CPA setting"):
        lc.baselines.get("cpa", n_hiden=12)


# --- the file contract --------------------------------------------------------------------------
def _job(tmp_path, mode="ok", scale="counts"):
    work = tmp_path / "job"
    work.mkdir()
    genes = ["A", "B", "C"]
    x = sp.csr_matrix(np.arange(12, dtype=np.float32).reshape(4, 3) + 1)
    adata = AnnData(
        X=x,
        obs=pd.DataFrame({"condition": ["ctrl", "ctrl", "A", "A"]}, index=list("wxyz")),
        var=pd.DataFrame(index=genes),
    )
    contract.write_job(work, "test", adata, ["A", "A+B"], 7, 0, {"mode": mode, "scale": scale})
    return work, genes


@pytest.mark.parametrize("scale", ["counts", "log1p_cp10k"])
def test_contract_round_trip(tmp_path, scale):
    work, genes = _job(tmp_path, scale=scale)
    request = json.loads((work / contract.REQUEST).read_text())
    assert request["contract"] == contract.CONTRACT_VERSION and request["n_cells"] == 7
    result = contract.run_job(sys.executable, CONTRACT_RUNNER, work)
    assert result["status"] == "ok" and result["scale"] == scale
    pred = contract.read_prediction(work, result, ["A", "A+B"], genes, 7)
    assert pred.shape == (14, 3)
    assert list(pred.obs["query"]) == ["A"] * 7 + ["A+B"] * 7
    assert list(pred.var_names) == genes


@pytest.mark.parametrize(
    "mode,match",
    [
        ("error", "contract test runner failed on purpose"),
        ("crash", "without writing result.json"),
        ("wrong_genes", "genes"),
        ("too_few", "requested"),
        ("nan", "NaN"),
        ("old_contract", "contract version"),
        ("negative", "negative"),
    ],
)
def test_contract_violations_raise_peer_error(tmp_path, mode, match):
    work, genes = _job(tmp_path, mode=mode)
    with pytest.raises(PeerError, match=match):
        result = contract.run_job(sys.executable, CONTRACT_RUNNER, work)
        contract.read_prediction(work, result, ["A", "A+B"], genes, 7)


def test_contract_timeout(tmp_path):
    work, _ = _job(tmp_path, mode="sleep")
    with pytest.raises(PeerError, match="did not finish within 1 s"):
        contract.run_job(sys.executable, CONTRACT_RUNNER, work, timeout=1)


def test_adapter_converts_counts_and_labels_back(peer_envs, monkeypatch, tmp_path):
    """The CPA adapter end to end against the contract test runner (echoes control counts)."""
    monkeypatch.setattr(envs, "runner_path", lambda name: CONTRACT_RUNNER)
    genes = REAL_GENES + [f"G{i:03d}" for i in range(6)]
    screen = small_screen(genes)
    split = lc.pp.split(screen, scheme="custom", test=["JAK2+STAT1"])
    method = lc.baselines.get("cpa").fit(screen, split)
    pred = method.predict(["JAK2+STAT1", "STAT1"], n_cells=40, seed=1)
    assert list(pred.obs["perturbation"].unique()) == ["JAK2+STAT1", "STAT1"]
    assert list(pred.var_names) == list(screen.var_names) and pred.n_obs == 80
    # counts came back and were normalized to log1p CP10k: same scale as the screen's control
    ctrl = np.asarray(screen.X[screen.obs["perturbation"].astype(str).to_numpy() == "ctrl"])
    np.testing.assert_allclose(np.expm1(pred.X).sum(1), 1e4, rtol=1e-4)
    assert abs(pred.X.mean() - ctrl.mean()) < 0.05
    peer = pred.uns["lcdiff"]["peer"]
    assert peer["scale_returned"] == "counts" and peer["contract"] == contract.CONTRACT_VERSION
    assert method.peer_timings["fit_s"] >= 0 and method.peer_timings["predict_s"] >= 0


def test_benchmark_gives_failing_peer_a_row(tmp_path, monkeypatch):
    """A peer whose environment is missing fails alone; the other methods still run."""
    monkeypatch.setenv("LCDIFF_PEERS_DIR", str(tmp_path / "none"))
    for key in ("LCDIFF_PEER_GEARS", "LCDIFF_PEER_CPA"):
        monkeypatch.delenv(key, raising=False)
    screen = small_screen(REAL_GENES + [f"G{i:03d}" for i in range(6)])
    split = lc.pp.split(screen, scheme="custom", test=["JAK2+STAT1"])
    with pytest.warns(BenchmarkFailureWarning):
        result = lc.eval.benchmark(
            screen,
            methods=["additive", "gears", "cpa"],
            splits=[split],
            progress=False,
            n_cells=50,
        )
    assert set(result.failures["method"]) == {"gears", "cpa"}
    assert result.failures["error"].str.contains("lcdiff peers install").all()
    table = result.table()
    assert {"additive", "gears", "cpa"} <= set(map(str, table.index)) | set(table.get("method", []))
    gears_rows = result.long[result.long["method"] == "gears"]
    assert gears_rows["value"].isna().all()
    assert gears_rows["reason"].str.contains("fit failed").all()
    assert result.long.loc[result.long["method"] == "additive", "value"].notna().any()


# --- the real peers (slow; need `lcdiff peers install gears|cpa`) -------------------------------
def _need(name: str) -> None:
    if not envs.is_installed(name):
        pytest.skip(
            f"the {name} environment is not installed at {envs.env_dir(name)} "
            f"(run `lcdiff peers install {name}` or `make peers`)"
        )


def _sergio_small(shared_data, per_condition=80):
    import anndata

    raw = anndata.read_h5ad(shared_data / "sergio-screen-s7" / "sergio_screen.h5ad")
    labels = raw.obs["perturbation"].astype(str)
    keep_labels = [
        "ctrl",
        "FOXO1",
        "POU3F1",
        "MEF2A",
        "MEF2D",
        "TAF7",
        "CBFA2T2",
        "FOXO1+POU3F1",
        "CBFA2T2+TAF7",
    ]
    rng = np.random.default_rng(0)
    rows = np.concatenate(
        [
            rng.choice(
                np.flatnonzero(labels == lab),
                per_condition * (2 if lab == "ctrl" else 1),
                replace=False,
            )
            for lab in keep_labels
            if (labels == lab).any()
        ]
    )
    screen = lc.pp.prepare(raw[np.sort(rows)].copy(), n_genes=None, min_cells_per_perturbation=50)
    present = set(screen.obs["perturbation"].astype(str))
    test = [lab for lab in ["FOXO1+POU3F1", "CBFA2T2+TAF7"] if lab in present]
    return screen, lc.pp.split(screen, scheme="custom", test=test)


def _check_prediction(pred, screen, test, n_cells):
    assert list(pred.obs["perturbation"].astype(str).unique()) == list(test)
    assert pred.n_obs == n_cells * len(test) and list(pred.var_names) == list(screen.var_names)
    x = np.asarray(pred.X)
    assert np.isfinite(x).all()
    # the evaluation scale: log1p of counts per 10k, as the screen
    assert x.max() < np.log1p(1e4) + 1 and x.min() > -2
    return x


@pytest.mark.slow
def test_gears_end_to_end(shared_data):
    _need("gears")
    screen, split = _sergio_small(shared_data)
    method = lc.baselines.get("gears", epochs=1, threads=2, timeout=1800)
    pred = method.fit(screen, split).predict(list(split.test), n_cells=30, seed=0)
    x = _check_prediction(pred, screen, split.test, 30)
    # GEARS adds a predicted shift to control cells of the screen's own scale
    obs = np.asarray(screen.X)
    assert np.corrcoef(x.mean(0), obs.mean(0))[0, 1] > 0.8
    assert x.mean() == pytest.approx(obs.mean(), rel=0.35)
    assert pred.uns["lcdiff"]["peer"]["version"] == "0.1.2"
    assert pred.uns["lcdiff"]["peer"]["scale_returned"] == "log1p_cp10k"


@pytest.mark.slow
def test_cpa_end_to_end(shared_data):
    _need("cpa")
    screen, split = _sergio_small(shared_data)
    method = lc.baselines.get(
        "cpa",
        max_epochs=3,
        n_hidden=128,
        n_latent=32,
        n_epochs_adv_warmup=1,
        n_epochs_pretrain_ae=1,
        n_epochs_mixup_warmup=1,
        check_val_every_n_epoch=1,
        threads=2,
        timeout=1800,
    )
    pred = method.fit(screen, split).predict(list(split.test), n_cells=30, seed=0)
    x = _check_prediction(pred, screen, split.test, 30)
    # CPA returns NB means (counts), normalized here: every cell sums to 10k before log1p
    assert (x >= 0).all()
    np.testing.assert_allclose(np.expm1(x.astype(np.float64)).sum(1), 1e4, rtol=1e-3)
    assert pred.uns["lcdiff"]["peer"]["version"] == "0.8.1"
    assert pred.uns["lcdiff"]["peer"]["scale_returned"] == "counts"
