"""Storage profiler: measure the tiers of this machine and write a profile in
the IOR CSV schema the cost builder reads (the artifact's schema)."""
