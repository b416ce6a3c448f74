"""What counts as a Chinese character, in one place: for search, ranking and column naming.

A Chinese (CJK) character is a CJK unified ideograph (the basic block, extensions A to H), a compatibility
ideograph, a Kangxi or supplementary radical, the iteration mark 々, the ideographic zero 〇, or a Hangzhou
numeral (〡-〩, 〸-〻). The Yijing hexagram symbols (U+4DC0-U+4DFF), inside the ideograph blocks' span, are
not characters of words and are left out.

>>> has_cjk("Name 名稱"), has_cjk("Name"), CJK_RUN.findall("選區 2019 分界")
(True, False, ['選區', '分界'])
"""

from __future__ import annotations

import re

__all__ = ["CJK_CHAR", "CJK_CLASS", "CJK_RUN", "has_cjk"]

CJK_CLASS = ("\u2e80-\u2fdf\u3005\u3007\u3021-\u3029\u3038-\u303b\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
             "\U00020000-\U0003134f")
"""The ranges of :mod:`sdi.text`'s Chinese characters, for use inside a regular expression's ``[...]``."""
CJK_CHAR = re.compile(f"[{CJK_CLASS}]")  #: one Chinese character
CJK_RUN = re.compile(f"[{CJK_CLASS}]+")  #: a run of Chinese characters (a Chinese "word" before segmentation)


def has_cjk(text: str) -> bool:
    """Whether ``text`` holds a Chinese (CJK) character."""
    return CJK_CHAR.search(text) is not None
