"""Column shapes the 3.0.0 schema repeats: text, flags and enumerations.

The CHECK constraints are column-level and unnamed, exactly as 3.0.0 wrote them.
"""

from sqlalchemy import REAL, CheckConstraint, Column, Integer, Text, text
from sqlalchemy.dialects import postgresql


def text_col(name: str, *args, nullable: bool = True, **kwargs) -> Column:
    return Column(name, Text, *args, nullable=nullable, **kwargs)


def int_col(name: str, *, nullable: bool = True, default: int | None = None) -> Column:
    server_default = None if default is None else text(str(default))
    return Column(name, Integer, nullable=nullable, server_default=server_default)


def real_col(name: str, *, default: str) -> Column:
    """SQLite REAL is 8 bytes; PostgreSQL's REAL is 4, so it gets DOUBLE PRECISION."""
    real = REAL().with_variant(postgresql.DOUBLE_PRECISION(), "postgresql")
    return Column(name, real, nullable=False, server_default=text(default))


def flag_col(name: str, *, default: int | None = None) -> Column:
    """An INTEGER NOT NULL 0/1 flag with its CHECK."""
    server_default = None if default is None else text(str(default))
    return Column(
        name,
        Integer,
        CheckConstraint(f"{name} IN (0, 1)"),
        nullable=False,
        server_default=server_default,
    )


def choice_col(name: str, *values: str) -> Column:
    """A TEXT NOT NULL enumeration with its CHECK."""
    allowed = ", ".join(f"'{value}'" for value in values)
    return Column(name, Text, CheckConstraint(f"{name} IN ({allowed})"), nullable=False)
