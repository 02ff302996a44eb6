"""``lcdiff simulate linear|screen``: simulated screens with known ground truth, as ``.h5ad``.

``linear`` writes the paper's linear-SDE benchmark (continuous states, no counts);
``screen`` writes a nonlinear Perturb-seq screen of raw counts (prepare it before fitting).
Both keep the ground truth in ``varp["causal_matrix"]`` and ``uns["simulation"]``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from lcdiff.cli import app, check_output, write_h5ad

simulate_app = typer.Typer(
    help="Simulate a screen with known ground truth and write it as .h5ad.",
    no_args_is_help=True,
)
app.add_typer(simulate_app, name="simulate")

_OUT_HELP = "Output .h5ad file."
_FORCE_HELP = "Overwrite the output file if it exists."


def _check_h5ad_suffix(out: Path) -> None:
    from lcdiff.errors import ConfigError

    if out.suffix != ".h5ad":
        raise ConfigError(
            f"Output {str(out)!r} must end in .h5ad (it is an AnnData file); e.g. -o sim.h5ad."
        )


def _write(adata, out: Path, what: str) -> None:
    write_h5ad(adata, out)
    n_conditions = adata.obs["perturbation"].nunique()
    typer.echo(
        f"wrote {what}: {adata.n_obs} cells × {adata.n_vars} genes, {n_conditions} conditions "
        f"(control 'ctrl') to {out}"
    )


@simulate_app.command("linear")
def linear_command(
    out: Path = typer.Option(..., "-o", "--out", help=_OUT_HELP, show_default=False),
    n_genes: int = typer.Option(100, "--n-genes", "-d", min=2, help="Number of genes d."),
    n_perturbed: int = typer.Option(
        50, "--n-perturbed", "-p", min=0, help="Single-gene shift perturbations (<= d)."
    ),
    graph: str = typer.Option(
        "er", "--graph", help="'er' (Erdős–Rényi) or 'sfo' (scale-free out-degree)."
    ),
    cells_per_condition: int = typer.Option(
        200, "--cells-per-condition", min=1, help="Cells per condition, control included."
    ),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed: one seed is one system."),
    force: bool = typer.Option(False, "--force", help=_FORCE_HELP),
) -> None:
    """The paper's linear-SDE benchmark: exact stationary samples, no measurement noise."""
    from lcdiff.data.simulate import linear_sde

    _check_h5ad_suffix(out)
    check_output(out, force=force)
    adata = linear_sde(
        n_genes, n_perturbed, graph=graph, cells_per_condition=cells_per_condition, seed=seed
    )
    _write(adata, out, f"linear SDE ({graph})")


@simulate_app.command("screen")
def screen_command(
    out: Path = typer.Option(..., "-o", "--out", help=_OUT_HELP, show_default=False),
    n_genes: int = typer.Option(100, "--n-genes", min=4, help="Number of genes."),
    n_perturbed: int = typer.Option(
        25, "--n-perturbed", min=1, help="Perturbed genes, each with a single (<= 30% of genes)."
    ),
    n_doubles: int = typer.Option(40, "--n-doubles", min=0, help="Number of doubles."),
    cells_per_condition: int = typer.Option(
        250, "--cells-per-condition", min=1, help="Cells per perturbation."
    ),
    control_cells: int | None = typer.Option(
        None, "--control-cells", min=1, help="Control cells (default: 2 × cells per condition)."
    ),
    observation: str = typer.Option(
        "nb", "--observation", help="'nb' (negative binomial) or 'zip' (zero-inflated Poisson)."
    ),
    mean_library_size: float = typer.Option(
        3000.0, "--mean-library-size", min=1.0, help="Mean total counts per cell."
    ),
    knockdown_fraction: float = typer.Option(
        0.7, "--knockdown-fraction", min=0.0, max=1.0, help="Share of knock-downs (vs activation)."
    ),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed."),
    force: bool = typer.Option(False, "--force", help=_FORCE_HELP),
) -> None:
    """A nonlinear Perturb-seq screen (raw counts; singles and doubles; ground truth attached)."""
    from lcdiff.data.simulate import screen

    _check_h5ad_suffix(out)
    check_output(out, force=force)
    adata = screen(
        n_genes=n_genes,
        n_perturbed=n_perturbed,
        n_doubles=n_doubles,
        cells_per_condition=cells_per_condition,
        control_cells=control_cells,
        observation=observation,
        mean_library_size=mean_library_size,
        knockdown_fraction=knockdown_fraction,
        seed=seed,
    )
    _write(adata, out, "nonlinear screen")
    additivity = adata.uns["simulation"]["additivity"]
    if additivity["n_doubles"]:
        typer.echo(
            f"non-additive doubles: {additivity['n_nonadditive']} of {additivity['n_doubles']} "
            f"(|z| > {additivity['z_threshold']:g} on log1p CP10k means)"
        )
