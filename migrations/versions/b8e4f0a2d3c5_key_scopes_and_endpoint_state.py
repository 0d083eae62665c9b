"""API key scopes; the endpoint's paused state on project_flow

Revision ID: b8e4f0a2d3c5
Revises: e5c7a9b1d3f2
Create Date: 2026-11-29 13:30:00

``api_keys.scope``: ``jobs`` (every existing key, and the default) or ``admin`` (DESIGN.md §5).
``project_flow.endpoint_paused_at`` / ``endpoint_pause_reason``: the endpoint state shown by
``GET /api/project`` and cleared by ``POST /api/project/resume`` (DESIGN.md §12); the callbacks
branch's d1f6b2c4e5a7 adds the same two columns (agreed storage): when both branches are merged,
keep them in one revision only.
"""
from alembic import op
import sqlalchemy as sa


revision = "b8e4f0a2d3c5"
down_revision = "e5c7a9b1d3f2"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(
            sa.Column("scope", sa.String(length=16), nullable=False, server_default="jobs")
        )
    with op.batch_alter_table("project_flow") as batch:
        batch.add_column(sa.Column("endpoint_paused_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("endpoint_pause_reason", sa.Text(), nullable=True))


def downgrade():
    with op.batch_alter_table("project_flow") as batch:
        batch.drop_column("endpoint_pause_reason")
        batch.drop_column("endpoint_paused_at")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("scope")
