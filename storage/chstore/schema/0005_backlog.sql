-- Broker-side backlog samples: queue depth, consumer lag, unacked, consumers.
CREATE TABLE IF NOT EXISTS {{table "backlog"}} {{onCluster}}
(
    time           DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1)),
    system         LowCardinality(String),
    broker         LowCardinality(String),
    destination    LowCardinality(String),
    consumer_group LowCardinality(String),
    depth          Int64,
    unacked        Int64,
    lag_messages   Int64,
    lag_seconds    Float64,
    consumers      Int64,
    publish_rate   Float64,
    deliver_rate   Float64
)
ENGINE = {{engine "MergeTree"}}
PARTITION BY toDate(time)
ORDER BY (system, destination, consumer_group, time)
{{ttl "time"}}
{{settings "min_parts_to_merge_at_once = 10"}};

{{distributed "backlog" "cityHash64(destination)"}}
