-- Flows: connected sets of hops. Rewritten as they progress (highest version
-- wins); a row with deleted = 1 retires a flow that was merged into another.
-- A flow is found by any of its keys through the bloom filter on keys.value:
-- a key that moved to another flow still matches the old flow's earlier
-- versions, so a lookup reads the candidates' latest versions (FINAL), where
-- the old flow is retired.
CREATE TABLE IF NOT EXISTS {{table "flows"}} {{onCluster}}
(
    flow_id       String,
    version       UInt64,
    deleted       UInt8,
    first_seen    DateTime64(9, 'UTC'),
    name          LowCardinality(String),
    status        LowCardinality(String),
    start_time    DateTime64(9, 'UTC'),
    end_time      DateTime64(9, 'UTC'),
    duration_ns   Int64,
    hop_count     UInt32,
    retries       UInt32,
    dead_letters  UInt32,
    -- kind is a plain String: ClickHouse converts an inserted Array(String)
    -- into Array(LowCardinality(String)) one element at a time, which made
    -- a flows insert cost nearly twice as much.
    keys          Nested(kind String, value String),
    critical_path Array(String),
    INDEX idx_start start_time TYPE minmax GRANULARITY 1,
    INDEX idx_name name TYPE set(1000) GRANULARITY 1,
    -- Search by any key: trace id, message id, task id, business key.
    INDEX idx_keys keys.value TYPE bloom_filter(0.001) GRANULARITY 1
)
ENGINE = {{engine "ReplacingMergeTree" "version, deleted"}}
PARTITION BY toDate(first_seen)
ORDER BY flow_id
{{ttl "first_seen"}}
{{settings}};

{{distributed "flows" "cityHash64(flow_id)"}}
