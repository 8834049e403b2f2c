"""Report rollups (hub/district/reports_rollup.py) and the indexes the reports need.

Revision ID: 0002
Revises: 0001
Create Date: 2026-01-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _key(name: str, length: int | None = None) -> sa.Column:
    kind: sa.types.TypeEngine = sa.Integer() if length is None else sa.String(length=length)
    return sa.Column(name, kind, nullable=False, autoincrement=False)


_UNIT = (("grain", 1), ("dim", 8), ("period", 10), ("office", 32), ("unit", 100))


def upgrade() -> None:
    op.create_table(
        "report_unit",
        *(_key(n, w) for n, w in _UNIT),
        _key("channel", 16),
        _key("scale"),
        _key("level"),
        sa.Column("n_valid", sa.Integer(), nullable=False),
        sa.Column("n_excl", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "grain", "dim", "period", "office", "unit", "channel", "scale", "level"
        ),
    )
    op.create_table(
        "report_excl",
        *(_key(n, w) for n, w in _UNIT),
        _key("channel", 16),
        _key("reason", 64),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("grain", "dim", "period", "office", "unit", "channel", "reason"),
    )
    op.create_table(
        "report_case",
        *(_key(n, w) for n, w in _UNIT),
        sa.Column("cases", sa.Integer(), nullable=False),
        sa.Column("rated", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("grain", "dim", "period", "office", "unit"),
    )
    op.create_table(
        "report_dirty",
        _key("office", 32),
        _key("day", 10),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("office", "day"),
    )
    op.create_table(
        "report_version",
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("month"),
    )
    for t in ("report_unit", "report_excl", "report_case"):
        op.create_index(f"ix_{t}_office", t, ["office", "grain", "dim", "period"])
    op.create_index("ix_exclusion_reverses", "exclusion", ["office", "reverses"])
    op.create_index("ix_correction_reverses", "correction", ["office", "reverses"])
    # every day that already holds ratings or cases is computed by the first report
    op.execute(
        "INSERT INTO report_dirty (office, day, hits) SELECT DISTINCT office, "
        + _day("press_time")
        + ", 1 FROM rating"
    )
    op.execute(
        "INSERT INTO report_dirty (office, day, hits) SELECT DISTINCT office, "
        + _day("handed_back_at")
        + ", 1 FROM case_file WHERE NOT EXISTS (SELECT 1 FROM report_dirty d WHERE "
        + "d.office = case_file.office AND d.day = "
        + _day("handed_back_at")
        + ")"
    )


def _day(col: str) -> str:
    from hub.district.reports_rollup import day_sql

    return day_sql(op.get_bind().dialect.name, col)


def downgrade() -> None:
    op.drop_index("ix_correction_reverses", table_name="correction")
    op.drop_index("ix_exclusion_reverses", table_name="exclusion")
    for t in ("report_case", "report_excl", "report_unit"):
        op.drop_index(f"ix_{t}_office", table_name=t)
    for t in ("report_version", "report_dirty", "report_case", "report_excl", "report_unit"):
        op.drop_table(t)
