"""The gate's processor: what the engine (processors.runtime.engine) runs for every record.

    processor.py        GateProcessor: decode, co-partition by recipient, then state events and
                        the step of an outbound message (processors.core.step), output records
    batch_state.py      the batch's view of its partitions' state: read once, written once
    linking.py          linked identities: the link steps between a number's and a BSUID's
                        partitions
    tenant_stage.py     the tenant's messaging-limit count, in the tenant's partition
    preview.py          the check API's read path: what the gate would decide, from committed
                        state
    envelopes.py        the repartition topic's records (schemas/repartition-envelope.schema.json)
    recipient_state.py  a recipient's keys and state in a partition store, and its sweep
    tenant_slots.py     a tenant's messaging-limit ledger and slot records (bytes)
"""
