"""The worker: the stream engine, the gate's processor it runs, and the Faust app around them.

- engine/: the Kafka loop, named as Kafka Streams names its parts (stream thread and its State,
  tasks, task manager, changelog reader, state stores, record collector); it runs a Processor
  and knows nothing of the gate;
- gate/: the gate's processor (GateProcessor) and the state it keeps;
- app.py: the Faust app: the worker's lifecycle, web views (views.py), the template catalog
  (catalog.py) and the policy feed (policy_feed.py);
- check_api.py and query_server.py: the check API, answered in a process of its own that reads
  read-only copies of the worker's stores;
- gc_pauses.py: full garbage collections that skip the frozen survivors of earlier ones
  (OUTBOUND_GATE_GC_FREEZE);
- kafka_clients.py: the one Kafka client factory; topics.py: the topics the gate creates.
"""
