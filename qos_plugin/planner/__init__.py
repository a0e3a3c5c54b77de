"""The planner a user and the Slurm plugin talk to: trained models, QoS queries
with explanations, and the model registry.

Loading a model and answering a query need only numpy and the standard library
(no scikit-learn, pandas or matplotlib): ``qos-plan query`` runs at every sbatch.
"""
