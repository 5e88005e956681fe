"""The demo's closing summary: the study's numbers next to the paper's and the simulator's ground truth."""

from __future__ import annotations

from pathlib import Path

from ceusflow.pipeline.truth import compare_with_truth, format_table, mapping_path

__all__ = ["summarise_demo"]


def summarise_demo(results: Path, truth_dir: Path, store: Path) -> str:
    """Summarise the demo against the paper and the ground truth (key rows of ``ceusflow truth``).

    Parameters
    ----------
    results : Path
        Results folder of the demo's study.
    truth_dir : Path
        The simulated cohort's ``COHORT-truth`` folder.
    store : Path
        The demo's Zarr store; its pseudonym mapping ``<store>.pseudonyms.csv`` joins the truth.

    Returns
    -------
    str
        A plain-text table (aggregates only, no patient identifiers) and a pointer to the full table.
    """
    table = compare_with_truth(results, truth_dir, mapping_path(store))
    text = format_table(table, compact=True).to_string(index=False)
    hint = f"full table: ceusflow truth {results} --truth {truth_dir} --pseudonyms {mapping_path(store)}"
    return "\n".join(["", "paper vs ceusflow vs ground truth (truth = the simulator's oracle on the same patients)",
                      text, hint])
