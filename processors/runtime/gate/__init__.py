"""The gate's processor: what the engine (processors.runtime.engine) runs for every record.

    processor.py        GateProcessor: decode, co-partition by recipient, then state events and
                        decisions (processors.core.step), output records
    recipient_state.py  a recipient's state in a partition store, and its sweep
    tenant_slots.py     a tenant's messaging-limit ledger and slot records (bytes)
"""
