-- Flows: connected sets of hops. Rewritten as they progress (highest version
-- wins); a row with deleted = 1 retires a flow that was merged into another.
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
    keys          Nested(kind LowCardinality(String), value String),
    critical_path Array(String),
    INDEX idx_start start_time TYPE minmax GRANULARITY 1,
    INDEX idx_name name TYPE set(1000) GRANULARITY 1
)
ENGINE = {{engine "ReplacingMergeTree" "version, deleted"}}
PARTITION BY toDate(first_seen)
ORDER BY flow_id
{{ttl "first_seen"}}
{{settings}};

{{distributed "flows" "cityHash64(flow_id)"}}

-- Flow keys: key value -> flow id, for search by any key. A key that moved to
-- another flow keeps its old row; the old flow is retired in flows, so a
-- lookup joined with flows FINAL sees only the live one.
CREATE TABLE IF NOT EXISTS {{table "flow_keys"}} {{onCluster}}
(
    key        String,
    kind       LowCardinality(String),
    flow_id    String,
    first_seen DateTime64(9, 'UTC'),
    INDEX idx_key key TYPE bloom_filter(0.001) GRANULARITY 1
)
ENGINE = {{engine "ReplacingMergeTree"}}
PARTITION BY toDate(first_seen)
ORDER BY (flow_id, kind, key)
{{ttl "first_seen"}}
{{settings}};

{{distributed "flow_keys" "cityHash64(flow_id)"}}
