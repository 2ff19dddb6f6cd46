-- One job's life in three autocommitted statements, as pgbench runs it per
-- "transaction" (see benchmarks/pgbench_lifecycle.py): enqueue, claim the
-- oldest pending job with SKIP LOCKED, complete it. The table starts with a
-- backlog, so a claim always finds a job even while other clients hold some.

INSERT INTO bench_lifecycle_job (status, payload) VALUES ('PENDING', '{}');

UPDATE bench_lifecycle_job
SET status = 'RUNNING', started_at = now(), attempts = attempts + 1
WHERE id = (
    SELECT id FROM bench_lifecycle_job
    WHERE status = 'PENDING'
    ORDER BY id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
RETURNING id AS job_id \gset

UPDATE bench_lifecycle_job
SET status = 'COMPLETED', finished_at = now(), result = 'null'
WHERE id = :job_id;
