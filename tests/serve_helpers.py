"""Test helper: `mfcore serve`'s app on a free loopback port in a background thread, over a model already
loaded (what `mfcore serve` runs, without the loading). (Not conftest.py: tests import it by name.)"""
import contextlib
import socket
import threading
import time

import httpx
import uvicorn

from mfcore.serving.app import ServerState, attach, create_app


@contextlib.contextmanager
def running_server(model=None, tokenizer=None, names=("tiny",), **engine_options):
    """Yields (base url, state); the engine starts at once when model is given, else call
    attach(state, ...) yourself (until then /health answers 503)."""
    state = ServerState()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(state), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert httpx.get(f"{base}/health").status_code == 503  # answering, not ready
    if model is not None:
        attach(state, model, tokenizer, list(names), **engine_options)
    try:
        yield base, state
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        if state.engine is not None:
            state.engine.stop()
