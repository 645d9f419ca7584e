"""Matplotlib, headless: every command saves PNGs, none opens a window."""

from __future__ import annotations


def subplots(ncols: int = 1, nrows: int = 1, width: float = 5.0, height: float = 3.6):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    return fig, axes

