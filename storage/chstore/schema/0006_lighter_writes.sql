-- Brings tables made by earlier versions to what 0001-0005 now create, for
-- less work per insert and per merge:
-- - keys are searched in flows (idx_keys) instead of a flow_keys table that
--   took three rows per flow version;
-- - the bloom filters no query used (hops by message or trace id, events by
--   trace id) are gone.
-- Every statement is a no-op on tables 0001-0005 created.
ALTER TABLE {{table "flows"}} {{onCluster}} ADD INDEX IF NOT EXISTS idx_keys keys.value TYPE bloom_filter(0.001) GRANULARITY 1;
ALTER TABLE {{table "flows"}} {{onCluster}} MATERIALIZE INDEX idx_keys;
DROP TABLE IF EXISTS {{name "flow_keys"}} {{onCluster}};
DROP TABLE IF EXISTS {{table "flow_keys"}} {{onCluster}};
ALTER TABLE {{table "hops"}} {{onCluster}} DROP INDEX IF EXISTS idx_message_id, DROP INDEX IF EXISTS idx_trace_id;
ALTER TABLE {{table "events"}} {{onCluster}} DROP INDEX IF EXISTS idx_trace_id;
