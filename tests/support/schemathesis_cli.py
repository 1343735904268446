"""`st` (schemathesis' command line) for the contract test, with one bug of its environment worked
around: CPython 3.11.7's `ast.parse` can raise SystemError ("AST constructor recursion depth
mismatch") when called deep in a stack, and Hypothesis calls it to describe a lambda in a strategy's
repr while validating schemathesis' recursive strategies. A description is only text for messages,
so an unknown one is given instead; nothing of the test's judgement depends on it.

    python -m support.schemathesis_cli run URL ...   (the same arguments as `st`)
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from hypothesis.internal import lambda_sources

_describe: Callable[..., str] = lambda_sources._lambda_description


def _described(f: Any, *args: Any, **kwargs: Any) -> str:
    try:
        return _describe(f, *args, **kwargs)
    except SystemError:
        return "lambda: <unknown>"


lambda_sources._lambda_description = _described

if __name__ == "__main__":
    from schemathesis.cli import schemathesis

    sys.exit(schemathesis())
