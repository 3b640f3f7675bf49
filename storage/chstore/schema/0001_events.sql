-- Raw normalized events: one row per observation of a message (publish,
-- deliver, process, settle, dead_letter, ...). Never updated; read by message
-- id, through its bloom filter. The table takes the most inserts; merging ten
-- parts at a time rather than a few halves the work background merges do
-- under steady ingest. Ids compress with LZ4: ZSTD made every insert and
-- every merge cost a third more CPU, for a little less disk.
CREATE TABLE IF NOT EXISTS {{table "events"}} {{onCluster}}
(
    time           DateTime64(9, 'UTC') CODEC(Delta, LZ4),
    kind           LowCardinality(String),
    system         LowCardinality(String),
    destination    LowCardinality(String),
    partition      LowCardinality(String),
    message_id     String CODEC(LZ4),
    operation      LowCardinality(String),
    attempt        UInt16,
    service        LowCardinality(String),
    consumer_group LowCardinality(String),
    trace_id       String CODEC(LZ4),
    span_id        String CODEC(LZ4),
    parent_span_id String CODEC(LZ4),
    links          Array(String) CODEC(LZ4),
    keys           Nested(kind LowCardinality(String), value String),
    outcome        LowCardinality(String),
    reason         String CODEC(LZ4),
    body_size      UInt64,
    duration_ns    Int64,
    INDEX idx_message_id message_id TYPE bloom_filter(0.01) GRANULARITY 1
)
ENGINE = {{engine "MergeTree"}}
PARTITION BY toDate(time)
ORDER BY (system, destination, time)
{{ttl "time"}}
{{settings "min_parts_to_merge_at_once = 10"}};

{{distributed "events" "cityHash64(message_id, span_id)"}}
