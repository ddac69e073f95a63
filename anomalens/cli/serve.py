"""``anomalens serve MODEL_DIR``: the inspection service (HTTP API, web page, result store) with uvicorn."""

from __future__ import annotations

import argparse
import signal
from typing import Any

from anomalens.cli.arguments import add_taxonomy_option, positive_float, positive_int
from anomalens.extras import requires_extra


def cmd_serve(args: argparse.Namespace) -> int:
    with requires_extra("anomalens serve"):
        import uvicorn

        from anomalens.service import ServiceSettings, create_app

    settings = ServiceSettings.create(
        args.model_dir,
        args.data_dir,
        database_url=args.database_url,
        max_upload_bytes=args.max_upload_mb * 2**20,
        request_timeout_s=args.request_timeout,
        taxonomy_dir=args.taxonomy,
        use_llm=args.llm,
        metrics_open=args.metrics_open,
        **({"api_key": args.api_key} if args.api_key else {}),
        **({"station": args.station} if args.station else {}),
    )
    app = create_app(settings)
    print(
        f"anomalens service: http://{args.host}:{args.port}/ (API docs at /docs); results stored in "
        f"{settings.store_url if args.database_url is None else 'the database given'}"
        f"{'; API key required' if settings.api_key else ''}",
        flush=True,
    )
    # uvicorn re-raises the SIGTERM or SIGINT it stopped on once requests are done or cancelled: with the default
    # action the process then ends, where Python's Ctrl-C handler would wait on exit for threads still stuck
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    uvicorn.run(
        app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=args.shutdown_timeout
    )
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``serve`` sub-command on ``subparsers``; returns its parser."""
    p = subparsers.add_parser(
        "serve",
        help="run the inspection service (HTTP API and web page)",
        description="Serve a fitted model over HTTP: POST /inspect, stored results, chat, "
        "operator feedback, reports, and a web page at /.",
    )
    p.add_argument("model_dir", help="a fitted model directory, or a folder of model directories")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument(
        "--data-dir",
        default="anomalens_data",
        help="folder for the SQLite store and defect history (default anomalens_data)",
    )
    p.add_argument(
        "--database-url",
        help="SQLAlchemy URL of a shared store, e.g. postgresql+psycopg://user@host/db (default: SQLite in --data-dir)",
    )
    p.add_argument("--api-key", help="require this key in the X-API-Key header (default: $ANOMALENS_API_KEY)")
    p.add_argument(
        "--metrics-open",
        action="store_true",
        help="serve GET /metrics without the API key, for a Prometheus scraper that cannot send it",
    )
    p.add_argument("--station", help="name stored with each result (default: this machine's host name)")
    p.add_argument("--max-upload-mb", type=positive_int, default=20, help="largest accepted image (default 20)")
    p.add_argument(
        "--request-timeout",
        type=positive_float,
        default=60.0,
        help="seconds one inspection may take, waiting for the detector included; longer ones are answered 503 "
        "(default 60)",
    )
    add_taxonomy_option(p)
    p.add_argument("--llm", action="store_true", help="explain and chat with the LLM of ANOMALENS_LLM_* variables")
    p.add_argument(
        "--shutdown-timeout",
        type=positive_int,
        default=10,
        help="seconds a stop (SIGTERM, Ctrl-C) waits for requests in progress before it cancels them (default 10)",
    )
    p.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"))
    p.set_defaults(func=cmd_serve)
    return p
