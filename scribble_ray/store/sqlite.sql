-- SQLite job store. Times are REAL seconds since the epoch from the database
-- clock; NOW stands for it and is expanded when the file is loaded.
-- Every write after a claim is fenced by (status = 'running', attempt).

-- name: migration_1
CREATE TABLE IF NOT EXISTS jobs (
    id               TEXT PRIMARY KEY,
    kind             TEXT NOT NULL CHECK (kind IN ('image', 'text')),
    status           TEXT NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL DEFAULT 3,
    options          TEXT NOT NULL DEFAULT '{}',
    owner            TEXT NOT NULL DEFAULT 'local',
    lane             TEXT NOT NULL DEFAULT 'interactive',
    prompt           TEXT,
    input_key        TEXT,
    idempotency_key  TEXT,
    source_job_id    TEXT,
    trace_id         TEXT,
    error            TEXT,
    error_code       TEXT,
    artifacts        TEXT NOT NULL DEFAULT '{}',
    timings          TEXT NOT NULL DEFAULT '{}',
    run_after        REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    lease_owner      TEXT,
    lease_expires_at REAL,
    created_at       REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    started_at       REAL,
    finished_at      REAL,
    updated_at       REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency
    ON jobs (owner, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_queue
    ON jobs (lane, run_after, created_at) WHERE status = 'queued';
CREATE INDEX IF NOT EXISTS jobs_running ON jobs (lease_expires_at) WHERE status = 'running';
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, created_at);
CREATE TABLE IF NOT EXISTS attempts (
    job_id      TEXT NOT NULL REFERENCES jobs (id),
    attempt     INTEGER NOT NULL,
    worker      TEXT NOT NULL,
    node        TEXT,
    started_at  REAL NOT NULL,
    finished_at REAL,
    outcome     TEXT,
    error       TEXT,
    PRIMARY KEY (job_id, attempt)
);

-- name: migration_2
-- (PostgreSQL changes its queue index here; SQLite's already fits the per-lane claims.)
SELECT 1;

-- name: schema_version
SELECT coalesce(max(version), 0) AS version FROM schema_version;

-- name: create_version_table
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL);

-- name: record_version
INSERT INTO schema_version (version, applied_at) VALUES (:version, NOW);

-- name: insert_job
INSERT INTO jobs (id, kind, max_attempts, options, owner, lane, prompt, input_key,
                  idempotency_key, source_job_id, trace_id, run_after, created_at, updated_at)
VALUES (:id, :kind, :max_attempts, :options, :owner, :lane, :prompt, :input_key,
        :idempotency_key, :source_job_id, :trace_id, NOW, NOW, NOW)
ON CONFLICT DO NOTHING
RETURNING *;

-- name: get_job
SELECT * FROM jobs WHERE id = :id;

-- name: get_by_idempotency_key
SELECT * FROM jobs WHERE owner = :owner AND idempotency_key = :idempotency_key;

-- name: claim
-- The one place jobs are claimed: a single conditional UPDATE ... RETURNING of up
-- to :limit rows. Interactive jobs first, oldest runnable first.
UPDATE jobs
   SET status = 'running', attempt = attempt + 1, lease_owner = :worker,
       lease_expires_at = NOW + :lease, started_at = NOW, updated_at = NOW,
       error = NULL, error_code = NULL
 WHERE id IN (SELECT id FROM jobs
              WHERE status = 'queued' AND lane = 'interactive' AND run_after <= NOW
              ORDER BY run_after, created_at
              LIMIT :limit)
   AND status = 'queued'
RETURNING *;

-- name: claim_batch
-- When no interactive job is runnable: the batch lane, fair across owners (the
-- owner with the fewest running batch jobs goes first), oldest first within one.
UPDATE jobs
   SET status = 'running', attempt = attempt + 1, lease_owner = :worker,
       lease_expires_at = NOW + :lease, started_at = NOW, updated_at = NOW,
       error = NULL, error_code = NULL
 WHERE id = (SELECT id FROM jobs j
              WHERE status = 'queued' AND lane = 'batch' AND run_after <= NOW
              ORDER BY (SELECT count(*) FROM jobs r
                         WHERE r.status = 'running' AND r.lane = 'batch' AND r.owner = j.owner),
                       run_after, created_at
              LIMIT 1)
   AND status = 'queued'
RETURNING *;

-- name: open_attempt
-- started_at is copied from the row, not round-tripped through Python (microsecond
-- rounding could make it precede the previous attempt's finished_at).
INSERT INTO attempts (job_id, attempt, worker, node, started_at)
SELECT id, attempt, :worker, :node, started_at FROM jobs WHERE id = :id AND attempt = :attempt;

-- name: renew
UPDATE jobs SET lease_expires_at = NOW + :lease, updated_at = NOW
 WHERE id = :id AND status = 'running' AND attempt = :attempt
RETURNING attempt;

-- name: succeed
UPDATE jobs
   SET status = 'succeeded', artifacts = :artifacts, timings = :timings,
       finished_at = NOW, updated_at = NOW, lease_owner = NULL, lease_expires_at = NULL
 WHERE id = :id AND status = 'running' AND attempt = :attempt
RETURNING status;

-- name: end_attempt
-- Failure, retry, lost worker or expired lease: requeue while attempts are left.
UPDATE jobs
   SET status = CASE WHEN :retry AND attempt < max_attempts THEN 'queued' ELSE 'failed' END,
       run_after = NOW + :delay,
       finished_at = CASE WHEN :retry AND attempt < max_attempts THEN NULL ELSE NOW END,
       error = :message, error_code = :code,
       timings = coalesce(:timings, timings),
       updated_at = NOW, lease_owner = NULL, lease_expires_at = NULL
 WHERE id = :id AND status = 'running' AND attempt = :attempt
   AND (NOT :require_expired OR lease_expires_at < NOW)
RETURNING status;

-- name: close_attempt
UPDATE attempts SET finished_at = NOW, outcome = :outcome, error = :message
 WHERE job_id = :id AND attempt = :attempt AND finished_at IS NULL;

-- name: cancel
UPDATE jobs
   SET status = 'cancelled', finished_at = NOW, updated_at = NOW,
       lease_owner = NULL, lease_expires_at = NULL
 WHERE id = :id AND status IN ('queued', 'running')
RETURNING *;

-- name: expired_leases
SELECT id, attempt FROM jobs
 WHERE status = 'running' AND lease_expires_at < NOW
 ORDER BY lease_expires_at
 LIMIT :limit;

-- name: running_jobs
SELECT id, attempt, lease_owner FROM jobs WHERE status = 'running';

-- name: next_due_in
SELECT max(0.0, min(run_after) - NOW) AS due_in FROM jobs WHERE status = 'queued';

-- name: count_queued_for_owner
-- Admission control: an owner's queued jobs (index jobs_owner narrows it to the owner).
SELECT count(*) AS n FROM jobs WHERE owner = :owner AND status = 'queued';

-- name: count_by_status
SELECT status, lane, count(*) AS n FROM jobs GROUP BY status, lane;

-- name: list_attempts
SELECT * FROM attempts WHERE job_id = :id ORDER BY attempt;

-- name: list_jobs
SELECT * FROM jobs
 WHERE (:owner IS NULL OR owner = :owner)
   AND (:status IS NULL OR status = :status)
   AND (:before IS NULL OR created_at < :before)
 ORDER BY created_at DESC, rowid DESC  -- the clock ticks in ms: ties are common
 LIMIT :limit;

-- name: overlapping_attempts
-- Two attempts of one job that ran at the same time: must always be 0.
SELECT count(*) AS n
  FROM attempts a JOIN attempts b ON a.job_id = b.job_id AND a.attempt < b.attempt
 WHERE b.started_at < coalesce(a.finished_at, 1e18);
