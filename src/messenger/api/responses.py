"""Encoding response bodies: one msgspec encoder and the JSON media type for every route."""

from __future__ import annotations

import msgspec

encode = msgspec.json.Encoder().encode
"""msgspec's encoder: structs, dataclasses, UUIDs and datetimes straight to JSON bytes."""
JSON = "application/json"
