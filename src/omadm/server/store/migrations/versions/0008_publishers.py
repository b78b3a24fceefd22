"""Publishers: the trust store of package signing keys the server vouches for.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07

Issue 15, section 5: an unsigned package, or one signed by a key nobody trusts, was accepted
on upload and then failed with 1407 on every device. ``publishers`` keeps each management
authority's publisher keys (a name, the key id people compare, the full fingerprint that is
unique, the PEM); uploads are checked against them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "publishers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("authority_pk", sa.Integer(), nullable=False, server_default=sa.text("1")),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["authority_pk"], ["authorities.id"], name=op.f("fk_publishers_authority_pk_authorities")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_publishers")),
        sa.UniqueConstraint("authority_pk", "name", name="uq_publishers_authority_name"),
        sa.UniqueConstraint("authority_pk", "fingerprint", name="uq_publishers_authority_fingerprint"),
    )


def downgrade() -> None:
    op.drop_table("publishers")
