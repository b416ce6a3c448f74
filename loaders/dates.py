"""Dates stored as text in departmental data. (Stub: nothing is detected yet.)"""

from __future__ import annotations

import pandas as pd


def detect_dates(series: pd.Series) -> pd.Series | None:
    """Return ``series`` as dates when every non-null text value parses as one, else ``None``."""
    return None
