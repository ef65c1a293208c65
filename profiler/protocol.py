"""The latency protocol lives in :mod:`moenas.arch.protocol` (the cost model and the predictor
use it too); the profiler calls it ``Protocol``."""
from moenas.arch.protocol import ROUTINGS, LatencyProtocol as Protocol

__all__ = ["Protocol", "ROUTINGS"]
