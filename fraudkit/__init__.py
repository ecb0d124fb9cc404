"""Domain logic shared by the batch pipeline and the online service.

Plain Python (numpy, pandas, pyarrow, deltalake, onnxruntime): no Dagster and no BentoML
imports, so the service can import it without the orchestrator, and every rule lives once.
"""
