"""Pure planner model: templates, tiers, cost tables, makespan, regions, ranking.

Nothing here touches Slurm, gRPC, the clock or the network; inputs are plain data
or files named by the caller.
"""
