-- On a cluster, events were spread over the shards at random. A retried
-- insert (the same rows, the same deduplication token) was then split
-- differently: a shard that had its part of the first attempt dropped its
-- new part as a repeat, rows included that it never had, and another shard
-- wrote rows a second time. A sharding key taken from the row itself
-- splits every attempt the same way. A no-op without a cluster.
{{redistribute "events" "cityHash64(message_id, span_id)"}};
