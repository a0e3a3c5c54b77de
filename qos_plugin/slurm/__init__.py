"""Everything that talks to Slurm: the planner helper the SPANK plugin runs at
sbatch, the job's placement as environment variables, the nodes' prolog/epilog that
prepare node-local tiers on each of a job's nodes, the controller's prolog/epilog that
make shared-tier directories and reserve and release bandwidth on the daemons, a small
Slurm client, and the local multi-node cluster the tests run against.

The helper the SPANK plugin runs (``plan``) imports the standard library only:
it runs as the submitting user at every sbatch, with the system Python.
"""
