"""How a batch travels on PostgreSQL: as parallel arrays, one per column, turned into rows by ``unnest``.

A batch is then a fixed number of statements whatever its size (no per-row statements, no statement text that
grows with the batch), and each array is one bound parameter of a declared SQL type.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import BigInteger, Boolean, Float, LargeBinary, String, bindparam, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert

if TYPE_CHECKING:
    from sqlalchemy.sql.selectable import TableValuedAlias

Columns = dict[str, tuple[str, Sequence[Any]]]  # column name -> (array kind, values), see rows_of

ARRAY_TYPES: dict[str, ARRAY[Any]] = {
    "text": ARRAY(String),
    "bigint": ARRAY(BigInteger),
    "bytes": ARRAY(LargeBinary),
    "float": ARRAY(Float),
    "bool": ARRAY(Boolean),
}


def rows_of(name: str, **columns: tuple[str, Sequence[Any]]) -> TableValuedAlias:
    """``unnest(:a, :b, ...) AS name(a, b, ...)``: parallel arrays as a table, one array per column; each
    column is given as (element kind, values), the kind naming the array's SQL type."""
    arrays = [
        bindparam(f"{name}_{column}", list(values), type_=ARRAY_TYPES[kind])
        for column, (kind, values) in columns.items()
    ]
    return func.unnest(*arrays).table_valued(*columns).render_derived(name=name)


def insert_unnest(table: Any, name: str, columns: Columns) -> Any:
    """``INSERT INTO table (columns) SELECT * FROM unnest(arrays)``: one statement for any batch size."""
    new = rows_of(name, **columns)
    return pg_insert(table).from_select(list(columns), select(*(new.c[c] for c in columns)))


def bigint_array(name: str, values: Sequence[int]) -> Any:
    """One ``bigint[]`` parameter: a list of any length in one statement (``column = ANY(:name)``)."""
    return bindparam(name, values, type_=ARRAY(BigInteger))


def text_array(name: str, values: Sequence[str]) -> Any:
    """One ``text[]`` parameter (``column = ANY(:name)``)."""
    return bindparam(name, values, type_=ARRAY(String))
