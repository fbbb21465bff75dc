"""run tasks (SPEC R1-R8): run tasks, attachments, task results, live callback servers

Revision ID: 0002
Revises: 0001
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('run_tasks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=90), nullable=False),
    sa.Column('url', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('description', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('hmac_key_secret', sa.LargeBinary(), nullable=True),
    sa.Column('timeout_s', sa.Float(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('workspace_run_tasks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('workspace_id', sa.Integer(), nullable=False),
    sa.Column('run_task_id', sa.Integer(), nullable=False),
    sa.Column('stage', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('enforcement', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['run_task_id'], ['run_tasks.id'], ),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspaces.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('workspace_id', 'run_task_id')
    )
    with op.batch_alter_table('workspace_run_tasks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_workspace_run_tasks_workspace_id'), ['workspace_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_workspace_run_tasks_run_task_id'), ['run_task_id'], unique=False)

    op.create_table('task_results',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('task_id', sa.Integer(), nullable=False),
    sa.Column('run_task_id', sa.Integer(), nullable=True),
    sa.Column('run_task_name', sqlmodel.sql.sqltypes.AutoString(length=90), nullable=False),
    sa.Column('stage', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('enforcement', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('message', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('url', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('outcomes_json', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('access_token_secret', sa.LargeBinary(), nullable=True),
    sa.Column('token_used', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.Column('deadline_at', sa.Float(), nullable=False),
    sa.Column('finished_at', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('task_results', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_task_results_task_id'), ['task_id'], unique=False)
        batch_op.create_index('ix_task_results_status', ['status'], unique=False)

    op.create_table('runtask_servers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('public_url', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('listen', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('host', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.Float(), nullable=False),
    sa.Column('heartbeat_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )


def downgrade() -> None:
    op.drop_table('runtask_servers')
    with op.batch_alter_table('task_results', schema=None) as batch_op:
        batch_op.drop_index('ix_task_results_status')
        batch_op.drop_index(batch_op.f('ix_task_results_task_id'))
    op.drop_table('task_results')
    with op.batch_alter_table('workspace_run_tasks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_workspace_run_tasks_run_task_id'))
        batch_op.drop_index(batch_op.f('ix_workspace_run_tasks_workspace_id'))
    op.drop_table('workspace_run_tasks')
    op.drop_table('run_tasks')
