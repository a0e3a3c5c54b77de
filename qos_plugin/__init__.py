"""Submit-time side of storage-aware QoS: the planner model, queries and Slurm glue."""

from qos_plugin.errors import InputError, QosPluginError

__all__ = ["InputError", "QosPluginError"]
