"""The Kafka runtime, named the way Kafka Streams names its parts.

- stream_thread.StreamThread: the route loop: one consumer group over the input topics, the
  rebalance listener, fetch -> tasks -> commit, sweeps and lag;
- task_manager.TaskManager: which tasks this worker holds, opened and closed on rebalances;
- task.StreamTask: what is owned per partition number (the state store, the transactional
  producer) and the commit of one batch as one transaction;
- changelog_reader.ChangelogReader: restores a store from its changelog partition;
- state_store: a partition's committed state (RocksDB or memory) and its changelog checkpoint;
- record_collector.RecordCollector: hands output records to a producer, batched per partition;
- query_server: interactive queries (the check API) in a process of its own, reading RocksDB
  secondary instances of this worker's stores.
"""
