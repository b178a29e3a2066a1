-- Errors a user can act on
\getenv abs_srcdir PG_ABS_SRCDIR
\set v1 :abs_srcdir '/test/data/sentiment_v1.ftz'
\set SHOW_CONTEXT never
CREATE EXTENSION IF NOT EXISTS pg_triage;
\set VERBOSITY default
SELECT triage.import_fasttext('errs', pg_read_binary_file(:'v1'));

-- unknown model
SELECT triage.classify('no_such_model', 'text');
SELECT * FROM triage.predict('no_such_model', 'text');
-- a model with versions but none deployed
SELECT triage.import_fasttext('undeployed', pg_read_binary_file(:'v1'));
DELETE FROM triage.deployments WHERE name = 'undeployed';
SELECT triage.classify('undeployed', 'text');
-- unknown version
SELECT triage.classify('errs', 7, 'text');
SELECT triage.classify('errs', 0, 'text');
-- a name longer than any model name
SELECT triage.classify(repeat('x', 100), 'text');
-- invalid names are refused when stored
SELECT triage.import_fasttext('bad name!', pg_read_binary_file(:'v1'));

-- NULL in, NULL out (STRICT)
SELECT triage.classify('errs', NULL) IS NULL AS is_null;
SELECT triage.classify(NULL, 'text') IS NULL AS is_null;
SELECT count(*) FROM triage.predict('errs', NULL);

-- bad k and threshold
SELECT * FROM triage.predict('errs', 'text', 0);
SELECT * FROM triage.predict('errs', 'text', -2);
SELECT * FROM triage.predict('errs', 'text', 1, 'NaN');

-- files that are not valid models
SELECT triage.import_fasttext('junk', '\x00');
SELECT triage.import_fasttext('junk', convert_to('hello, this is not a model', 'UTF8'));
SELECT triage.import_fasttext('junk', substring(pg_read_binary_file(:'v1') FROM 1 FOR 1000));
SELECT triage.import_fasttext('junk', pg_read_binary_file(:'v1') || '\x00'::bytea);
-- version 13 does not exist yet
SELECT triage.import_fasttext('junk', overlay(pg_read_binary_file(:'v1') PLACING '\x0d000000' FROM 5 FOR 4));
-- a skipgram (word vector) model is not a classifier: the model field is at offset 36
SELECT triage.import_fasttext('junk', overlay(pg_read_binary_file(:'v1') PLACING '\x02000000' FROM 37 FOR 4));
SELECT triage.import_fasttext('junk', overlay(pg_read_binary_file(:'v1') PLACING '\x01000000' FROM 37 FOR 4));
-- an unknown loss
SELECT triage.import_fasttext('junk', overlay(pg_read_binary_file(:'v1') PLACING '\x09000000' FROM 33 FOR 4));
-- dictionary sizes that disagree, and no labels
SELECT triage.import_fasttext('junk', overlay(pg_read_binary_file(:'v1') PLACING '\xffffff7f' FROM 65 FOR 4));
SELECT triage.import_fasttext('junk', overlay(overlay(pg_read_binary_file(:'v1')
	PLACING '\xc7010000' FROM 65 FOR 4) PLACING '\x00000000' FROM 73 FOR 4));
-- nothing was stored by the failures
SELECT count(*) FROM triage.models WHERE name = 'junk';

-- batch classification and model-file functions: bad input
SELECT * FROM triage.classify_batch('errs', ARRAY[['a', 'b'], ['c', 'd']]);
SELECT count(*) FROM triage.classify_batch('errs', '{}'::text[]);
SELECT ord, label IS NULL AS no_label FROM triage.classify_batch('errs', ARRAY['stale', NULL, '']) ORDER BY ord;
SELECT * FROM triage.classify_batch('no_such_model', ARRAY['x']);
SELECT triage.quantize_fasttext('\x00');
SELECT triage.quantize_fasttext(pg_read_binary_file(:'v1'), '{"cutoff": -1}');
SELECT triage.fasttext_file(convert_to('not a model', 'UTF8'));
SELECT triage.fit_temperature('errs', 0, 'SELECT 1, 2');
SELECT triage.fit_temperature('errs', 1, 'SELECT ''a'', ''great''');

-- limits: the settings refuse values out of range
SET triage.max_input_bytes = 0;
SET triage.max_input_bytes = 'lots';
SET triage.max_tokens = 0;
SET triage.max_tokens = 100000000;
-- a cut input is no error: the first 14 bytes, back to a character boundary
SET triage.max_input_bytes = 14;
SELECT triage.classify('errs', 'stale bitter écrasé') = triage.classify('errs', 'stale bitter ') AS cut;
RESET triage.max_input_bytes;

-- a role that may not read triage.models cannot use a model, though this
-- session has it loaded
CREATE ROLE regress_triage_nobody;
GRANT USAGE ON SCHEMA triage TO regress_triage_nobody;
SELECT (triage.classify('errs', 'stale')).label IS NOT NULL AS loaded;
SET ROLE regress_triage_nobody;
SELECT triage.classify('errs', 'stale');
SELECT * FROM triage.predict('errs', 'stale');
SELECT triage.classify('no_such_model', 'stale');
SELECT triage.extract('errs', 'stale');
RESET ROLE;
REVOKE USAGE ON SCHEMA triage FROM regress_triage_nobody;
DROP ROLE regress_triage_nobody;

-- the queue's inputs: malformed sources, unknown policies and roles, and the
-- functions only complete() may call
SELECT triage.create_policy('errs_policy', 'errs');
CREATE TABLE errs_inbox (id int PRIMARY KEY, body text, label text);
SELECT triage.attach('errs_inbox', 'body', 'label', 'errs_policy');
SELECT triage.enqueue('errs_policy', NULL);
SELECT triage.enqueue(NULL, 'x');
SELECT triage.enqueue('no_such_policy', 'x');
SELECT triage.enqueue('errs_policy', 'x', source => 'errs_inbox');
SELECT triage.enqueue('errs_policy', 'x', source => 'errs_inbox', source_key => '[1]',
                      input_column => 'body', output_column => 'label');
SELECT triage.enqueue('errs_policy', 'x', source => 'errs_inbox', source_key => '{"id": 1, "other": 2}',
                      input_column => 'body', output_column => 'label');
SELECT triage.enqueue('errs_policy', 'x', source => 'errs_inbox', source_key => '{"id": [1]}',
                      input_column => 'body', output_column => 'label');
SELECT triage.enqueue('errs_policy', 'x', source => 'errs_inbox', source_key => '{"body": "1"}',
                      input_column => 'body', output_column => 'label');
SELECT triage.enqueue('errs_policy', 'x', source => 'errs_inbox', source_key => '{"id": 1}',
                      input_column => 'body', output_column => 'nope');
SELECT triage.enqueue('errs_policy', 'x', source_key => '{"id": 1}');
SELECT triage.enqueue('errs_policy', 'x', source => 'pg_authid', source_key => '{"oid": 10}',
                      input_column => 'rolname', output_column => 'rolsuper');
SELECT triage.grant_policy('no_such_policy', 'triage_user');
SELECT triage.grant_policy('errs_policy', 'no_such_role');
SELECT triage.allow_worker('no_such_role');
SELECT triage_internal.check_attachment(NULL, 'errs_inbox', 'id', 'body', 'label', NULL);
SELECT count(*) AS no_rows FROM triage.label_scores(NULL);
SELECT count(*) AS no_rows FROM triage.routing_curve('{"curve": "not an array"}');
SET ROLE triage_admin;
SELECT triage_internal.write_answer(1, 'great', NULL, NULL);
RESET ROLE;
SELECT triage.detach('errs_inbox', 'label');
DROP TABLE errs_inbox;
DELETE FROM triage.policies WHERE name = 'errs_policy';
