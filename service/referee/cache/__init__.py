"""Score caches, in levels: a per-process memory level (``memory``), the shared Redis
level (``redis``) and the circuit breaker that keeps a Redis outage from costing a
reward (``breaker``). Keys are per scorer: hash(scorer fingerprint, the fields it reads).
The Redis level imports its client only when configured."""

from referee.cache.breaker import Breaker
from referee.cache.memory import MemoryCache, NullCache, ScoreCache, cache_key

__all__ = ["Breaker", "MemoryCache", "NullCache", "ScoreCache", "cache_key"]
