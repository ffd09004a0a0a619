"""``tunegate serve-model DIR``: serve a saved canary model through an OpenAI-compatible chat endpoint
(core: :mod:`tunegate.core.audit.serve`), for the post-tune audit to probe. Exit codes: 0 stopped (Ctrl-C),
2 no model in DIR or the port is taken."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tunegate.exceptions import TunegateError


def add_serve_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``serve-model`` subcommand on the ``tunegate`` parser's subparsers."""
    from tunegate.core.audit.serve import CHAT_PATH, DEFAULT_HOST, DEFAULT_MODEL_NAME

    s = sub.add_parser("serve-model", help="serve a saved canary model at POST /v1/chat/completions",
                       description=f"Serve the canary model saved in DIR at {CHAT_PATH} (OpenAI chat-completions; "
                                   "the task is named in metadata.task, docs/audit.md). Runs until interrupted.")
    s.add_argument("dir", metavar="DIR", help="a saved model directory (canary.json + weights.npz)")
    s.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000; 0: a free one)")
    s.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})")
    s.add_argument("--name", default=DEFAULT_MODEL_NAME, help=f"the model name requests must use "
                                                              f"(default {DEFAULT_MODEL_NAME})")
    s.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    s.add_argument("-q", "--quiet", action="store_true", help=argparse.SUPPRESS)
    return s  # type: ignore[no-any-return]


def run_serve(args: argparse.Namespace) -> int:
    from tunegate.core.audit.serve import CHAT_PATH, serve_model

    if not 0 <= args.port <= 65535:
        raise TunegateError(f"--port must be 0..65535, got {args.port}")
    try:
        server = serve_model(args.dir, host=args.host, port=args.port, name=args.name)
    except FileNotFoundError as exc:
        raise TunegateError(f"{args.dir}: no saved model there ({exc.filename} is missing)") from None
    except ValueError as exc:
        raise TunegateError(str(exc)) from None
    except OSError as exc:  # the port is taken, or the address cannot be bound
        raise TunegateError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    with server:
        print(f"tunegate: serving {args.dir} as {args.name!r} ({len(server.tasks)} tasks) at {server.url}{CHAT_PATH}",
              file=sys.stderr, flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("tunegate: stopped", file=sys.stderr)
    return 0
