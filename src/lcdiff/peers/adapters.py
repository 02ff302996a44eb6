"""GEARS and CPA behind lcdiff's baseline interface, run in their own environments.

Both adapters follow the interface of :mod:`lcdiff.eval.baselines` (``fit(screen, split)``,
``cannot_predict(label)``, ``predict(labels, n_cells, seed)`` → AnnData on the log1p CP10k
scale) and are registered there as ``gears`` and ``cpa``. They do the peer-specific work on
lcdiff's side (label conversion, control handling, gene-ontology files, the training layout,
scale conversion of the answer) and leave the training to the peer's runner in the peer's own
environment (:mod:`lcdiff.peers.contract`).

A peer model lives in the peer's process, so ``fit`` only checks and stages the training data;
the peer trains and predicts in one run when ``predict`` is called, and reports its own fit
and predict times (``peer_timings``, also in ``uns["lcdiff"]["peer"]``). Calling ``predict``
again trains again (same seed, same settings).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from lcdiff.data.labels import canonical_label, parse_label
from lcdiff.data.screen import PERTURBATION_KEY, control_label
from lcdiff.errors import ConfigError, NotFittedError, PeerError, UnknownPerturbationError
from lcdiff.peers import contract, envs

#: The control label GEARS and CPA expect.
PEER_CONTROL = "ctrl"


def train_subset(screen: AnnData, split=None) -> tuple[AnnData, str]:
    """The training cells of a prepared screen and its control label.

    Parameters
    ----------
    screen
        A prepared screen (``lc.pp.prepare``).
    split
        An object with ``train`` labels, or None for every cell.
    """
    control = control_label(screen)
    labels = screen.obs[PERTURBATION_KEY].astype(str)
    if split is None:
        keep = np.ones(screen.n_obs, dtype=bool)
    else:
        train = {canonical_label(str(lab), control) for lab in split.train}
        keep = labels.isin(train).to_numpy()
    sub = screen[keep]
    if not (sub.obs[PERTURBATION_KEY].astype(str) == control).any():
        raise PeerError(
            f"The training set has no control cells (label {control!r}); GEARS and CPA need them."
        )
    return sub, control


def to_peer_label(label: str, control: str, single_suffix: bool) -> str:
    """An lcdiff label in GEARS/CPA form.

    Parameters
    ----------
    label
        Any lcdiff label (``"A"``, ``"A+B"``, the control).
    control
        lcdiff's control label.
    single_suffix
        GEARS writes a single as ``"A+ctrl"``; CPA as ``"A"``.

    Returns
    -------
    ``"ctrl"`` for the control, ``"A+ctrl"`` or ``"A"`` for a single, ``"A+B"`` otherwise.
    """
    genes = parse_label(label, control)
    if not genes:
        return PEER_CONTROL
    if len(genes) == 1 and single_suffix:
        return f"{genes[0]}+{PEER_CONTROL}"
    return "+".join(genes)


def from_peer_label(label: str, control: str) -> str:
    """A GEARS/CPA label (``"ctrl"``, ``"A+ctrl"``, ``"ctrl+A"``, ``"A+B"``) in lcdiff form."""
    genes = [g for g in str(label).split("+") if g and g != PEER_CONTROL]
    return canonical_label("+".join(genes), control) if genes else control


class PeerMethod:
    """Common machinery of the GEARS and CPA adapters.

    Parameters
    ----------
    seed
        Seed of the peer's training and sampling.
    prefix
        Folder of the peer environment (default :func:`lcdiff.peers.envs.env_dir`).
    timeout
        Seconds before the peer run is stopped (None: no limit).
    threads
        Torch/BLAS threads of the peer process (None: the peer's default).
    workdir
        Folder for the job files (default: a new temporary folder, removed after each run
        unless ``keep_files``).
    keep_files
        Keep the job folder (request, input, prediction, log) for inspection.
    **settings
        The peer's hyperparameters (see the subclass); unknown names are refused.

    Raises
    ------
    DependencyError
        When the peer's environment is not installed (the message says how to install it).
    ConfigError
        For an unknown setting.
    """

    name = ""
    display_name = ""
    defaults: dict = {}
    single_suffix = False

    def __init__(
        self,
        seed: int = 0,
        prefix: str | None = None,
        timeout: float | None = None,
        threads: int | None = None,
        workdir: str | None = None,
        keep_files: bool = False,
        **settings,
    ) -> None:
        unknown = sorted(set(settings) - set(self.defaults))
        if unknown:
            raise ConfigError(
                f"Unknown {self.display_name} setting(s) {unknown}; known: {sorted(self.defaults)}."
            )
        self.env = envs.find(self.name, prefix)  # DependencyError when missing
        self.seed = int(seed)
        self.settings = {**self.defaults, **settings}
        self.timeout = timeout
        self.threads = threads
        self.workdir = workdir
        self.keep_files = keep_files
        self.genes: list[str] | None = None
        self.control: str | None = None
        self.train_adata: AnnData | None = None
        self.notes: list[str] = []
        self.peer_timings: dict | None = None
        self.last_result: dict | None = None

    def __repr__(self) -> str:
        state = "fitted" if self.is_fitted else "not fitted"
        return f"{type(self).__name__}({state}, env={self.env.root})"

    @property
    def is_fitted(self) -> bool:
        return self.train_adata is not None

    # -- interface --
    def fit(self, screen: AnnData, split=None) -> PeerMethod:
        """Check and stage the training conditions of ``split`` (every condition when None).

        The peer itself trains when :meth:`predict` runs (see the module docstring).
        """
        sub, control = train_subset(screen, split)
        self.genes = [str(g) for g in screen.var_names]
        self.control = control
        self.notes = []
        self.train_adata = self._training_input(sub, control)
        return self

    def cannot_predict(self, label: str) -> str | None:
        """Why ``label`` cannot be predicted, or None when it can."""
        self._fitted()
        return self._cannot_predict(canonical_label(str(label), self.control))

    def predict(self, labels: str | Iterable[str], n_cells: int = 1000, seed: int = 0) -> AnnData:
        """Train the peer on the staged data and sample ``n_cells`` cells per label.

        Returns
        -------
        AnnData ``[len(labels) * n_cells, genes]``, ``obs["perturbation"]``, ``X`` = log1p
        CP10k, ``uns["lcdiff"]["peer"]`` with the peer's version, settings, times and notes.

        Raises
        ------
        UnknownPerturbationError
            For a label the peer cannot predict (the message says why).
        PeerError
            When the peer run fails or breaks the file contract.
        """
        from lcdiff.eval.baselines import prediction_anndata

        self._fitted()
        if int(n_cells) < 1:
            raise ConfigError(f"n_cells must be at least 1, got {n_cells}.")
        queried = [canonical_label(str(lab), self.control) for lab in _as_list(labels)]
        for lab in queried:
            reason = self._cannot_predict(lab)
            if reason is not None:
                raise UnknownPerturbationError(f"{self.name} cannot predict {lab!r}: {reason}")
        peer_queries = [to_peer_label(lab, self.control, self.single_suffix) for lab in queried]
        unique = list(dict.fromkeys(peer_queries))
        work = Path(self.workdir) if self.workdir else Path(tempfile.mkdtemp(prefix="lcdiff-peer-"))
        work.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        try:
            extra = self._stage(work)
            contract.write_job(
                work,
                self.name,
                self.train_adata,
                unique,
                int(n_cells),
                int(seed) if seed is not None else self.seed,
                self.settings,
                train_seed=self.seed,
                **extra,
            )
            result = contract.run_job(
                self.env.python, envs.runner_path(self.name), work, self.timeout, self.threads
            )
            pred = contract.read_prediction(work, result, unique, self.genes, int(n_cells))
        finally:
            if not self.keep_files and not self.workdir:
                shutil.rmtree(work, ignore_errors=True)
        wall = time.perf_counter() - started
        x = np.asarray(pred.X, dtype=np.float64)
        if result["scale"] == "counts":
            from lcdiff.data.normalize import log1p_cp10k

            x = log1p_cp10k(x)
        got = pred.obs[contract.QUERY_KEY].astype(str).to_numpy()
        blocks = [(lab, x[got == q]) for lab, q in zip(queried, peer_queries, strict=True)]
        self.last_result = result
        self.peer_timings = {
            "fit_s": float(result["fit_s"]),
            "predict_s": float(result["predict_s"]),
            "wall_s": wall,
        }
        info = {
            "name": self.display_name,
            "package": self.env.info.get("distribution"),
            "version": result.get("version"),
            "contract": contract.CONTRACT_VERSION,
            "settings": result.get("settings", self.settings),
            "scale_returned": result["scale"],
            "fit_s": float(result["fit_s"]),
            "predict_s": float(result["predict_s"]),
            "notes": self.notes + list(result.get("notes", [])),
            "environment": str(self.env.root),
        }
        return prediction_anndata(
            blocks, self.genes, self.name, seed, type_name=self.display_name, peer=info
        )

    # -- to override --
    def _training_input(self, sub: AnnData, control: str) -> AnnData:
        raise NotImplementedError

    def _cannot_predict(self, label: str) -> str | None:
        return None

    def _stage(self, work: Path) -> dict:
        """Write peer-specific files into the job folder; return extra request entries."""
        return {}

    def _fitted(self) -> AnnData:
        if self.train_adata is None:
            raise NotFittedError(
                f"The {self.name!r} method is not fitted; call .fit(screen, split) first."
            )
        return self.train_adata


def _as_list(labels) -> list[str]:
    return [labels] if isinstance(labels, str) else [str(lab) for lab in labels]


def _obs_frame(labels: np.ndarray, **columns) -> pd.DataFrame:
    frame = pd.DataFrame({"condition": labels, **columns})
    frame.index = [f"cell{i}" for i in range(len(labels))]
    return frame


# --- GEARS ----------------------------------------------------------------------------------
class GearsAdapter(PeerMethod):
    """GEARS (Roohani et al. 2023, ``cell-gears`` 0.1.2) in its own environment.

    Trains on the screen's log1p CP10k values (as the paper's reference does), with conditions
    ``"ctrl"`` / ``"A+ctrl"`` / ``"A+B"``, one cell type, GEARS' ``no_test`` split (it keeps
    some training perturbations for model selection) and a GO graph built offline from local
    GO gene sets (:mod:`lcdiff.peers.gene_ontology`). Predictions: ``n_cells`` random control
    cells per query passed through the trained network, one predicted cell each.

    Settings (the paper's Norman values; lcd-evaluation §5): ``epochs`` 20, ``batch_size`` 256,
    ``coexpress_threshold`` 0.8, ``num_genes_graph`` 20 (GO and co-expression neighbours),
    ``gnn_layers`` 2 (both GNNs), ``hidden_size`` 64, ``lr`` 1e-3, ``weight_decay`` 5e-4;
    ``go_gmt`` (path of the GO GMT, see :func:`~lcdiff.peers.gene_ontology.find_go_gmt`).

    GEARS can only use targets with GO terms: a training condition with a target outside the
    GO graph is left out (noted), a query with one cannot be predicted, and a screen none of
    whose targets has a GO term (e.g. the synthetic toy's ``G001``…) is refused at ``fit``.
    GEARS handles at most two targets per condition.
    """

    name = "gears"
    display_name = "GEARS"
    single_suffix = True
    defaults = {
        "epochs": 20,
        "batch_size": 256,
        "coexpress_threshold": 0.8,
        "num_genes_graph": 20,
        "gnn_layers": 2,
        "hidden_size": 64,
        "lr": 1e-3,
        "weight_decay": 5e-4,
        "go_gmt": None,
    }

    def __init__(self, seed: int = 0, **kwargs) -> None:
        super().__init__(seed=seed, **kwargs)
        self.gene2go: dict[str, set[str]] = {}

    def _training_input(self, sub: AnnData, control: str) -> AnnData:
        from lcdiff.peers.gene_ontology import find_go_gmt, gene2go, read_gmt

        gmt = find_go_gmt(self.settings.get("go_gmt"))
        labels = sub.obs[PERTURBATION_KEY].astype(str).to_numpy()
        targets = sorted({g for lab in set(labels) for g in parse_label(lab, control)})
        self.gene2go = gene2go(read_gmt(gmt), set(self.genes) | set(targets))
        self.go_source = str(gmt)
        with_go = [g for g in targets if g in self.gene2go]
        if not with_go:
            raise PeerError(
                f"GEARS skipped: none of the screen's {len(targets)} perturbed genes "
                f"({', '.join(targets[:5])}{'…' if len(targets) > 5 else ''}) has a GO term in "
                f"{gmt.name}, so GEARS has no perturbation graph (it needs real gene symbols)."
            )
        keep = np.ones(len(labels), dtype=bool)
        dropped = []
        for lab in sorted(set(labels)):
            genes = parse_label(lab, control)
            reason = None
            if len(genes) > 2:
                reason = "more than two targets"
            elif any(g not in self.gene2go for g in genes):
                reason = "a target without GO terms"
            if reason:
                keep &= labels != lab
                dropped.append(f"{lab} ({reason})")
        if dropped:
            self.notes.append(
                f"{len(dropped)} training condition(s) left out for GEARS: {', '.join(dropped)}"
            )
        no_go = [g for g in self.genes if g not in self.gene2go]
        self.notes.append(
            f"GO graph from {gmt.name}: {len(self.gene2go)} of the screen's genes and targets "
            f"have GO terms ({len(no_go)} measured genes have none)"
        )
        sub = sub[keep]
        x = sub.X
        x = sp.csr_matrix(x.astype(np.float32)) if not sp.issparse(x) else x.astype(np.float32)
        conds = np.array([to_peer_label(lab, control, True) for lab in labels[keep]], dtype=object)
        obs = _obs_frame(conds, cell_type="cell")
        var = pd.DataFrame({"gene_name": self.genes}, index=self.genes)
        return AnnData(X=sp.csr_matrix(x), obs=obs, var=var)

    def _cannot_predict(self, label: str) -> str | None:
        genes = parse_label(label, self.control)
        if len(genes) > 2:
            return "GEARS predicts at most two-gene combinations"
        missing = [g for g in genes if g not in self.gene2go]
        if missing:
            return (
                f"{missing} have no GO term, so they are not in GEARS' perturbation graph "
                "(GEARS itself would silently drop them)"
            )
        return None

    def _stage(self, work: Path) -> dict:
        import pickle

        from lcdiff.peers.gene_ontology import go_edges

        data_path = work / "gears_data"
        data_path.mkdir(exist_ok=True)
        with open(data_path / "gene2go_all.pkl", "wb") as handle:
            pickle.dump(self.gene2go, handle)
        # GEARS' make_GO reads ./data/go_essential_<dataset>.csv (relative to the working
        # folder) when it exists; the runner runs in `work`.
        (work / "data").mkdir(exist_ok=True)
        go_edges(self.gene2go).to_csv(work / "data" / "go_essential_screen.csv", index=False)
        return {"data_path": "gears_data", "dataset_name": "screen", "go_source": self.go_source}


# --- CPA ------------------------------------------------------------------------------------
class CpaAdapter(PeerMethod):
    """CPA (Lotfollahi et al. 2023, ``cpa-tools`` 0.8.1) in its own environment.

    Trains on the raw counts (negative-binomial reconstruction, linear doser, not variational),
    with perturbations ``"A"`` / ``"A+B"`` / ``"ctrl"``, dosage 1 per target, a dummy
    ``smiles`` and a single ``cell_type`` covariate (CPA's ``setup_anndata`` needs both), and
    20 % of the training doubles (seeded) as its validation split. Predictions: ``n_cells``
    control cells drawn with replacement and relabelled with the query; CPA's predicted NB
    means (counts) are log1p CP10k normalized here, as in the paper's reference.

    Settings (lcd-evaluation §5, Norman column; the training plan's base values): ``n_latent``
    256, ``n_hidden`` 4096, ``n_layers`` 2, ``dropout`` 0.2, ``reg_adv`` 1, ``wd`` 1e-8,
    ``lr`` 1e-4, ``adv_lr`` 1e-4, ``adv_steps`` 3, ``pen_adv`` 20, warm-ups adversary 50 /
    mixup 10 / autoencoder 10 epochs, ``mixup_alpha`` 0.1, ``step_size_lr`` 25, ``batch_size``
    128, ``max_epochs`` 1000, validation every 10 epochs, early-stopping patience 10.

    CPA learns one embedding per target gene, so it cannot predict a gene that no training
    condition perturbs.
    """

    name = "cpa"
    display_name = "CPA"
    defaults = {
        "n_latent": 256,
        "n_hidden": 4096,
        "n_layers": 2,
        "dropout": 0.2,
        "reg_adv": 1.0,
        "wd": 1e-8,
        "lr": 1e-4,
        "adv_lr": 1e-4,
        "adv_steps": 3,
        "pen_adv": 20.0,
        "n_epochs_adv_warmup": 50,
        "n_epochs_mixup_warmup": 10,
        "n_epochs_pretrain_ae": 10,
        "mixup_alpha": 0.1,
        "step_size_lr": 25,
        "batch_size": 128,
        "max_epochs": 1000,
        "check_val_every_n_epoch": 10,
        "early_stopping_patience": 10,
        "valid_fraction": 0.2,
    }

    def _training_input(self, sub: AnnData, control: str) -> AnnData:
        if "counts" not in sub.layers:
            raise PeerError("CPA trains on raw counts; the prepared screen has no 'counts' layer.")
        labels = sub.obs[PERTURBATION_KEY].astype(str).to_numpy()
        self.trained_genes = sorted({g for lab in set(labels) for g in parse_label(lab, control)})
        conds = np.array([to_peer_label(lab, control, False) for lab in labels], dtype=object)
        # validation split: 20 % of the training doubles (seeded), else 20 % of the singles
        multi = sorted({c for c in set(conds) if c.count("+") >= 1})
        pool = multi or sorted(set(conds) - {PEER_CONTROL})
        rng = np.random.default_rng(self.seed)
        n_valid = int(round(self.settings["valid_fraction"] * len(pool)))
        if len(pool) >= 2:  # at least one condition to validate on, never all of them
            n_valid = min(max(n_valid, 1), len(pool) - 1)
        valid = set(rng.permutation(pool)[:n_valid].tolist()) if n_valid else set()
        split = np.where(np.isin(conds, list(valid)), "valid", "train")
        self.notes.append(
            f"CPA validation split: {len(valid)} of {len(pool)} training "
            f"{'doubles' if multi else 'singles'}"
        )
        counts = sub.layers["counts"]
        counts = sp.csr_matrix(counts, dtype=np.float32)
        obs = _obs_frame(conds, split=split, cell_type="cell", smiles="")
        return AnnData(X=counts, obs=obs, var=pd.DataFrame(index=self.genes))

    def _cannot_predict(self, label: str) -> str | None:
        genes = parse_label(label, self.control)
        unseen = [g for g in genes if g not in self.trained_genes]
        if unseen:
            return (
                f"{unseen} are perturbed in no training condition; CPA learns one embedding per "
                "perturbed gene and has none for them"
            )
        return None


ADAPTERS: dict[str, type[PeerMethod]] = {"gears": GearsAdapter, "cpa": CpaAdapter}
