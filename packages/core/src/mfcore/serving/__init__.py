"""`mfcore serve`: an OpenAI-compatible HTTP server (FastAPI + uvicorn, extra `mfcore[serve]`).

engine: the model's thread and its continuous decode batch (no web imports); api: request checks and
response bodies (no web imports); app: the FastAPI routes; metrics: the Prometheus text.
"""
