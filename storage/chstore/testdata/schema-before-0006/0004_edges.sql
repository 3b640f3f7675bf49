-- Per-minute edge statistics, aggregated from the one counted version of each
-- hop (hops.counted = 1), so rewriting a hop never counts it twice.
CREATE TABLE IF NOT EXISTS {{table "edges_1m"}} {{onCluster}}
(
    minute       DateTime('UTC'),
    system       LowCardinality(String),
    producer     LowCardinality(String),
    destination  LowCardinality(String),
    consumer     LowCardinality(String),
    hops         SimpleAggregateFunction(sum, UInt64),
    retries      SimpleAggregateFunction(sum, UInt64),
    dead_letters SimpleAggregateFunction(sum, UInt64),
    stuck        SimpleAggregateFunction(sum, UInt64),
    queue_wait   AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), Int64),
    processing   AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), Int64)
)
ENGINE = {{engine "AggregatingMergeTree"}}
PARTITION BY toDate(minute)
ORDER BY (system, producer, destination, consumer, minute)
{{ttl "minute"}}
{{settings}};

{{distributed "edges_1m" "cityHash64(destination)"}}

CREATE MATERIALIZED VIEW IF NOT EXISTS {{name "edges_1m_mv"}} {{onCluster}}
TO {{table "edges_1m"}}
AS SELECT
    toStartOfMinute(if(publish_time > toDateTime64(0, 9), publish_time, first_seen)) AS minute,
    system,
    producer,
    destination,
    consumer,
    count() AS hops,
    sum(toUInt64(greatest(attempts, 1) - 1)) AS retries,
    countIf(outcome = 'dead_lettered') AS dead_letters,
    countIf(outcome = 'stuck') AS stuck,
    quantilesTDigestStateIf(0.5, 0.95, 0.99)(queue_wait_ns, deliver_time > toDateTime64(0, 9)) AS queue_wait,
    quantilesTDigestStateIf(0.5, 0.95, 0.99)(processing_ns, processing_ns > 0) AS processing
FROM {{table "hops"}}
WHERE counted = 1 AND deleted = 0
GROUP BY minute, system, producer, destination, consumer;
