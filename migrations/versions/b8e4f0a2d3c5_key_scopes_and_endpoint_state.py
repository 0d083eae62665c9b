"""API key scopes

Revision ID: b8e4f0a2d3c5
Revises: d1f6b2c4e5a7
Create Date: 2026-11-29 13:30:00

``api_keys.scope``: ``jobs`` (every existing key, and the default) or ``admin`` (DESIGN.md §5).
The endpoint's paused state that ``GET /api/project`` shows is on ``project_flow``, added by
d1f6b2c4e5a7 (callbacks and endpoint health).
"""
from alembic import op
import sqlalchemy as sa


revision = "b8e4f0a2d3c5"
down_revision = "d1f6b2c4e5a7"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(
            sa.Column("scope", sa.String(length=16), nullable=False, server_default="jobs")
        )


def downgrade():
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("scope")
