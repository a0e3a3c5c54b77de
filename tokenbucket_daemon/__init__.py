"""tokenbucketd: the per-storage-node I/O QoS daemon and its tools."""

__version__ = "0.1.0"
