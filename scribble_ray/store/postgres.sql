-- PostgreSQL job store. NOW is the database clock (clock_timestamp()).
-- Every write after a claim is fenced by (status = 'running', attempt).

-- name: migration_1
CREATE TABLE IF NOT EXISTS jobs (
    id               TEXT PRIMARY KEY,
    kind             TEXT NOT NULL CHECK (kind IN ('image', 'text')),
    status           TEXT NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL DEFAULT 3,
    options          JSONB NOT NULL DEFAULT '{}',
    owner            TEXT NOT NULL DEFAULT 'local',
    lane             TEXT NOT NULL DEFAULT 'interactive',
    prompt           TEXT,
    input_key        TEXT,
    idempotency_key  TEXT,
    source_job_id    TEXT,
    trace_id         TEXT,
    error            TEXT,
    error_code       TEXT,
    artifacts        JSONB NOT NULL DEFAULT '{}',
    timings          JSONB NOT NULL DEFAULT '{}',
    run_after        TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    lease_owner      TEXT,
    lease_expires_at TIMESTAMPTZ,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    started_at       TIMESTAMPTZ,
    finished_at      TIMESTAMPTZ,
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency
    ON jobs (owner, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_queue
    ON jobs ((lane = 'batch'), run_after, created_at) WHERE status = 'queued';
CREATE INDEX IF NOT EXISTS jobs_running ON jobs (lease_expires_at) WHERE status = 'running';
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, created_at);
CREATE TABLE IF NOT EXISTS attempts (
    job_id      TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    worker      TEXT NOT NULL,
    node        TEXT,
    started_at  TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    outcome     TEXT,
    error       TEXT,
    PRIMARY KEY (job_id, attempt)
);
-- Jobs inserted by other services (the old web front end did) wake the coordinator.
CREATE OR REPLACE FUNCTION scribble_notify_job() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('scribble_jobs', NEW.id);
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS jobs_notify ON jobs;
CREATE TRIGGER jobs_notify AFTER INSERT ON jobs FOR EACH ROW EXECUTE FUNCTION scribble_notify_job();

-- name: migration_2
-- Claims select one lane at a time: index (lane, run_after, created_at).
DROP INDEX IF EXISTS jobs_queue;
CREATE INDEX IF NOT EXISTS jobs_queue_lane
    ON jobs (lane, run_after, created_at) WHERE status = 'queued';

-- name: schema_version
SELECT coalesce(max(version), 0) AS version FROM schema_version;

-- name: create_version_table
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL);

-- name: record_version
INSERT INTO schema_version (version, applied_at) VALUES (:version, NOW);

-- name: insert_job
INSERT INTO jobs (id, kind, max_attempts, options, owner, lane, prompt, input_key,
                  idempotency_key, source_job_id, trace_id)
VALUES (:id, :kind, :max_attempts, :options, :owner, :lane, :prompt, :input_key,
        :idempotency_key, :source_job_id, :trace_id)
ON CONFLICT DO NOTHING
RETURNING *;

-- name: get_job
SELECT * FROM jobs WHERE id = :id;

-- name: get_by_idempotency_key
SELECT * FROM jobs WHERE owner = :owner AND idempotency_key = :idempotency_key;

-- name: claim
-- The one place jobs are claimed: one statement that locks the next :limit runnable
-- rows (skipping rows other claimers hold), marks them running and opens their
-- ledger rows.
WITH next AS (
    SELECT id FROM jobs
     WHERE status = 'queued' AND lane = 'interactive' AND run_after <= NOW
     ORDER BY run_after, created_at
     LIMIT :limit
       FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE jobs j
       SET status = 'running', attempt = j.attempt + 1, lease_owner = :worker,
           lease_expires_at = NOW + make_interval(secs => :lease), started_at = NOW,
           updated_at = NOW, error = NULL, error_code = NULL
      FROM next
     WHERE j.id = next.id AND j.status = 'queued'
    RETURNING j.*
), ledger AS (
    INSERT INTO attempts (job_id, attempt, worker, node, started_at)
    SELECT id, attempt, :worker, :node, started_at FROM claimed
)
SELECT * FROM claimed;

-- name: claim_batch
-- When no interactive job is runnable: the batch lane, fair across owners (the
-- owner with the fewest running batch jobs goes first), oldest first within one.
WITH next AS (
    SELECT id FROM jobs j
     WHERE status = 'queued' AND lane = 'batch' AND run_after <= NOW
     ORDER BY (SELECT count(*) FROM jobs r
                WHERE r.status = 'running' AND r.lane = 'batch' AND r.owner = j.owner),
              run_after, created_at
     LIMIT 1
       FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE jobs j
       SET status = 'running', attempt = j.attempt + 1, lease_owner = :worker,
           lease_expires_at = NOW + make_interval(secs => :lease), started_at = NOW,
           updated_at = NOW, error = NULL, error_code = NULL
      FROM next
     WHERE j.id = next.id AND j.status = 'queued'
    RETURNING j.*
), ledger AS (
    INSERT INTO attempts (job_id, attempt, worker, node, started_at)
    SELECT id, attempt, :worker, :node, started_at FROM claimed
)
SELECT * FROM claimed;

-- name: succeed_many
-- Several attempts' successes in one statement (a worker's group commit), each
-- fenced on its own (job, attempt) exactly as `succeed`.
WITH input AS (
    SELECT * FROM unnest(:ids::text[], :attempts::int[], :artifacts::jsonb[], :timings::jsonb[])
        AS t(id, attempt, artifacts, timings)
), done AS (
    UPDATE jobs j
       SET status = 'succeeded', artifacts = input.artifacts, timings = input.timings,
           finished_at = NOW, updated_at = NOW, lease_owner = NULL, lease_expires_at = NULL
      FROM input
     WHERE j.id = input.id AND j.status = 'running' AND j.attempt = input.attempt
    RETURNING j.id, j.attempt
), ledger AS (
    UPDATE attempts a SET finished_at = NOW, outcome = 'succeeded'
      FROM done WHERE a.job_id = done.id AND a.attempt = done.attempt
)
SELECT id, attempt FROM done;

-- name: renew
UPDATE jobs SET lease_expires_at = NOW + make_interval(secs => :lease), updated_at = NOW
 WHERE id = :id AND status = 'running' AND attempt = :attempt
RETURNING attempt;

-- name: end_attempt
-- Failure, retry, lost worker or expired lease: requeue while attempts are left.
WITH ended AS (
    UPDATE jobs
       SET status = CASE WHEN :retry AND attempt < max_attempts THEN 'queued' ELSE 'failed' END,
           run_after = NOW + make_interval(secs => :delay),
           finished_at = CASE WHEN :retry AND attempt < max_attempts THEN NULL ELSE NOW END,
           error = :message, error_code = :code,
           timings = coalesce(:timings, timings),
           updated_at = NOW, lease_owner = NULL, lease_expires_at = NULL
     WHERE id = :id AND status = 'running' AND attempt = :attempt
       AND (NOT :require_expired OR lease_expires_at < NOW)
    RETURNING id, attempt, status
), ledger AS (
    UPDATE attempts a
       SET finished_at = NOW, error = :message,
           outcome = CASE WHEN ended.status = 'queued' THEN :outcome ELSE 'failed' END
      FROM ended WHERE a.job_id = ended.id AND a.attempt = ended.attempt
)
SELECT status FROM ended;

-- name: cancel
WITH cancelled AS (
    UPDATE jobs
       SET status = 'cancelled', finished_at = NOW, updated_at = NOW,
           lease_owner = NULL, lease_expires_at = NULL
     WHERE id = :id AND status IN ('queued', 'running')
    RETURNING *
), ledger AS (
    UPDATE attempts a SET finished_at = NOW, outcome = 'cancelled'
      FROM cancelled
     WHERE a.job_id = cancelled.id AND a.attempt = cancelled.attempt AND a.finished_at IS NULL
)
SELECT * FROM cancelled;

-- name: expired_leases
SELECT id, attempt FROM jobs
 WHERE status = 'running' AND lease_expires_at < NOW
 ORDER BY lease_expires_at
 LIMIT :limit;

-- name: running_jobs
SELECT id, attempt, lease_owner FROM jobs WHERE status = 'running';

-- name: next_due_in
-- greatest() ignores NULL: guard the empty queue so it answers NULL, not 0 (due now).
SELECT CASE WHEN min(run_after) IS NULL THEN NULL
            ELSE greatest(0.0, extract(epoch FROM min(run_after) - NOW))::float8 END AS due_in
  FROM jobs WHERE status = 'queued';

-- name: count_queued_for_owner
-- Admission control: an owner's queued jobs (index jobs_owner narrows it to the owner).
SELECT count(*) AS n FROM jobs WHERE owner = :owner AND status = 'queued';

-- name: count_by_status
SELECT status, lane, count(*) AS n FROM jobs GROUP BY status, lane;

-- name: list_attempts
SELECT * FROM attempts WHERE job_id = :id ORDER BY attempt;

-- name: list_jobs
SELECT * FROM jobs
 WHERE (:owner::text IS NULL OR owner = :owner)
   AND (:status::text IS NULL OR status = :status)
   AND (:before::timestamptz IS NULL OR created_at < :before)
 ORDER BY created_at DESC
 LIMIT :limit;

-- name: overlapping_attempts
-- Two attempts of one job that ran at the same time: must always be 0.
SELECT count(*) AS n
  FROM attempts a JOIN attempts b ON a.job_id = b.job_id AND a.attempt < b.attempt
 WHERE b.started_at < coalesce(a.finished_at, 'infinity');
