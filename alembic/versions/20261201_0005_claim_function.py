"""claim function: PostgreSQL claims a run in one round trip

``crucible_claim_run`` does what ``backend.queue.service`` did in up to seven statements (find a
confirmed run to apply; else select the queued candidate, lock its stack, re-check the cap, set a
savepoint, update): take the oldest confirmed run (when asked to), else the oldest admissible
queued run (when asked to), with FOR UPDATE SKIP LOCKED so that concurrent workers never take the
same run; re-check the per-stack cap of proposed runs under the stack row lock; retry when another
worker won the stack (the partial unique index ux_run_stack_active_exclusive); and write the
status the caller names. Target statuses and timestamp keys are parameters:
``backend.queue.service`` derives them from ``backend.runs.lifecycle`` (``start_applying``,
``start_preparing``), which stays the only place that defines the transitions. SQLite keeps the
Python claim (its writers are serialized anyway).

Revision ID: 20261201_0005
Revises: 20261201_0004
Create Date: 2026-12-01 21:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "20261201_0005"
down_revision: str | None = "20261201_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies, as migration 0003 froze the unique index's predicate: backend/runs/models.py
# HOLDING and backend/runs/lifecycle.py EXECUTING at the time of this migration. Literals (not
# parameters) so that the planner can match the partial indexes.
HOLDING = "('preparing', 'planning', 'pending_approval', 'unconfirmed', 'confirmed', 'applying')"
EXECUTING = "('preparing', 'planning', 'applying')"

SIGNATURE = "crucible_claim_run(text, timestamptz, text, text, text, integer, text, text)"

# Writes one claim: the status, its first timestamp (a timestamp already there is kept, as the
# lifecycle's setdefault does), the owner and the heartbeat.
_SET = """
                   SET status = {status},
                       status_timestamps = (jsonb_build_object({key}, p_stamp)
                                            || run.status_timestamps::jsonb)::json,
                       worker_id = p_worker_id,
                       heartbeat_at = p_now,
                       updated_at = p_now"""

CLAIM_FUNCTION = f"""
CREATE FUNCTION crucible_claim_run(
    p_worker_id text,
    p_now timestamptz,
    p_stamp text,
    p_apply_status text,    -- confirmed runs become this (NULL: do not look for them)
    p_apply_key text,
    p_proposed_cap integer,
    p_prepare_status text,  -- queued runs become this (NULL: do not look for them)
    p_prepare_key text
) RETURNS SETOF run
LANGUAGE plpgsql
AS $$
DECLARE
    candidate record;
BEGIN
    IF p_apply_status IS NOT NULL THEN
        -- A confirmed run already holds its stack: nothing to admit, the row lock is enough.
        RETURN QUERY
            UPDATE run{_SET.format(status="p_apply_status", key="p_apply_key")}
             WHERE run.id = (SELECT c.id FROM run c WHERE c.status = 'confirmed'
                              ORDER BY c.updated_at, c.id LIMIT 1 FOR UPDATE SKIP LOCKED)
            RETURNING run.*;
        IF FOUND OR p_prepare_status IS NULL THEN
            RETURN;
        END IF;
    END IF;
    -- A lost race is retried: other runs may still be claimable. Every statement below takes a
    -- new snapshot (READ COMMITTED), so a retry sees what the winner committed.
    FOR attempt IN 1..3 LOOP
        SELECT r.id, r.stack_id, r.exclusive INTO candidate
          FROM run r
         WHERE r.status = 'queued'
           AND (
                (r.exclusive
                 AND NOT EXISTS (SELECT 1 FROM run h
                                  WHERE h.stack_id = r.stack_id AND h.exclusive
                                    AND h.status IN {HOLDING})
                 AND NOT EXISTS (SELECT 1 FROM run o
                                  WHERE o.stack_id = r.stack_id AND o.exclusive AND o.status = 'queued'
                                    AND (o.created_at, o.id) < (r.created_at, r.id)))
                OR (NOT r.exclusive
                    AND (SELECT count(*) FROM run p
                          WHERE p.stack_id = r.stack_id AND NOT p.exclusive
                            AND p.status IN {EXECUTING}) < p_proposed_cap)
           )
         ORDER BY r.created_at, r.id
         LIMIT 1
         FOR UPDATE OF r SKIP LOCKED;
        IF NOT FOUND THEN
            RETURN;
        END IF;
        IF NOT candidate.exclusive THEN
            -- The cap on parallel proposed runs has no index behind it: re-check it under the
            -- stack row lock, which concurrent claims of the same stack's proposed runs queue on.
            -- (NO KEY UPDATE: inserting runs of the stack, a FOR KEY SHARE, is not blocked.)
            PERFORM 1 FROM stack s WHERE s.id = candidate.stack_id FOR NO KEY UPDATE;
            IF (SELECT count(*) FROM run p
                 WHERE p.stack_id = candidate.stack_id AND NOT p.exclusive
                   AND p.status IN {EXECUTING}) >= p_proposed_cap THEN
                CONTINUE;
            END IF;
        END IF;
        BEGIN
            RETURN QUERY
                UPDATE run{_SET.format(status="p_prepare_status", key="p_prepare_key")}
                 WHERE run.id = candidate.id
             RETURNING run.*;
            RETURN;
        EXCEPTION WHEN unique_violation THEN
            NULL;  -- another worker took this run's stack after our snapshot: try again
        END;
    END LOOP;
    RETURN;
END;
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(CLAIM_FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION IF EXISTS {SIGNATURE}")
