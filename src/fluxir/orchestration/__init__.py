"""Running the pipeline (no ML logic); used by the ``fluxir services`` command and the Prefect flows only.

- dvc        stage commands through DVC, params overrides
- shards     index-range scale-out of generate and score, and gathering the results
- storage    S3 object storage (s3fs) for shard outputs on other machines
- services   the local services (SeaweedFS, MLflow, Prefect): plan, start, stop, status; the command
- processes  PID files, launching in a new session, stopping by signal
"""
