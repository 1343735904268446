"""Whole numbers in a query string: decimal digits and nothing else.

FastAPI reads an `int` query parameter in pydantic's lax mode: `1_0`, `+10`, ` 10 ` and `10.0` all
read as 10. No client means those on purpose, and a position or a page size misread answers for
another position or another page, so each is refused as letters are: 422 naming the parameter.
"""

from __future__ import annotations

import re

from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

_DIGITS = re.compile(r"[0-9]+")


def is_decimal_digits(text: str) -> bool:
    return _DIGITS.fullmatch(text) is not None


def _decimal_digits(value: object) -> object:
    if isinstance(value, str) and not is_decimal_digits(value):
        raise PydanticCustomError("int_parsing", "Input should be decimal digits, such as 10")
    return value


# After Query(...) in an `int` parameter's Annotated: the validator runs on the text, before lax mode.
DECIMAL_DIGITS = BeforeValidator(_decimal_digits)
