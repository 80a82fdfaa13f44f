"""Plain JSON data out of what trainers hold (numpy scalars and arrays included)."""

from __future__ import annotations

__all__ = ["json_data"]


def json_data(value: object, where: str = "") -> object:  # where: ".key[0].inner"
    """``value`` as plain JSON data. numpy scalars and arrays (what trainers' batches hold)
    become Python numbers and lists through ``.tolist()``, without importing numpy;
    anything else that JSON cannot carry raises ValueError naming where it is."""
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
        return json_data(value.tolist(), where)
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, dict):
        out = {}
        for key, inner in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where[1:] or 'the value'} has a key {key!r}, not a string")
            out[key] = json_data(inner, f"{where}.{key}")
        return out
    if isinstance(value, list | tuple):
        return [json_data(inner, f"{where}[{i}]") for i, inner in enumerate(value)]
    raise ValueError(f"{where[1:] or 'the value'} is a `{type(value).__name__}`, not JSON data")
