"""Running the pipeline: DVC commands, shard scale-out, S3 storage and the local services (no ML logic)."""
