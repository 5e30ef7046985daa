"""JSON that every reader accepts: a number that is not finite (a metric of nothing, e.g. the mean IoU
of a set without cells) is written as ``null``, never as the ``NaN`` that strict parsers refuse."""
from __future__ import annotations

import json
import math
from typing import Any


def json_safe(value: Any) -> Any:
    """``value`` with every float that is NaN or infinite (in nested dicts, lists and tuples) as ``None``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # a numpy or torch scalar
        return json_safe(value.item())
    return value


def dumps(value: Any, **kwargs) -> str:
    """``json.dumps`` of :func:`json_safe` ``(value)``."""
    return json.dumps(json_safe(value), allow_nan=False, **kwargs)
