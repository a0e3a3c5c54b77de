"""Submit-time side of storage-aware QoS: the planner model, queries and Slurm glue."""

from qos_plugin.errors import InputError, QosPluginError

__version__ = "0.1.0"
__all__ = ["InputError", "QosPluginError", "__version__"]
