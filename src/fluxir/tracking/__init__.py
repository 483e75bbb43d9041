"""MLflow: run helpers (runs) and the pipeline's run tree (lineage). MLflow itself is imported lazily."""
