"""Column names that Hong Kong departments publish in Chinese, and the ASCII names they load as.

Bilingual files from DATA.GOV.HK, the GeoData Store and GeoInfo Map carry each column twice, once
labelled in English and once in Traditional Chinese. They come in two layouts, and a Chinese column
found in either is the *twin* of an English one (:func:`twin_columns`) and loads as ``<english>_zh``:

* side by side: ``ENGLISH NAME``, ``中文名稱``, ``TELEPHONE``, ``聯絡電話`` (GeoInfo Map CSVs);
* in blocks: ``Dataset``, ``Facility Name``, ``Address``, ``數據集``, ``設施名稱``, ``地址`` (GeoData Store),
  where the n-th Chinese column of a block pairs with the n-th of the English block just before it.

A Chinese label may hold an English word (``WI-FI 覆蓋範圍`` beside ``WI-FI COVERAGE``); one whose
English words are not in the column before it is a single bilingual label (``Name 名稱``) and is named
from its English part. A Chinese column with no twin is named from :data:`GLOSSARY` (``地址`` →
``address_zh``), else composed word by word from :data:`TERMS` (``郵政局地址`` →
``post_office_address_zh``); a character no term covers is spelt as its code point (``u51b7``), so
the same label gets the same name in every file. A declared ``fields.<name>.name`` wins over all of these.
"""

from __future__ import annotations

import re

from sdi.text import CJK_CHAR, has_cjk

#: Whole Chinese labels (spaces ignored, full-width brackets as ASCII) and the names they load as.
GLOSSARY: dict[str, str] = {
    "數據集": "dataset_zh",
    "名稱": "name_zh",
    "中文名稱": "name_zh",
    "設施名稱": "facility_name_zh",
    "地址": "address_zh",
    "中文地址": "address_zh",
    "類別": "category_zh",
    "中文類別": "category_zh",
    "類型": "type_zh",
    "種類": "type_zh",
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
    "空氣質素監測站類別": "monitoring_station_type_zh",
    "收集物料類別": "material_type_zh",
    "回收機構名稱": "recycling_organisation_zh",
    "場地類型": "venue_type_zh",
    "圖書館種類": "library_type_zh",
    "服務範圍": "scope_of_services_zh",
    "就讀學生性別": "student_gender_zh",
    "WI-FI覆蓋範圍": "wi_fi_coverage_zh",
    "覆蓋範圍": "coverage_zh",
    "容量": "capacity_zh",
    "處理量": "throughput_zh",
    "設計處理量": "design_capacity_zh",
    "地面海拔高度(米)": "ground_elevation_m_zh",
    "資料一線通": "data_gov_hk_zh",
    "備註": "remarks_zh",
    "註": "remarks_zh",
    "其他": "others_zh",
    "地段編號": "lot_number_zh",
    "面積": "area_zh",
    "最後更新": "last_update_zh",
    "更新日期": "last_update_zh",
    "服務": "services_zh",
    "簡介": "description_zh",
    "描述": "description_zh",
}

#: Chinese words and the English words they compose into, for a label not in :data:`GLOSSARY`.
#: Longest match first, so ``郵政局`` wins over ``郵政``; ``中文`` / ``英文`` mark the language and are dropped.
TERMS: dict[str, str] = {
    "中文": "", "英文": "", "名稱": "name", "名字": "name", "地址": "address", "地點": "location",
    "位置": "location", "類別": "category", "類型": "type", "種類": "type", "電話": "telephone", "傳真": "fax",
    "號碼": "number", "編號": "no", "代號": "code", "代碼": "code", "電郵": "email", "網頁": "website",
    "網址": "website", "開放": "opening", "時間": "time", "日期": "date", "年份": "year", "年": "year",
    "月": "month", "日": "day", "地區": "district", "分區": "district", "區域": "district",
    "區議會": "district_council", "選區": "constituency", "區": "district", "面積": "area", "高度": "height",
    "海拔": "elevation",
    "長度": "length", "闊度": "width", "寬度": "width", "數目": "count", "數量": "quantity", "人數": "persons",
    "總數": "total", "學校": "school", "學生": "students", "性別": "gender", "就讀": "attending",
    "服務": "services", "範圍": "scope", "覆蓋": "coverage", "中心": "centre", "設施": "facility",
    "場地": "venue", "機構": "organisation", "回收": "recycling", "物料": "material", "收集": "collection",
    "醫院": "hospital", "診所": "clinic", "圖書館": "library", "公園": "park", "郊野": "country",
    "海岸": "marine", "郵政局": "post_office", "郵政": "post", "監測站": "monitoring_station",
    "監測": "monitoring", "空氣": "air", "質素": "quality", "站": "station", "備註": "remarks",
    "註": "note", "其他": "others", "描述": "description", "簡介": "description", "狀況": "status",
    "狀態": "status", "用途": "use", "地段": "lot", "街道": "street", "道路": "road", "樓宇": "building",
    "大廈": "building", "樓層": "floor", "坐標": "coordinate", "座標": "coordinate", "東": "east",
    "西": "west", "南": "south", "北": "north", "經度": "longitude", "緯度": "latitude", "費用": "fee",
    "價格": "price", "容量": "capacity", "處理量": "throughput", "處理": "treatment", "數據集": "dataset",
    "資料": "data", "來源": "source", "更新": "update", "最後": "last", "部門": "department",
    "聯絡": "contact", "聯絡人": "contact_person", "負責人": "person_in_charge", "牌照": "licence",
    "營辦者": "operator", "營運者": "operator", "屆滿": "expiry", "有效": "valid", "床位": "beds",
    "課程": "course", "宗教": "religion", "資助": "subsidy", "語言": "language", "教學": "teaching",
    "全日": "whole_day", "上午": "am", "下午": "pm", "男": "male", "女": "female", "設計": "design",
    "廢物": "waste", "氣象站": "weather_station", "天氣": "weather", "米": "m", "公里": "km",
    "平方米": "m2", "人口": "population", "住戶": "households", "樓齡": "building_age", "業主": "owner",
    "規劃": "planning", "分區計劃": "zoning_plan", "土地": "land", "租約": "lease", "批地": "land_grant",
    "斜坡": "slope", "山泥傾瀉": "landslide", "水浸": "flooding", "風險": "risk", "等級": "grade",
    "級別": "level", "程度": "level", "說明": "note", "網站": "website", "場所": "premises",
}

_SPACES = re.compile(r"[\s\u3000]+")
_ASCII_WORD = re.compile(r"[0-9A-Za-z]+")
_LANGUAGE = re.compile(r"^(?:english|eng|en)_|_(?:english|eng|en)$")
_LONGEST_TERM = max(len(t) for t in TERMS)


def _key(label: str) -> str:
    return _SPACES.sub("", label).replace("（", "(").replace("）", ")")


def glossary_name(column: str) -> str | None:
    """Return the glossary's ASCII name for a Chinese column label, ignoring spaces, else ``None``.

    >>> glossary_name("中文 名稱"), glossary_name("回收機構名稱"), glossary_name("冷門欄")
    ('name_zh', 'recycling_organisation_zh', None)
    """
    return GLOSSARY.get(_key(column))


def composed_name(column: str) -> str:
    """Name a Chinese label word by word from :data:`TERMS`, with ``_zh``; ``''`` when nothing is left.

    English words in the label are kept; a CJK character that no term covers is spelt as its code
    point, so the name is the same in every file and every run.

    >>> composed_name("回收機構名稱"), composed_name("WI-FI 熱點"), composed_name("冷門欄")
    ('recycling_organisation_name_zh', 'wi_fi_u71b1_u9ede_zh', 'u51b7_u9580_u6b04_zh')
    """
    words: list[str] = []
    text, i = _key(column), 0
    while i < len(text):
        if CJK_CHAR.match(text, i):
            for size in range(min(_LONGEST_TERM, len(text) - i), 0, -1):
                term = TERMS.get(text[i:i + size])
                if term is not None:
                    words.append(term)
                    i += size
                    break
            else:
                words.append(f"u{ord(text[i]):04x}")
                i += 1
            continue
        word = _ASCII_WORD.match(text, i)
        if word:
            words.append(word.group().lower())
            i = word.end()
        else:
            i += 1
    name = "_".join(w for w in words if w)
    return f"{name[:60]}_zh" if name else ""


def _english_words(label: str) -> set[str]:
    return {w.lower() for w in _ASCII_WORD.findall(label)}


def twin_columns(originals: list[str]) -> dict[int, int]:
    """Return ``{chinese position: english position}`` for the Chinese twins of English columns.

    A run of ``k`` Chinese-labelled columns right after a run of at least ``k`` English-labelled ones
    pairs with the last ``k`` of them, in order. The pairing is trusted only when the header holds at
    least two twins, so a lone Chinese column after ``OBJECTID`` is not taken for its twin. A label
    mixing languages counts as Chinese when its English words all appear in the column before it
    (``WI-FI 覆蓋範圍`` after ``WI-FI COVERAGE``), and as English otherwise (``Name 名稱``).

    >>> twin_columns(["GMID", "Dataset", "Address", "數據集", "地址", "Telephone", "聯絡電話"])
    {3: 1, 4: 2, 6: 5}
    >>> twin_columns(["OBJECTID", "名稱", "地址"])
    {}
    """
    kinds: list[str] = []
    for position, label in enumerate(originals):
        words = _english_words(label)
        if has_cjk(label):
            before = _english_words(originals[position - 1]) if position else set()
            kinds.append("zh" if not words or words <= before else "en")
        else:
            kinds.append("en" if words else "")
    pairs: dict[int, int] = {}
    i = 0
    while i < len(kinds):
        if kinds[i] != "zh":
            i += 1
            continue
        end = i
        while end < len(kinds) and kinds[end] == "zh":
            end += 1
        start = i
        while start > 0 and kinds[start - 1] == "en":
            start -= 1
        size = end - i
        if i - start >= size:
            pairs.update({i + m: i - size + m for m in range(size)})
        i = end
    return pairs if len(pairs) >= 2 else {}


def twin_name(english_name: str) -> str:
    """The name of the Chinese twin of an English column named ``english_name``: ``<english>_zh``.

    A language marker in the English name is dropped, so the twin of ``english_name`` (``ENGLISH
    NAME``) is ``name_zh`` and that of ``name_en`` is ``name_zh``.

    >>> twin_name("telephone"), twin_name("english_category"), twin_name("name_en")
    ('telephone_zh', 'category_zh', 'name_zh')
    """
    base = _LANGUAGE.sub("", english_name) or english_name
    return f"{base[:60]}_zh"
