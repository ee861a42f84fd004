"""The live activity monitor: one ``LISTEN`` per process fanned out in memory to filtered, bounded subscriptions."""
