"""The demo pipeline end to end (preset tiny, a small simulated screen), its report and CLI."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pytest

from lcdiff.cli import main
from lcdiff.demo import run
from lcdiff.errors import OutputExistsError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SECTIONS = [
    "What was run",
    "How well does LCD predict unseen combinations?",
    "Did training work?",
    "Predicted and observed cells",
    "Causal effects (CLIPR)",
    "Files",
]


def _small_screen():
    """A small simulated screen with a known network (fast enough for the default suite)."""
    from lcdiff.data.simulate import screen

    return screen(n_genes=30, n_perturbed=8, n_doubles=8, cells_per_condition=150, seed=0)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "lcdiff-demo"
    result = run(
        out,
        preset="tiny",
        seed=0,
        progress=False,
        adata=_small_screen(),
        n_cells=100,
        baselines=("control", "additive"),
    )
    return out, result


def test_demo_writes_every_output(demo):
    out, result = demo
    assert result["report"] == out / "report.html"
    for name in [
        "report.html",
        "split.json",
        "summary.json",
        "benchmark/long.csv",
        "benchmark/summary.csv",
        "causal/clipr_paper.csv",
        "causal/clipr_moments.csv",
        "causal/true_network.csv",
        "causal/causal_metrics.csv",
        "predictions/lcd.h5ad",
        "predictions/additive.h5ad",
        "model",
    ]:
        assert (out / name).exists(), name
    pngs = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert {"benchmark.png", "markers.png", "mean_shift.png"} <= set(pngs)
    assert all((out / "figures" / p).read_bytes().startswith(PNG_MAGIC) for p in pngs)
    # nothing half-written is left beside the output folder
    assert [p.name for p in out.parent.iterdir()] == [out.name]


def test_demo_scores_only_held_out_doubles(demo):
    out, result = demo
    split = json.loads((out / "split.json").read_text())
    test = set(split["test"])
    assert test and all(lab.count("+") == 1 for lab in test)
    assert not test & set(split["train"])
    long = pd.read_csv(out / "benchmark" / "long.csv")
    assert set(long["condition"]) == test
    assert set(long["method"]) == {"lcd", "control", "additive"}
    pred = anndata.read_h5ad(out / "predictions" / "lcd.h5ad")
    assert pred.obs["perturbation"].value_counts().to_dict() == {lab: 100 for lab in test}


def test_demo_causal_scores_match_the_saved_matrices(demo):
    import lcdiff as lc

    out, result = demo
    truth = pd.read_csv(out / "causal" / "true_network.csv", index_col=0)
    causal = pd.read_csv(out / "causal" / "causal_metrics.csv", index_col=0)
    for method in ("paper", "moments"):
        effects = pd.read_csv(out / "causal" / f"clipr_{method}.csv", index_col=0)
        genes = [g for g in effects.index if g in truth.index]
        expected = lc.eval.causal_metrics(effects.loc[genes, genes], truth.loc[genes, genes])
        assert causal.loc[method, "causal_auroc"] == pytest.approx(expected["causal_auroc"])
    headline = result["headline"]
    assert headline["CLIPR causal AUROC (paper)"] == pytest.approx(
        causal.loc["paper", "causal_auroc"]
    )


def test_demo_report_has_sections_tables_and_images(demo):
    out, result = demo
    html = (out / "report.html").read_text()
    assert re.findall(r"<h2>(.*?)</h2>", html) == SECTIONS
    assert html.count("<table class='results'>") >= 3  # methods × metrics, legend, causal
    for method in ("LCD", "additive (SALT)", "control cells"):
        assert f"<th>{method}</th>" in html
    images = re.findall(r"src='data:image/png;base64,([^']+)'", html)
    assert len(images) >= 4
    assert all(base64.b64decode(i).startswith(PNG_MAGIC) for i in images)
    assert "<th>LCD preset</th><td>tiny</td>" in html
    # the post-training checks of both stages and the sampler, per level and per condition
    assert "Stage A (noise model)" in html and "Stage B (score model)" in html
    assert "Sampler:" in html and "gap closed" in html and "mean_rmse_ratio" in html
    assert "the screen passed to lc.demo.run" in html  # not the toy screen: says so
    assert re.search(r"On mmd_20, LCD ranks \d of 3 methods", html)
    assert not re.search(r"(src|href)=['\"]https?:", html)
    # the printed summary carries the numbers of the report
    lcd_mmd = result["headline"]["MMD (marker genes), LCD"]
    assert np.isfinite(lcd_mmd) and f"{lcd_mmd:.4g}" in result["summary_lines"][0]


def test_demo_refuses_existing_output_before_any_work(demo):
    out, _ = demo
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(OutputExistsError):
        run(out, preset="tiny", adata=None)
    assert sorted(p.name for p in out.iterdir()) == before


def test_demo_cli_errors_are_one_line(demo, capsys, tmp_path):
    out, _ = demo
    assert main(["demo", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "--force" in err and "\n" not in err
    assert main(["demo", "--preset", "huge", "-o", str(tmp_path / "d")]) == 2
    assert "huge" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


# --- the report in a real browser -------------------------------------------------------------
def _chromium() -> str | None:
    """Path of a headless-capable Chromium, installing Debian's package when absent."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    apt = shutil.which("apt-get")
    if apt is None:
        return None
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    for cmd in ([apt, "update", "-qq"], [apt, "install", "-y", "-qq", "chromium"]):
        try:
            subprocess.run(cmd, check=True, capture_output=True, timeout=900, env=env)
        except (OSError, subprocess.SubprocessError):
            return None
    return shutil.which("chromium")


@pytest.mark.slow
def test_report_renders_in_headless_chromium(demo, tmp_path):
    """Screenshot of the report in Chromium (kept in $LCDIFF_SCREENSHOT_DIR when set)."""
    import matplotlib.image

    browser = _chromium()
    if browser is None:
        pytest.skip(
            "Chromium is not installed and 'apt-get install chromium' failed (no root "
            "or no network); install it to run this check."
        )
    out, _ = demo
    shot = tmp_path / "report.png"
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--window-size=1280,2400",
        f"--screenshot={shot}",
        (out / "report.html").as_uri(),
    ]
    subprocess.run(cmd, check=True, capture_output=True, timeout=180)
    assert shot.read_bytes().startswith(PNG_MAGIC)
    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[0] >= 2000 and pixels.shape[1] >= 1200
    # a rendered page with figures is far from blank: many distinct colours
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1])[::97], axis=0)) > 50
    if keep := os.environ.get("LCDIFF_SCREENSHOT_DIR"):  # to look at the page afterwards
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, Path(keep) / "demo_report.png")
    # the DOM after loading: every embedded image decoded (naturalWidth > 0)
    dom = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--dump-dom",
            (out / "report.html").as_uri(),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=180,
    ).stdout
    assert dom.count("<img") >= 4 and "What was run" in dom


def test_demo_cli_passes_options_and_prints_the_summary(monkeypatch, capsys, tmp_path):
    import lcdiff.demo

    calls = {}

    def fake_run(out, preset="fast", seed=0, progress=True, *, force=False):
        calls.update(out=out, preset=preset, seed=seed, progress=progress, force=force)
        return {
            "summary_lines": ["LCD 0.1 vs additive 0.2", "AUROC 0.9"],
            "report": Path(out) / "report.html",
        }

    monkeypatch.setattr(lcdiff.demo, "run", fake_run)
    code = main(
        ["demo", "--preset", "tiny", "--seed", "3", "-q", "--force", "-o", str(tmp_path / "d")]
    )
    assert code == 0
    assert calls == {
        "out": tmp_path / "d",
        "preset": "tiny",
        "seed": 3,
        "progress": False,
        "force": True,
    }
    out = capsys.readouterr().out
    assert "LCD 0.1 vs additive 0.2" in out and "AUROC 0.9" in out
    assert out.strip().endswith(f"Report: {tmp_path / 'd' / 'report.html'}")


def test_demo_needs_a_known_network(tmp_path):
    from lcdiff.errors import DataFormatError

    adata = _small_screen()
    del adata.varp["causal_matrix"]
    with pytest.raises(DataFormatError, match="causal_matrix"):
        run(tmp_path / "d", preset="tiny", progress=False, adata=adata)
    assert list(tmp_path.iterdir()) == []
