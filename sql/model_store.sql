-- The model store: transactional, versioned, immutable versions
\getenv abs_srcdir PG_ABS_SRCDIR
\set v1 :abs_srcdir '/test/data/sentiment_v1.ftz'
\set v2 :abs_srcdir '/test/data/sentiment_v2.ftz'
\set SHOW_CONTEXT never
CREATE EXTENSION IF NOT EXISTS pg_triage;
\set stale 'the coffee was stale and bitter, never again'

SELECT triage.import_fasttext('store', pg_read_binary_file(:'v1'));
SELECT triage.import_fasttext('store', pg_read_binary_file(:'v2'));

-- an import rolled back leaves no version behind
BEGIN;
SELECT triage.import_fasttext('store', pg_read_binary_file(:'v1'));
ROLLBACK;
SELECT version FROM triage.models WHERE name = 'store' ORDER BY version;
-- version numbers continue from the highest stored, and are never reused
SELECT triage.import_fasttext('store', pg_read_binary_file(:'v1'));
DELETE FROM triage.models WHERE name = 'store' AND version = 3;
BEGIN;
SELECT triage.import_fasttext('store', pg_read_binary_file(:'v2')) AS not_3_again;
ROLLBACK;

-- a deployment is seen by the next statement of the same transaction,
-- and rolled back with it
SELECT (triage.classify('store', :'stale')).label;
BEGIN;
SELECT triage.deploy('store', 2);
SELECT (triage.classify('store', :'stale')).label;
ROLLBACK;
SELECT (triage.classify('store', :'stale')).label;

-- a plain UPDATE of triage.deployments works too
UPDATE triage.deployments SET version = 2 WHERE name = 'store';
SELECT (triage.classify('store', :'stale')).label;
UPDATE triage.deployments SET version = 1 WHERE name = 'store';

-- in a PL/pgSQL loop, each statement sees the deployment of the moment
DO $$
DECLARE
	v int;
BEGIN
	FOREACH v IN ARRAY ARRAY[2, 1, 2]
	LOOP
		PERFORM triage.deploy('store', v);
		RAISE NOTICE 'deployed %: %', v,
			(triage.classify('store', 'the coffee was stale and bitter, never again')).label;
	END LOOP;
END
$$;
SELECT triage.deploy('store', 1);

-- a deleted then re-imported version is reloaded, not served from the cache
SELECT triage.import_fasttext('swap', pg_read_binary_file(:'v1'));
SELECT (triage.classify('swap', :'stale')).label;
BEGIN;
DELETE FROM triage.deployments WHERE name = 'swap';
DELETE FROM triage.models WHERE name = 'swap';
SELECT triage.import_fasttext('swap', pg_read_binary_file(:'v2'));
SELECT (triage.classify('swap', :'stale')).label;
COMMIT;

-- versions are immutable; only metrics may change
UPDATE triage.models SET data = '\x00' WHERE name = 'store' AND version = 1;
UPDATE triage.models SET labels = '{a,b}' WHERE name = 'store' AND version = 1;
UPDATE triage.models SET metrics = '{"accuracy": 0.9}' WHERE name = 'store' AND version = 1;
SELECT metrics FROM triage.models WHERE name = 'store' AND version = 1;

-- a deployed version cannot be deleted
DELETE FROM triage.models WHERE name = 'store' AND version = 1;
-- deploying a version that does not exist
SELECT triage.deploy('store', 42);
SELECT triage.deploy('nothing', 1);

-- the tables are dumped by pg_dump
SELECT c.relname
  FROM pg_extension e, unnest(e.extconfig) AS t(oid) JOIN pg_class c ON c.oid = t.oid
 WHERE e.extname = 'pg_triage' ORDER BY 1;
