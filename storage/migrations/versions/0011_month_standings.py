"""the month's standings, refreshed by a job; officers' resolutions indexed

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "month_standings",
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("officer_id", sa.Integer(), nullable=False),
        sa.Column("station_id", sa.Integer(), nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("station_rank", sa.Integer(), nullable=False),
        sa.Column("station_size", sa.Integer(), nullable=False),
        sa.Column("county_rank", sa.Integer(), nullable=False),
        sa.Column("county_size", sa.Integer(), nullable=False),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["officer_id"],
            ["officers.id"],
            name=op.f("fk_month_standings_officer_id_officers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["station_id"],
            ["stations.id"],
            name=op.f("fk_month_standings_station_id_stations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("month", "officer_id", name=op.f("pk_month_standings")),
    )
    op.create_index(
        "ix_request_events_officer_resolved",
        "request_events",
        ["officer_id", "at"],
        unique=False,
        postgresql_where=sa.text("event = 'resolved'"),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index(
        "ix_request_events_officer_resolved",
        table_name="request_events",
        postgresql_where=sa.text("event = 'resolved'"),
    )
    op.drop_table("month_standings")
