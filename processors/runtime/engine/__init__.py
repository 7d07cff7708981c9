"""The stream engine: Kafka in, a Processor in the middle, Kafka out, exactly once.

It knows nothing of the gate (tests/unit/runtime/engine/test_layers.py holds it to that). Its
parts are named as in Kafka Streams:

    stream_thread.py     StreamThread (the Faust service that owns the thread) and RouteLoop
                         (the loop on it: poll, tasks, one transaction per batch, commit)
    task.py              StreamTask: one partition number of every input topic and its store
    task_manager.py      TaskManager: opens, restores and closes tasks as partitions move
    changelog_reader.py  ChangelogReader: brings a store up to its changelog's committed end
    state_store.py       PartitionStore: committed state only, with a checkpoint (RocksDB or
                         memory)
    record_collector.py  RecordCollector: produces a batch's records, notes changelog offsets
    partitioner.py       the partition of a key, as every Kafka client computes it
    records.py           Record (consumed), Output (to produce), Tally (what a batch did)
    processor.py         the Processor protocol the loop runs
"""
