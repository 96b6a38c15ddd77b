"""How a batch travels on SQLite: lookups by unique key as joins to a VALUES list, inserts as executemany.

Both are plain SQL through the driver, their text cached per shape: SQLAlchemy's per-row parameter processing
and expression building would cost more than SQLite's own work (it was 2/3 of a 1,000-row fan-out commit, and
a 256-key OR chain costs ~30 ms of Python per statement). A lookup binds at most ``LOOKUP_CHUNK`` keys per
statement, padded to a power of two so that few distinct statements exist.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Table

# Keys looked up per statement: 3 columns x 256 rows stays under SQLite's historical limit of 999 variables.
LOOKUP_CHUNK = 256


def padded(chunk: list[Any]) -> list[Any]:
    """``chunk`` (not empty) padded with repeats of its last item to a power-of-two length."""
    size = 1 << (len(chunk) - 1).bit_length()
    return chunk + [chunk[-1]] * (size - len(chunk))


def rows_matching(
    conn: Connection,
    table: Table,
    keys: Sequence[str],
    columns: Sequence[str],
    values: Sequence[tuple[Any, ...]],
) -> list[Any]:
    """The rows of ``table`` whose ``keys`` columns equal one of ``values`` (a batch lookup by unique key).

    Written as a join of the indexed table to a VALUES list: each key is one index probe. (SQLite scans the
    table for a row-value ``IN (VALUES ...)``.) The padding repeats the last key, so a row may come back more
    than once: callers fold the rows into a mapping or a set, or drop the repeats.
    """
    found: list[Any] = []  # rows, each unpackable as ``columns``
    for start in range(0, len(values), LOOKUP_CHUNK):
        chunk = padded(list(values[start : start + LOOKUP_CHUNK]))
        sql = _join_values_sql(table.name, tuple(keys), tuple(columns), len(chunk))
        found.extend(conn.exec_driver_sql(sql, tuple(v for row in chunk for v in row)).all())
    return found


@functools.lru_cache(maxsize=128)
def _join_values_sql(table: str, keys: tuple[str, ...], columns: tuple[str, ...], rows: int) -> str:
    one = "(" + ", ".join("?" * len(keys)) + ")"
    on = " AND ".join(f't."{key}" = k.column{i}' for i, key in enumerate(keys, start=1))
    selected = ", ".join(f't."{column}"' for column in columns)
    # CROSS JOIN fixes the join order: SQLite walks the VALUES list and probes the table's index.
    return f'SELECT {selected} FROM (VALUES {", ".join([one] * rows)}) AS k CROSS JOIN "{table}" AS t ON {on}'


@functools.lru_cache(maxsize=16)
def _insert_sql(table: str, columns: tuple[str, ...], tail: str) -> str:
    names = ", ".join(f'"{column}"' for column in columns)
    return f'INSERT INTO "{table}" ({names}) VALUES ({", ".join("?" * len(columns))}){tail}'


def insert_many(
    conn: Connection, table: str, columns: tuple[str, ...], rows: Sequence[tuple[Any, ...]], tail: str = ""
) -> None:
    """One executemany of plain tuples in ``columns`` order; ``tail`` is an ON CONFLICT clause or empty."""
    if rows:
        conn.exec_driver_sql(_insert_sql(table, columns, tail), list(rows))
