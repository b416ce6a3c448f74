"""Column names that Hong Kong departments publish in Chinese, and the ASCII names they load as.

Bilingual files from DATA.GOV.HK, the GeoData Store and GeoInfo Map carry each column twice, once
labelled in English and once in Traditional Chinese (``Address`` / ``地址``). The English label
becomes a snake_case name; the Chinese one gets the same meaning with a ``_zh`` suffix from this
glossary, so a table reads ``address`` / ``address_zh`` rather than ``address`` / ``field_7``.
A layer's ``fields.<name>.name`` still wins, and unlisted names fall back to ``field_<n>``.
"""

from __future__ import annotations

import re

GLOSSARY: dict[str, str] = {
    "數據集": "dataset_zh",
    "名稱": "name_zh",
    "中文名稱": "name_zh",
    "設施名稱": "facility_name_zh",
    "地址": "address_zh",
    "中文地址": "address_zh",
    "區域": "district_zh",
    "地區": "district_zh",
    "區議會": "district_council_zh",
    "牌照編號": "licence_no_zh",
    "聯絡電話": "telephone_zh",
    "電話": "telephone_zh",
    "電話號碼": "telephone_zh",
    "傳真號碼": "fax_number_zh",
    "傳真": "fax_number_zh",
    "開放時間": "opening_hours_zh",
    "電郵地址": "email_address_zh",
    "電郵": "email_address_zh",
    "網頁": "website_zh",
    "網址": "website_zh",
    "坐標東": "easting_zh",
    "東坐標": "easting_zh",
    "坐標北": "northing_zh",
    "北坐標": "northing_zh",
    "北緯": "latitude_zh",
    "緯度": "latitude_zh",
    "東經": "longitude_zh",
    "經度": "longitude_zh",
    "氣象站類別": "station_type_zh",
    "廢物處理設施類別": "facility_type_zh",
    "類別": "category_zh",
    "類型": "type_zh",
    "容量": "capacity_zh",
    "處理量": "throughput_zh",
    "設計處理量": "design_capacity_zh",
    "地面海拔高度(米)": "ground_elevation_m_zh",
    "資料一線通": "data_gov_hk_zh",
    "備註": "remarks_zh",
    "地段編號": "lot_number_zh",
    "面積": "area_zh",
    "最後更新": "last_update_zh",
    "更新日期": "last_update_zh",
    "服務": "services_zh",
    "簡介": "description_zh",
    "描述": "description_zh",
}

_SPACES = re.compile(r"[\s\u3000]+")


def glossary_name(column: str) -> str | None:
    """Return the glossary's ASCII name for a Chinese column label, ignoring spaces, else ``None``."""
    key = _SPACES.sub("", column).replace("（", "(").replace("）", ")")
    return GLOSSARY.get(key)
