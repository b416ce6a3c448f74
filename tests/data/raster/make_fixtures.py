"""Regenerate the ASCII-grid fixtures in this folder from the synthetic sample DEM (deterministic).

Run from the repository root: ``.venv/bin/python tests/data/raster/make_fixtures.py``.

* ``deepbay_extract.asc``: 12 x 10 cells (rows 85-94, columns 105-116) of
  ``data/sample/synthetic/dem_deepbay_synthetic.tif`` (SYNTHETIC), values rounded to 0.01 cm,
  NaN written as ``NODATA_value -9999``; no ``.prj`` (the layer must declare ``source.crs``).
* ``deepbay_extract_prj.asc`` + ``.prj``: the same grid with GDAL's ESRI ``.prj`` for EPSG:2326.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parents[2] / "data" / "sample" / "synthetic" / "dem_deepbay_synthetic.tif"
WINDOW = Window(105, 85, 12, 10)


def main() -> None:
    with rasterio.open(SOURCE) as src:
        data = np.round(src.read(1, window=WINDOW), 2)
        transform = src.window_transform(WINDOW)
    data = np.where(np.isnan(data), -9999.0, data).astype("float32")
    for name, crs in (("deepbay_extract.asc", None), ("deepbay_extract_prj.asc", "EPSG:2326")):
        staging = HERE / f"{name}.tmp.tif"
        with rasterio.open(staging, "w", driver="GTiff", width=12, height=10, count=1, dtype="float32",
                           transform=transform, nodata=-9999.0, crs=crs) as dst:
            dst.write(data, 1)
        rasterio.shutil.copy(staging, HERE / name, driver="AAIGrid", DECIMAL_PRECISION=2)
        staging.unlink()
        for extra in HERE.glob(f"{name}.aux.xml"):
            extra.unlink()


if __name__ == "__main__":
    main()
