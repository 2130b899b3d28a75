"""The report as text: ``table`` for people, ``json`` and ``csv`` for machines.

CSV has four columns, ``section,rank,field,value``, one row per value of the JSON document:
``section`` is the top-level JSON key (``summary`` for top-level scalars), ``field`` the dotted path
below it, ``rank`` the 1-based position within a list (empty outside lists); empty ``value`` is null.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

from .durations import format_duration

FORMATS = ("table", "json", "csv")


def render(report: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return render_json(report)
    if fmt == "csv":
        return render_csv(report)
    return render_table(report)


def render_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, ensure_ascii=False) + "\n"


def _rows(value: Any, path: str) -> Iterator[tuple[str, str, Any]]:
    """(rank, field, value) for every scalar below ``value``."""
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _rows(child, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for rank, child in enumerate(value, start=1):
            for _, field, leaf in _rows(child, path):
                yield str(rank), field, leaf
    else:
        yield "", path, value


def render_csv(report: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["section", "rank", "field", "value"])
    for section, value in report.items():
        if isinstance(value, dict | list):
            for rank, field, leaf in _rows(value, ""):
                writer.writerow([section, rank, field, _csv_value(leaf)])
        else:
            writer.writerow(["summary", "", section, _csv_value(value)])
    return out.getvalue()


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _bytes(value: int | float | None) -> str:
    if value is None:
        return "-"
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            return f"{amount:,.0f} {unit}" if unit == "B" else f"{amount:,.1f} {unit}"
        amount /= 1024
    return f"{amount:,.1f} TiB"  # pragma: no cover


def _number(value: Any) -> str:
    return "-" if value is None else f"{value:,}"


def _owner(value: str | None) -> str:
    return "(unowned)" if value is None else value


def _table(headers: list[str], rows: list[list[str]], *, left: int = 1, indent: str = "  ") -> list[str]:
    """Columns aligned; the first ``left`` columns (names) to the left, the rest (figures) right."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        aligned = [
            c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return (indent + "  ".join(aligned)).rstrip()

    return [line(headers), *(line(row) for row in rows)]


def render_table(report: dict[str, Any]) -> str:
    lines: list[str] = []
    filters = report["filters"]
    lines.append(f"Conversations in Redis: prefix '{report['key_prefix']}', at {report['generated_at']}")
    described = []
    if filters["owner"] is not None:
        described.append(f"owner {filters['owner']!r}")
    if filters["idle_longer_than_seconds"] is not None:
        described.append(f"idle longer than {format_duration(filters['idle_longer_than_seconds'])}")
    if described:
        lines.append("Filters: " + ", ".join(described))
    lines.extend(f"Warning: {warning}" for warning in report.get("warnings", []))
    lines.append("")
    lines.append(f"Sessions   {report['sessions']:,}")
    lines.append(f"Messages   {report['messages']:,}")
    lines.append("")
    stats = [
        ("messages per session", report["messages_per_session"], _number),
        ("age", report["age_seconds"], format_duration),
        ("idle", report["idle_seconds"], format_duration),
        ("TTL remaining", report["ttl_seconds"], format_duration),
    ]
    lines.extend(
        _table(
            ["", "min", "median", "p95", "max"],
            [
                [name, *(fmt(values[k]) for k in ("min", "median", "p95", "max"))]
                for name, values, fmt in stats
            ],
        )
    )
    lines.append("")
    memory = report["memory"]
    if memory["available"] and memory["sampled_sessions"]:
        lines.append(
            f"Memory     ~{_bytes(memory['estimated_sessions_bytes'])} in sessions "
            f"(MEMORY USAGE of 1 session in {memory['sample_every']}: {memory['sampled_sessions']:,} "
            f"sampled, mean {_bytes(memory['mean_session_bytes'])}), "
            f"{_bytes(memory['index_bytes'])} in owner indexes"
        )
    elif memory["error"]:
        lines.append(f"Memory     unavailable: {memory['error']}")
    else:
        lines.append("Memory     not measured")
    lines.append("")
    largest = report["largest_sessions"]
    lines.append(f"Largest sessions ({len(largest)})")
    if largest:
        lines.extend(
            _table(
                ["id", "owner", "messages", "memory", "idle"],
                [
                    [
                        s["id"],
                        _owner(s["owner"]),
                        _number(s["messages"]),
                        _bytes(s["memory_bytes"]),
                        format_duration(s["idle_seconds"]),
                    ]
                    for s in largest
                ],
                left=2,
            )
        )
    lines.append("")
    owners = report["top_owners"]
    note = "exact" if owners["exact"] else "approximate: a count may be too high by its ±"
    lines.append(f"Owners with most sessions ({note})")
    if owners["owners"]:
        lines.extend(
            _table(
                ["owner", "sessions", "±"],
                [
                    [_owner(o["owner"]), _number(o["sessions"]), _number(o["max_overcount"])]
                    for o in owners["owners"]
                ],
            )
        )
    lines.append("")
    corrupt = report["corrupt"]
    kinds = ", ".join(f"{kind} {count:,}" for kind, count in corrupt["by_kind"].items())
    lines.append(f"Corrupt keys: {corrupt['total']:,}" + (f" ({kinds})" if kinds else ""))
    lines.extend(f"  {e['kind']:<15} {e['key']}  {e['detail']}" for e in corrupt["examples"])
    lines.append("")
    stalled = report["stalled_replies"]
    lines.append(
        f"Stalled replies: {stalled['messages']:,} in-progress messages in {stalled['sessions']:,} "
        f"sessions idle longer than {format_duration(stalled['idle_longer_than_seconds'])}"
    )
    lines.append("")
    drift = report["index_drift"]
    lines.append(
        f"Index drift: stale entries {drift['stale_entries']:,} (session gone), "
        f"missing entries {drift['missing_entries']:,} (session not in its owner's index); "
        f"checked {drift['index_entries']:,} entries in {drift['owner_indexes']:,} owner indexes"
    )
    lines.extend(f"  {e['kind']:<8} {e['index']}  {e['session_id']}" for e in drift["examples"])
    if drift["repair"]:
        lines.append(
            f"Repaired: stale entries removed {drift['repaired_stale']:,}, "
            f"missing entries added {drift['repaired_missing']:,}."
        )
    elif drift["stale_entries"] or drift["missing_entries"]:
        lines.append("Run with --repair to fix the index drift.")
    lines.append("")
    lines.append(
        f"Scanned {report['scanned_keys']:,} session keys in {report['elapsed_seconds']:.2f}s "
        f"({report['script_calls']:,} script calls, the longest {report['longest_script_call_ms']:.1f} ms)."
    )
    return "\n".join(lines) + "\n"
