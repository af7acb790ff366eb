"""subscribe messages and credits

`message_credits`: per user and template, how many messages the person allowed (one per accept in
wx.requestSubscribeMessage). `subscribe_messages`: the outbox of paid/shipped/refunded messages, one per
event per order per template (the unique constraint), written with the state change and sent after it.

Revision ID: 326d5fb81b6a
Revises: ecd8f1c4d4a2
Create Date: 2026-12-01 10:36:25.247077

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '326d5fb81b6a'
down_revision = 'ecd8f1c4d4a2'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('message_credits',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('template_id', sa.String(length=64), nullable=False),
    sa.Column('credits', sa.Integer(), nullable=False),
    sa.Column('last_choice', sa.String(length=8), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('credits >= 0', name=op.f('ck_message_credits_credits_not_negative')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_message_credits_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_message_credits')),
    sa.UniqueConstraint('user_id', 'template_id', name=op.f('uq_message_credits_user_id'))
    )
    op.create_table('subscribe_messages',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('order_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('event', sa.String(length=16), nullable=False),
    sa.Column('event_ref', sa.String(length=64), nullable=False),
    sa.Column('template_id', sa.String(length=64), nullable=False),
    sa.Column('touser', sa.String(length=64), nullable=False),
    sa.Column('page', sa.String(length=256), nullable=True),
    sa.Column('data', sa.Text(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('claimed_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('errcode', sa.Integer(), nullable=True),
    sa.Column('error', sa.String(length=255), nullable=True),
    sa.Column('msgid', sa.String(length=32), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("state IN ('pending', 'sent', 'refused')", name=op.f('ck_subscribe_messages_state_known')),
    sa.ForeignKeyConstraint(['order_id'], ['orders.id'], name=op.f('fk_subscribe_messages_order_id_orders')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_subscribe_messages_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_subscribe_messages')),
    sa.UniqueConstraint('order_id', 'event', 'event_ref', 'template_id', name=op.f('uq_subscribe_messages_order_id'))
    )
    with op.batch_alter_table('subscribe_messages', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_subscribe_messages_order_id'), ['order_id'], unique=False)
        batch_op.create_index('ix_subscribe_messages_state_next', ['state', 'next_attempt_at'], unique=False)



def downgrade():
    with op.batch_alter_table('subscribe_messages', schema=None) as batch_op:
        batch_op.drop_index('ix_subscribe_messages_state_next')
        batch_op.drop_index(batch_op.f('ix_subscribe_messages_order_id'))

    op.drop_table('subscribe_messages')
    op.drop_table('message_credits')
