"""Sans-I/O enforcement core: token buckets, policies, the dispatch scheduler.

Imports no gRPC, no clock: time is always an argument.
"""

from tokenbucket_daemon.core.bucket import TokenBucket
from tokenbucket_daemon.core.policy import Kind, Policy, PolicyTable, Selector, Tag
from tokenbucket_daemon.core.scheduler import Decision, Request, Scheduler, SchedulerConfig

__all__ = ["Decision", "Kind", "Policy", "PolicyTable", "Request", "Scheduler",
           "SchedulerConfig", "Selector", "Tag", "TokenBucket"]
