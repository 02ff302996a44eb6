"""Datasets: the embedded default screen, bundled real data, and loaders for raw layouts."""

from lcdiff.data.loaders import read_norman2019, read_replogle2022, read_wessels2023  # noqa: F401
from lcdiff.data.papalexi import papalexi2021  # noqa: F401
from lcdiff.data.toy import toy_screen  # noqa: F401
