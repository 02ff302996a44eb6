"""The HTML report and the prediction figures, on synthetic results (no training)."""

from __future__ import annotations

import base64
import re

import matplotlib
import numpy as np
import pandas as pd
import pytest
from anndata import AnnData

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from lcdiff.errors import UnknownGeneError, UnknownPerturbationError  # noqa: E402
from lcdiff.plot.predictions import marker_distributions, mean_shift_scatter  # noqa: E402
from lcdiff.report import (  # noqa: E402
    Image,
    Section,
    Table,
    Text,
    figure_to_png,
    format_value,
    render_report,
    write_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _screen(seed: int = 0, n_cells: int = 60, n_genes: int = 8) -> AnnData:
    """A small screen-like AnnData: ctrl, A, B, A+B with known mean shifts."""
    rng = np.random.default_rng(seed)
    labels = ["ctrl", "A", "B", "A+B"]
    shift = {"ctrl": 0.0, "A": 1.0, "B": -0.5, "A+B": 0.5}
    x = np.concatenate(
        [
            np.abs(rng.normal(1.0, 0.3, (n_cells, n_genes))) + shift[lab] * (np.arange(n_genes) < 3)
            for lab in labels
        ]
    ).astype(np.float32)
    obs = pd.DataFrame({"perturbation": np.repeat(labels, n_cells)})
    obs.index = obs.index.astype(str)
    adata = AnnData(x, obs=obs)
    adata.var_names = [f"g{i}" for i in range(n_genes)]
    adata.uns["lcdiff"] = {"control": "ctrl", "markers": {"A+B": ["g2", "g0", "g1"]}}
    return adata


def _png(fig=None) -> bytes:
    if fig is None:
        fig, ax = plt.subplots(figsize=(2, 2))
        ax.plot([0, 1], [0, 1])
    return figure_to_png(fig, dpi=40)


def _sections() -> list[Section]:
    metrics = pd.DataFrame(
        {"mmd_20": [0.012, 0.034, np.nan], "pearson_systema": [0.8, 0.5, 0.1]},
        index=pd.Index(["LCD", "additive", "control"], name="method"),
    )
    return [
        Section(
            "Benchmark",
            [
                Text("Lower MMD is better.\n\nSecond paragraph <b>not bold</b>."),
                Table(
                    metrics,
                    caption="Methods × metrics",
                    best={"mmd_20": "min", "pearson_systema": "max"},
                ),
            ],
        ),
        Section("Causal map", [Image(_png(), caption="Effects <script>", alt="effect map")]),
    ]


def test_report_has_sections_tables_images_and_metadata(tmp_path):
    path = write_report(
        tmp_path / "report.html",
        _sections(),
        title="lcdiff demo",
        metadata={"data": "toy screen", "seed": 0, "wall time (s)": 12.5},
        headline={"MMD_20, LCD": 0.0123},
    )
    html = path.read_text()
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    h2 = re.findall(r"<h2>(.*?)</h2>", html)
    assert h2 == ["What was run", "Benchmark", "Causal map"]
    # table of contents links to every section's anchor, and each anchor exists
    for anchor in re.findall(r"href='#([^']+)'", html):
        assert f"id='{anchor}'" in html
    assert html.count("<table class='results'>") == 1
    assert "<th>seed</th><td>0</td>" in html and "toy screen" in html
    # the best value per column is bold, NaN is shown as a dash
    assert "<strong>0.012</strong>" in html and "<strong>0.8</strong>" in html
    assert "<td>–</td>" in html
    # images are embedded PNG, decodable
    srcs = re.findall(r"src='data:image/png;base64,([^']+)'", html)
    assert len(srcs) == 1 and base64.b64decode(srcs[0]).startswith(PNG_MAGIC)
    # user text is escaped, and nothing is loaded from the network
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<b>not bold</b>" not in html
    assert not re.search(r"(src|href)=['\"]https?:", html)
    assert "0.0123" in html  # headline card
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temp file left behind


def test_render_report_without_metadata_has_no_run_section():
    html = render_report(_sections(), title="t")
    assert "What was run" not in html and html.count("<h2>") == 2


def test_image_accepts_a_matplotlib_figure():
    fig, ax = plt.subplots()
    ax.plot([1, 2])
    html = render_report([Section("S", [Image(fig, caption="c")])])
    assert "data:image/png;base64," in html


def test_unknown_block_type_is_refused():
    with pytest.raises(TypeError, match="Text, Table or Image"):
        render_report([Section("S", ["a bare string"])])


@pytest.mark.parametrize(
    "value, text",
    [
        (0.5, "0.5"),
        (1.23456, "1.235"),
        (0.000012, "1.20e-05"),
        (np.nan, "–"),
        (3, "3"),
        (True, "yes"),
        ("x", "x"),
        (None, ""),
    ],
)
def test_format_value(value, text):
    assert format_value(value) == text


def test_write_report_into_missing_folder_fails_without_writing(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_report(tmp_path / "nope" / "r.html", _sections())
    assert not (tmp_path / "nope").exists()


# --- prediction figures -----------------------------------------------------------------------
def test_marker_distributions_grid_and_genes():
    screen = _screen()
    pred = _screen(seed=1)
    fig = marker_distributions(screen, {"LCD": pred, "additive": pred}, ["A+B", "A"], n_genes=3)
    axes = np.array(fig.axes).reshape(2, 3)
    # stored markers are used for A+B (in their order); A falls back to the largest shifts
    assert [ax.get_title() for ax in axes[0]] == ["g2", "g0", "g1"]
    assert {ax.get_title() for ax in axes[1]} == {"g0", "g1", "g2"}
    # observed histogram + one outline per method in every panel
    assert all(len(ax.patches) >= 3 for ax in axes.ravel())
    assert _png(fig).startswith(PNG_MAGIC)


def test_marker_distributions_refuses_unknown_labels_and_genes():
    screen = _screen()
    with pytest.raises(UnknownPerturbationError, match="C\\+D"):
        marker_distributions(screen, {"m": screen}, "C+D")
    with pytest.raises(UnknownGeneError, match="nope"):
        marker_distributions(screen, {"m": screen}, "A", genes={"A": ["nope"]})


def test_mean_shift_scatter_scores_a_perfect_and_a_flat_prediction():
    screen = _screen()
    flat = screen.copy()
    ctrl_mean = screen[screen.obs["perturbation"] == "ctrl"].X.mean(0)
    flat.X = np.tile(ctrl_mean, (flat.n_obs, 1))  # predicts "no change" everywhere
    flat.X[:3] += 1e-3  # keep a non-constant column so r is defined
    fig = mean_shift_scatter(screen, {"perfect": screen, "flat": flat})
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == 2
    assert "r = 1.00" in titles[0] and "RMSE = 0.000" in titles[0]
    assert "RMSE = 0.000" not in titles[1]
    # every (condition, gene) pair is one point: 3 perturbed conditions × 8 genes
    assert len(fig.axes[0].collections[0].get_offsets()) == 3 * 8
    plt.close(fig)
