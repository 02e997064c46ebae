"""`mfcore serve --model PRESET|DIR`: an OpenAI-compatible HTTP server (extra `mfcore[serve]`).

The server answers at once (GET /health says 503 while the model loads in a background thread; if
loading fails, the error is printed and the command exits with 2), then
serves /v1/completions, /v1/chat/completions, /v1/models, /tokenize, /detokenize and /metrics with
continuous batching over --max-batch slots (mfcore.serving). FastAPI and uvicorn are imported only here,
when the command runs.
"""
from __future__ import annotations

import argparse
import logging
import sys
import threading
from pathlib import Path

from mfcore.errors import ConfigError


def add_command(subparsers) -> None:
    parser = subparsers.add_parser("serve", help="serve a model over an OpenAI-compatible HTTP API")
    parser.add_argument("--model", required=True, help="a preset (weights from $MFCORE_HOME/models/<preset>) or a "
                                                       "model directory")
    parser.add_argument("--tokenizer", help="tokenizer preset or directory (default: next to the weights)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-batch", "--max_batch", type=int, default=8,
                        help="decode slots: requests generated together (default 8)")
    parser.add_argument("--max-model-len", "--max_model_len", type=int,
                        help="prompt + generated tokens per request (default: the model's seq_length, at most 2048)")
    parser.add_argument("--served-model-name", "--served_model_name", action="append",
                        help="the name clients pass as `model` (default: --model as given); repeatable")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"),
                        help="weight dtype (default: the checkpoint's config; on CPU 16-bit weights compute in float32)")
    parser.add_argument("--gather-ms", "--gather_ms", type=float, default=None,
                        help="an idle server waits this long after each request for others sent with it, so "
                             "that they prefill together, longer for a large pack (up to 5%% of its prefill) "
                             "(default 40; 0: start at once)")
    parser.add_argument("--log-level", "--log_level", default="info",
                        help="uvicorn's log level; debug also logs each prefill and decode step (default info)")
    parser.set_defaults(func=run_serve)


def _load(args, state, server) -> None:
    """In the background: model, tokenizer, engine; the server turns ready, or says why not and stops."""
    try:
        from mfcore.serving.app import attach
        from mfcore.tasks.runner import load_model, load_tokenizer
        from mfcore.tasks.spec import read_task
        from mfcore.utils import runtime

        is_dir = Path(args.model).exists()
        run_args = argparse.Namespace(config=None, model=None if is_dir else args.model,
                                      load_checkpoint=args.model if is_dir else None, tokenizer=args.tokenizer,
                                      register_path=None, run_mode="predict", predict_data=["(serve)"])
        spec = read_task(run_args)
        if args.dtype:  # the weights' dtype, as model_config.param_init_type / compute_dtype of a task YAML
            spec.model_config = dict(spec.model_config or {}, param_init_type=args.dtype, compute_dtype=args.dtype)
        runtime.setup(device_target=spec.context.get("device_target"), mode=spec.context.get("mode"))
        model, source = load_model(spec, allow_random=False)
        # The server only runs inference: its weights may take the kernels' layout (before anything compiles).
        packed = model.pack_weights_for_inference() if hasattr(model, "pack_weights_for_inference") else 0
        if packed:
            print(f"mfcore serve: {packed} bfloat16 weights packed for the CPU kernels", file=sys.stderr)
        tokenizer = load_tokenizer(spec, required=True)
        engine_options = dict(max_batch=args.max_batch, max_model_len=args.max_model_len)
        if args.gather_ms is not None:
            engine_options["gather_ms"] = args.gather_ms
        attach(state, model, tokenizer, args.served_model_name or [args.model], **engine_options)
        print(f"mfcore serve: {source} ready at http://{args.host}:{args.port}/v1", file=sys.stderr)
    except Exception as exc:  # /health says why until the server has stopped; the command exits with 2
        state.error = f"{type(exc).__name__}: {exc}"
        print(f"mfcore serve: error: {state.error}", file=sys.stderr)
        server.should_exit = True


def run_serve(args) -> int:
    if args.max_batch < 1:
        raise ConfigError("--max-batch", f"must be at least 1, got {args.max_batch}")
    if args.gather_ms is not None and args.gather_ms < 0:
        raise ConfigError("--gather-ms", f"must be at least 0, got {args.gather_ms}")
    try:
        import uvicorn
        from mfcore.serving.app import ServerState, create_app
    except ImportError as exc:
        raise ConfigError("mfcore serve", f"needs FastAPI and uvicorn ({exc}): pip install 'mfcore[serve]'") from exc
    if args.log_level.lower() in ("debug", "trace"):  # the engine's own log: each prefill, its size and time
        logging.basicConfig(format="%(asctime)s %(name)s: %(message)s")
        logging.getLogger("mfcore").setLevel(logging.DEBUG)
    state = ServerState()
    server = uvicorn.Server(uvicorn.Config(create_app(state), host=args.host, port=args.port,
                                           log_level=args.log_level))
    threading.Thread(target=_load, args=(args, state, server), name="mfcore-load", daemon=True).start()
    server.run()
    if state.engine is not None:
        state.engine.stop()
    return 2 if state.error else 0
