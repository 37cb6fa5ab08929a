"""Sync rows as Exact writes them, with the values that are hard to carry over exactly (shared by the page tests)."""

from __future__ import annotations

from typing import Any


def row(i: int, **changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "__metadata": {"uri": f"https://start.exactonline.nl/api/v1/1/sync/CRM/Accounts({i}L)", "type": "Exact.X"},
        "Timestamp": 1000 + i,
        "ID": f"00000000-0000-4000-8000-{i:012d}",
        "Name": ["Zeeman B.V.", "Düsseldorf GmbH", "日本語 \u2028 😀", 'O\'Brien, "Ltd"\n', ""][i % 5],
        "Created": "/Date(1609750802600)/",
        "EndDate": "/Date(-62135596800000)/" if i % 2 else None,
        "Amount": [1.5, -0.0, 123456789.123, 9999999999999998.0, 1e-7][i % 5],
        "Count": [0, -(2**63), 2**63 - 1, 42, 7][i % 5],
        "Blocked": bool(i % 2),
        "Remarks": None,
        "Control": '\x00\x1f\x7f\\/ {"__metadata":{},',  # control characters, escapes, a row's opening as text
    }
    record.update(changes)
    return record
