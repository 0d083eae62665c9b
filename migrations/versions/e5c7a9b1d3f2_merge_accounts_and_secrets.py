"""merge the accounts and the secrets branches

Revision ID: e5c7a9b1d3f2
Revises: c3a1e5d2f7b9, d4b2f6e3a8c0
Create Date: 2026-11-29 12:00:00

"""

revision = "e5c7a9b1d3f2"
down_revision = ("c3a1e5d2f7b9", "d4b2f6e3a8c0")
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
