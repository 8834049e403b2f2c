"""The district schema, first version: every table of hub/district/models.py.

Revision ID: 0001
Revises:
Create Date: 2026-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "case_file",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("office", sa.String(length=32), nullable=False),
        sa.Column("hub_id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=100), nullable=False),
        sa.Column("desk_id", sa.String(length=64), nullable=True),
        sa.Column("procedure", sa.String(length=300), nullable=True),
        sa.Column("field", sa.String(length=100), nullable=True),
        sa.Column("official_id", sa.String(length=64), nullable=True),
        sa.Column("handed_back_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=True),
        sa.Column("batch", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("office", "hub_id", name="uq_case_hub_id"),
    )
    op.create_index(op.f("ix_case_file_code"), "case_file", ["code"], unique=False)
    op.create_index(
        op.f("ix_case_file_handed_back_at"), "case_file", ["handed_back_at"], unique=False
    )
    op.create_table(
        "correction",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("office", sa.String(length=32), nullable=False),
        sa.Column("hub_id", sa.Integer(), nullable=False),
        sa.Column("terminal_id", sa.String(length=64), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("official_id", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reverses", sa.Integer(), nullable=True),
        sa.Column("batch", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("office", "hub_id", name="uq_correction_hub_id"),
    )
    op.create_index(
        "ix_correction_rating", "correction", ["terminal_id", "epoch", "seq"], unique=False
    )
    op.create_table(
        "desk",
        sa.Column("office", sa.String(length=32), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("requires_case", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("office", "id"),
    )
    op.create_table(
        "directory_snapshot",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("office", sa.String(length=32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("snapshot", sa.JSON(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("office", "version", name="uq_directory_version"),
    )
    op.create_table(
        "duty_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("office", sa.String(length=32), nullable=False),
        sa.Column("hub_id", sa.Integer(), nullable=False),
        sa.Column("desk_id", sa.String(length=64), nullable=False),
        sa.Column("official_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=True),
        sa.Column("batch", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("office", "hub_id", name="uq_duty_hub_id"),
    )
    op.create_table(
        "exclusion",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("office", sa.String(length=32), nullable=False),
        sa.Column("hub_id", sa.Integer(), nullable=False),
        sa.Column("terminal_id", sa.String(length=64), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("note", sa.String(length=500), nullable=True),
        sa.Column("actor", sa.String(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reverses", sa.Integer(), nullable=True),
        sa.Column("batch", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("office", "hub_id", name="uq_exclusion_hub_id"),
    )
    op.create_index(
        "ix_exclusion_rating", "exclusion", ["terminal_id", "epoch", "seq"], unique=False
    )
    op.create_table(
        "finding",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("office", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("terminal_id", sa.String(length=64), nullable=True),
        sa.Column("epoch", sa.Integer(), nullable=True),
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=True),
        sa.Column("item", sa.JSON(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("batch", sa.String(length=200), nullable=False),
        sa.Column("detected_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("fingerprint"),
    )
    op.create_index("ix_finding_office_kind", "finding", ["office", "kind"], unique=False)
    op.create_table(
        "heartbeat",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("office", sa.String(length=32), nullable=False),
        sa.Column("terminal_id", sa.String(length=14), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("time", sa.BigInteger(), nullable=False),
        sa.Column("dtag", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=True),
        sa.Column("batch", sa.String(length=200), nullable=False),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("terminal_id", "epoch", "last_seq", "time", name="uq_heartbeat_signed"),
    )
    op.create_table(
        "office",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "official",
        sa.Column("office", sa.String(length=32), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("office", "id"),
    )
    op.create_table(
        "paper_box",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("office", sa.String(length=32), nullable=False),
        sa.Column("hub_id", sa.Integer(), nullable=False),
        sa.Column("desk_id", sa.String(length=64), nullable=True),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("seal_intact", sa.Boolean(), nullable=True),
        sa.Column("ballots", sa.Integer(), nullable=True),
        sa.Column("invalid_ballots", sa.Integer(), nullable=True),
        sa.Column("supersedes", sa.Integer(), nullable=True),
        sa.Column("minutes", sa.JSON(), nullable=False),
        sa.Column("batch", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("office", "hub_id", name="uq_paper_box_hub_id"),
    )
    op.create_table(
        "rating",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("terminal_id", sa.String(length=64), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("office", sa.String(length=32), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("flags", sa.Integer(), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("scale", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Integer(), nullable=False),
        sa.Column("press_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("clock_unknown", sa.Boolean(), nullable=False),
        sa.Column("repeat", sa.Boolean(), nullable=False),
        sa.Column("test", sa.Boolean(), nullable=False),
        sa.Column("prompted", sa.Boolean(), nullable=False),
        sa.Column("followup", sa.Boolean(), nullable=False),
        sa.Column("verified", sa.Boolean(), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("desk", sa.String(length=64), nullable=True),
        sa.Column("official_id", sa.String(length=64), nullable=True),
        sa.Column("case_code", sa.String(length=100), nullable=True),
        sa.Column("link_status", sa.String(length=32), nullable=True),
        sa.Column("hub_received_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("batch", sa.String(length=200), nullable=False),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("terminal_id", "epoch", "seq", name="uq_rating_key"),
    )
    op.create_index(op.f("ix_rating_case_code"), "rating", ["case_code"], unique=False)
    op.create_index("ix_rating_office_press_time", "rating", ["office", "press_time"], unique=False)
    op.create_index(op.f("ix_rating_official_id"), "rating", ["official_id"], unique=False)
    op.create_table(
        "suspected_deletion",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("office", sa.String(length=32), nullable=False),
        sa.Column("terminal_id", sa.String(length=14), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("seq_from", sa.BigInteger(), nullable=False),
        sa.Column("seq_to", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("detected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_suspected_deletion_open", "suspected_deletion", ["office", "resolved_at"], unique=False
    )
    op.create_table(
        "sync_batch",
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("office", sa.String(length=32), nullable=False),
        sa.Column("stream", sa.String(length=16), nullable=False),
        sa.Column("from_pos", sa.BigInteger(), nullable=False),
        sa.Column("to_pos", sa.BigInteger(), nullable=False),
        sa.Column("items", sa.Integer(), nullable=False),
        sa.Column("body_sha256", sa.String(length=64), nullable=False),
        sa.Column("answer", sa.JSON(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("idempotency_key"),
    )
    op.create_index(op.f("ix_sync_batch_office"), "sync_batch", ["office"], unique=False)
    op.create_table(
        "api_token",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("office", sa.String(length=32), nullable=True),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=8), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["office"],
            ["office.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_table(
        "hub",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("office", sa.String(length=32), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=8), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["office"],
            ["office.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_index(op.f("ix_hub_office"), "hub", ["office"], unique=False)
    op.create_table(
        "paper_tally",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("box_id", sa.Integer(), nullable=False),
        sa.Column("office", sa.String(length=32), nullable=False),
        sa.Column("desk_id", sa.String(length=64), nullable=True),
        sa.Column("official_id", sa.String(length=64), nullable=True),
        sa.Column("field", sa.String(length=100), nullable=True),
        sa.Column("scale", sa.Integer(), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["box_id"],
            ["paper_box.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_paper_tally_box_id"), "paper_tally", ["box_id"], unique=False)
    op.create_table(
        "terminal_key",
        sa.Column("terminal_id", sa.String(length=14), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("office", sa.String(length=32), nullable=False),
        sa.Column("district_key", sa.String(length=64), nullable=False),
        sa.Column("desk", sa.String(length=64), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("issued_by", sa.String(length=100), nullable=False),
        sa.ForeignKeyConstraint(
            ["office"],
            ["office.id"],
        ),
        sa.PrimaryKeyConstraint("terminal_id", "epoch"),
    )
    op.create_index(op.f("ix_terminal_key_office"), "terminal_key", ["office"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_terminal_key_office"), table_name="terminal_key")
    op.drop_table("terminal_key")
    op.drop_index(op.f("ix_paper_tally_box_id"), table_name="paper_tally")
    op.drop_table("paper_tally")
    op.drop_index(op.f("ix_hub_office"), table_name="hub")
    op.drop_table("hub")
    op.drop_table("api_token")
    op.drop_index(op.f("ix_sync_batch_office"), table_name="sync_batch")
    op.drop_table("sync_batch")
    op.drop_index("ix_suspected_deletion_open", table_name="suspected_deletion")
    op.drop_table("suspected_deletion")
    op.drop_index(op.f("ix_rating_official_id"), table_name="rating")
    op.drop_index("ix_rating_office_press_time", table_name="rating")
    op.drop_index(op.f("ix_rating_case_code"), table_name="rating")
    op.drop_table("rating")
    op.drop_table("paper_box")
    op.drop_table("official")
    op.drop_table("office")
    op.drop_table("heartbeat")
    op.drop_index("ix_finding_office_kind", table_name="finding")
    op.drop_table("finding")
    op.drop_index("ix_exclusion_rating", table_name="exclusion")
    op.drop_table("exclusion")
    op.drop_table("duty_event")
    op.drop_table("directory_snapshot")
    op.drop_table("desk")
    op.drop_index("ix_correction_rating", table_name="correction")
    op.drop_table("correction")
    op.drop_index(op.f("ix_case_file_handed_back_at"), table_name="case_file")
    op.drop_index(op.f("ix_case_file_code"), table_name="case_file")
    op.drop_table("case_file")
