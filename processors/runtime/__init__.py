"""The Kafka runtime, its parts named after Kafka Streams' where they do the same job.

- stream_thread.StreamThread: the Faust service that starts the route loop's thread with the
  worker and stops it; stream_thread.RouteLoop: what runs on that thread: one consumer group
  over the input topics, the rebalance callbacks, poll -> tasks -> one transaction per batch
  (it commits or aborts it), sweeps and lag, in an explicit State (as Kafka Streams'
  StreamThread.State);
- task_manager.TaskManager: the tasks this worker holds, opened (stores restored) and closed
  on rebalances;
- task.StreamTask: one partition number's store, and the routing of its share of a batch (the
  changes stay pending until RouteLoop commits or aborts the transaction);
- changelog_reader.ChangelogReader: restores the assigned partitions' stores from their
  changelog partitions, together;
- state_store: a partition's committed state (RocksDB or memory), its changelog checkpoint,
  and the read-only RocksDB secondary the query server opens;
- record_collector.RecordCollector: hands output records to the producer one by one and keeps
  what became of them (the first delivery failure, the changelog offsets written);
- query_server: the check API in a process of its own (OUTBOUND_GATE_QUERY_SERVER, RocksDB
  store), reading RocksDB secondary instances of this worker's stores;
- gc_pauses: full garbage collections that skip the frozen survivors of earlier ones
  (OUTBOUND_GATE_GC_FREEZE).
"""
