"""Make the synthetic sample rasters in this folder (deterministic; run from the repository root).

``.venv/bin/python data/sample/synthetic/make_synthetic.py``

* ``dem_deepbay_synthetic.tif`` — SYNTHETIC. A made-up intertidal-mudflat elevation grid on the
  same 30 m HK1980 Grid cells as the Deep Bay mudflat study (186 x 229 pixels, E 816300–821880,
  N 836790–843660), with the same kind of values: codes -1 (land), -2 (intertidal vegetation),
  -3 (water) and, on the "mudflat", elevation in cm above Chart Datum; NaN outside the study area.
  The real rasters carry no licence and their authors ask that they not be redistributed, so the
  repository ships this stand-in; nothing in it is measured.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

HERE = Path(__file__).resolve().parent
WIDTH, HEIGHT, CELL = 186, 229, 30.0
WEST, NORTH = 816_300.0, 843_660.0


def dem() -> np.ndarray:
    """The synthetic grid: land to the east, a mudflat sloping west into water, mangrove patches."""
    rng = np.random.default_rng(2326)
    cols, rows = np.meshgrid(np.arange(WIDTH), np.arange(HEIGHT))
    x = cols / WIDTH  # 0 west .. 1 east
    y = rows / HEIGHT  # 0 north .. 1 south
    shore = 0.62 + 0.08 * np.sin(6.0 * y) + 0.03 * np.cos(17.0 * y)
    channel = 0.18 + 0.05 * np.sin(4.0 * y + 1.0)
    elevation = 220.0 * (x - channel) / (shore - channel) + rng.normal(0.0, 6.0, x.shape)
    grid = np.where(x >= shore, -1.0, elevation)  # land
    grid = np.where(x <= channel, -3.0, grid)  # water
    patches = ((x - 0.55) ** 2 / 0.004 + (y - 0.35) ** 2 / 0.02 < 1) | ((x - 0.5) ** 2 / 0.003 + (y - 0.7) ** 2
                                                                       / 0.01 < 1)
    grid = np.where(patches & (grid >= 0), -2.0, grid)  # intertidal vegetation
    grid = np.where((grid >= 0) & (grid < 1.0), 1.0, grid)
    outside = (x < 0.05) & (y > 0.8) | (x + y > 1.75) | (y < 0.02)
    return np.where(outside, np.nan, np.round(grid, 1)).astype("float32")


def main() -> None:
    profile = {"driver": "GTiff", "width": WIDTH, "height": HEIGHT, "count": 1, "dtype": "float32",
               "crs": "EPSG:2326", "transform": from_origin(WEST, NORTH, CELL, CELL), "nodata": float("nan"),
               "compress": "lzw"}
    with rasterio.open(HERE / "dem_deepbay_synthetic.tif", "w", **profile) as dst:
        dst.write(dem(), 1)
        dst.set_band_description(1, "SYNTHETIC elevation (cm above Chart Datum) or class code -1/-2/-3")
        dst.update_tags(SYNTHETIC="yes", SOURCE="data/sample/synthetic/make_synthetic.py")


if __name__ == "__main__":
    main()
