"""bill checks

The outcome of each check of WeChat's daily bills (trade, fund flow) against our ledger, and the
discrepancies it found; payments.time_end indexed, because a check reads one day's payments.

Revision ID: b1115c0ffee1
Revises: 326d5fb81b6a
Create Date: 2026-12-01 10:50:00.000000

"""
from alembic import op
import sqlalchemy as sa



# revision identifiers, used by Alembic.
revision = 'b1115c0ffee1'
down_revision = '326d5fb81b6a'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'bill_checks',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('bill_date', sa.Date(), nullable=False),
        sa.Column('bill_type', sa.String(length=16), nullable=False),
        sa.Column('api', sa.String(length=4), nullable=False),
        sa.Column('trigger', sa.String(length=16), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('lines', sa.Integer(), nullable=False),
        sa.Column('payments', sa.Integer(), nullable=False),
        sa.Column('refunds', sa.Integer(), nullable=False),
        sa.Column('paid_fen', sa.Integer(), nullable=False),
        sa.Column('refunded_fen', sa.Integer(), nullable=False),
        sa.Column('fee_fen', sa.Integer(), nullable=False),
        sa.Column('ours_paid_fen', sa.Integer(), nullable=False),
        sa.Column('ours_refunded_fen', sa.Integer(), nullable=False),
        sa.Column('applied', sa.Integer(), nullable=False),
        sa.Column('discrepancy_count', sa.Integer(), nullable=False),
        sa.Column('error', sa.String(length=255), nullable=True),
        sa.CheckConstraint("status IN ('running', 'clean', 'discrepancies', 'no_bill', 'failed')",
                           name=op.f('ck_bill_checks_status_known')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_bill_checks')),
    )
    with op.batch_alter_table('bill_checks', schema=None) as batch_op:
        batch_op.create_index('ix_bill_checks_date_type', ['bill_date', 'bill_type'], unique=False)

    op.create_table(
        'bill_discrepancies',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('check_id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=32), nullable=False),
        sa.Column('out_trade_no', sa.String(length=64), nullable=True),
        sa.Column('transaction_id', sa.String(length=32), nullable=True),
        sa.Column('out_refund_no', sa.String(length=64), nullable=True),
        sa.Column('bill_fen', sa.Integer(), nullable=True),
        sa.Column('ours_fen', sa.Integer(), nullable=True),
        sa.Column('detail', sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(['check_id'], ['bill_checks.id'],
                                name=op.f('fk_bill_discrepancies_check_id_bill_checks'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_bill_discrepancies')),
    )
    with op.batch_alter_table('bill_discrepancies', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_bill_discrepancies_check_id'), ['check_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_bill_discrepancies_out_trade_no'), ['out_trade_no'], unique=False)

    with op.batch_alter_table('payments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_payments_time_end'), ['time_end'], unique=False)


def downgrade():
    with op.batch_alter_table('payments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_payments_time_end'))
    with op.batch_alter_table('bill_discrepancies', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_bill_discrepancies_out_trade_no'))
        batch_op.drop_index(batch_op.f('ix_bill_discrepancies_check_id'))
    op.drop_table('bill_discrepancies')
    with op.batch_alter_table('bill_checks', schema=None) as batch_op:
        batch_op.drop_index('ix_bill_checks_date_type')
    op.drop_table('bill_checks')
