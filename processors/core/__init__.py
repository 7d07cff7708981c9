"""The pure core: the policy, enrichment, contracts, decoding, outputs, webhook translation,
time, and judge(). Nothing here imports Kafka, asyncio or Faust (tests/unit/core checks it)."""
