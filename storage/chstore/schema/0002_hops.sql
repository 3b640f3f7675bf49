-- Hops: one message's journey from a producer through a destination to a
-- consumer (group). The correlator rewrites a hop as it learns more; the row
-- with the highest version wins, and a row with deleted = 1 retires a hop
-- that moved to another flow. first_seen never changes between versions, so
-- every version of a hop lands in the same partition.
CREATE TABLE IF NOT EXISTS {{table "hops"}} {{onCluster}}
(
    flow_id        String,
    hop_id         String,
    version        UInt64,
    deleted        UInt8,
    first_seen     DateTime64(9, 'UTC'),
    parent_hop_id  String,
    system         LowCardinality(String),
    producer       LowCardinality(String),
    destination    LowCardinality(String),
    consumer       LowCardinality(String),
    consumer_group LowCardinality(String),
    operation      LowCardinality(String),
    message_id     String CODEC(LZ4),
    trace_id       String CODEC(LZ4),
    publish_time   DateTime64(9, 'UTC'),
    deliver_time   DateTime64(9, 'UTC'),
    settle_time    DateTime64(9, 'UTC'),
    queue_wait_ns  Int64,
    processing_ns  Int64,
    attempts       UInt16,
    outcome        LowCardinality(String),
    reason         String CODEC(LZ4),
    counted        UInt8
)
ENGINE = {{engine "ReplacingMergeTree" "version, deleted"}}
PARTITION BY toDate(first_seen)
ORDER BY (flow_id, hop_id)
{{ttl "first_seen"}}
{{settings}};

{{distributed "hops" "cityHash64(flow_id)"}}
