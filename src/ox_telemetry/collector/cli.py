"""``ox-telemetry serve``: run the collector."""

from __future__ import annotations

import argparse
import ctypes
import gc
import logging
import signal
import socket
import sys

from ..settings import go_duration
from .config import Config


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ox-telemetry serve",
        description="Receive telemetry from clients and daemons, store it, and serve the dashboard.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on; 0 picks a free one (default: 8080)")
    p.add_argument("--db", metavar="URL",
                   help="sqlite:///path/to/file or postgresql://... (default: collector.sqlite3 in the user "
                        "data directory)")
    p.add_argument("--write-key", action="append", default=[], metavar="KEY",
                   help="accept writes only with this key (repeatable); sent as 'Authorization: Bearer KEY' "
                        "or 'X-Ox-Write-Key: KEY'")
    p.add_argument("--write-key-file", metavar="FILE",
                   help="file with write keys, one a line ('#' starts a comment)")
    p.add_argument("--read-token", metavar="TOKEN",
                   help="require this token for the dashboard, /api/v1/stats and /metrics")
    p.add_argument("--public-unauthenticated", action="store_true",
                   help="allow listening on a non-loopback address without both a write key and a read token")
    p.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="accept requests from web pages at this origin, e.g. https://dash.example.com "
                        "(repeatable; requests with any other Origin header are refused)")
    p.add_argument("--server-name", action="append", default=[], metavar="NAME",
                   help="a Host name to answer besides loopback names while listening on loopback (repeatable)")
    p.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this certificate chain (PEM)")
    p.add_argument("--tls-key", metavar="FILE", help="the private key of --tls-cert (PEM)")
    p.add_argument("--forwarded-allow-ips", metavar="IPS",
                   help="behind a reverse proxy: comma-separated addresses of the proxies whose "
                        "X-Forwarded-For / X-Forwarded-Proto are trusted (the rate limit then sees the client)")
    p.add_argument("--max-inflight-bytes", type=int, default=Config.max_inflight_bytes, metavar="N",
                   help="request bytes (received and gunzipped) held at once by all requests before new ones get "
                        "503 (default: %(default)s)")
    # Seconds for a request head, and a body's grace before its speed floor: for tests.
    p.add_argument("--head-timeout", type=float, default=Config.head_timeout, help=argparse.SUPPRESS)
    p.add_argument("--rate", type=float, default=Config.address_rate, metavar="N",
                   help="requests a second allowed per client address; 0 for no limit (default: %(default)s)")
    p.add_argument("--burst", type=float, default=Config.address_burst, metavar="N",
                   help="burst allowed per client address (default: %(default)s)")
    p.add_argument("--key-rate", type=float, default=Config.key_rate, metavar="N",
                   help="requests a second allowed per write key; 0 for no limit (default: %(default)s)")
    p.add_argument("--key-burst", type=float, default=Config.key_burst, metavar="N",
                   help="burst allowed per write key (default: %(default)s)")
    p.add_argument("--max-pending", type=int, default=Config.max_pending, metavar="N",
                   help="events waiting for the database before requests get 503 (default: %(default)s)")
    p.add_argument("--daemon-interval", metavar="DURATION",
                   help="send interval to ask of daemons (X-SageOx-Interval), e.g. 5m")
    p.add_argument("--otlp-endpoint", metavar="URL",
                   help="also export every stored event as an OpenTelemetry log record: OTLP/HTTP JSON POSTs to "
                        "URL, e.g. http://otel-collector:4318/v1/logs")
    p.add_argument("--otlp-header", action="append", default=[], metavar="K=V",
                   help="a header for every export request, e.g. 'Authorization=Bearer TOKEN' (repeatable)")
    p.add_argument("--otlp-service-name", default=Config.otlp_service_name, metavar="NAME",
                   help="service.name of the exported resource (default: %(default)s)")
    p.add_argument("--retain-days", type=float, metavar="N",
                   help="delete raw events received more than N days ago, in the background (rollups and "
                        "installation counts are kept); default: keep everything")
    p.add_argument("--retention-interval", type=float, default=Config.retention_interval, help=argparse.SUPPRESS)
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--access-log", action="store_true", help="log every request")
    return p


def read_key_file(path: str) -> list[str]:
    """Keys in ``path``: one a line, blank lines and ``#`` comments ignored."""
    with open(path, encoding="utf-8") as f:
        return [line.split("#", 1)[0].strip() for line in f if line.split("#", 1)[0].strip()]


def config_from_args(args: argparse.Namespace, loopback: bool = True) -> Config:
    """The Config the command line asks for, listening on a loopback address or not; ValueError or OSError when
    it cannot be built."""
    from .storage import default_url

    keys = list(args.write_key)
    if args.write_key_file:
        keys += read_key_file(args.write_key_file)
        if not keys:
            raise ValueError(f"{args.write_key_file} holds no write key")
    if any(not k.strip() for k in keys):
        raise ValueError("a write key must not be empty")
    if args.read_token is not None and not args.read_token.strip():
        raise ValueError("the read token must not be empty")
    # Checked with the parser the daemons read X-SageOx-Interval with, so whatever is accepted here they obey.
    if args.daemon_interval is not None and go_duration(args.daemon_interval) is None:
        raise ValueError(f"--daemon-interval {args.daemon_interval!r} is not a Go duration such as 90s, 5m or 1h30m")
    for name in ("rate", "key_rate"):
        if getattr(args, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must not be negative")
    for name in ("burst", "key_burst"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ValueError("--tls-cert and --tls-key go together")
    if args.tls_cert is not None:
        _check_tls(args.tls_cert, args.tls_key)
    if args.max_inflight_bytes < 1024 * 1024:
        raise ValueError("--max-inflight-bytes must be at least 1 MiB")
    if args.head_timeout <= 0:
        raise ValueError("--head-timeout must be positive")
    otlp_headers = otlp_header_pairs(args.otlp_header)
    if args.otlp_endpoint is not None and not args.otlp_endpoint.startswith(("http://", "https://")):
        raise ValueError(f"--otlp-endpoint {args.otlp_endpoint!r} must be an http:// or https:// URL")
    if otlp_headers and args.otlp_endpoint is None:
        raise ValueError("--otlp-header needs --otlp-endpoint")
    if not args.otlp_service_name.strip():
        raise ValueError("--otlp-service-name must not be empty")
    if args.retain_days is not None and not args.retain_days > 0:
        raise ValueError("--retain-days must be a positive number of days")
    if not args.retention_interval > 0:
        raise ValueError("--retention-interval must be positive")
    if not loopback and not (keys and args.read_token) and not args.public_unauthenticated:
        raise ValueError(f"refusing to listen on {args.host}, which is not a loopback address, without both "
                         "--write-key and --read-token: anyone who can reach it could write events and read "
                         "them. Set both, or pass --public-unauthenticated to allow it")
    return Config(
        db_url=args.db or default_url(),
        write_keys=frozenset(k.strip() for k in keys),
        read_token=args.read_token,
        address_rate=args.rate, address_burst=args.burst,
        key_rate=args.key_rate, key_burst=args.key_burst,
        max_pending=args.max_pending,
        daemon_interval=args.daemon_interval,
        allow_origins=frozenset(args.allow_origin),
        loopback=loopback,
        server_names=frozenset(args.server_name),
        max_inflight_bytes=args.max_inflight_bytes,
        head_timeout=args.head_timeout,
        otlp_endpoint=args.otlp_endpoint,
        otlp_headers=otlp_headers,
        otlp_service_name=args.otlp_service_name,
        retain_days=args.retain_days,
        retention_interval=args.retention_interval,
    )


def otlp_header_pairs(values: list[str]) -> tuple[tuple[str, str], ...]:
    """``--otlp-header K=V`` values as (name, value) pairs; ValueError for one that is no header."""
    pairs = []
    for item in values:
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        # A line break would end the header early and start another: refused, never sent.
        if not sep or not name or any(c in item for c in "\r\n\0") or not all(33 <= ord(c) < 127 and c != ":"
                                                                             for c in name):
            raise ValueError(f"--otlp-header {item!r} must be NAME=VALUE, a header name and its value")
        pairs.append((name, value))
    return tuple(pairs)


def _check_tls(cert: str, key: str) -> None:
    # Loaded here for a one-line refusal: uvicorn loads them only once it runs, and fails with a traceback.
    import ssl

    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except OSError as exc:  # ssl.SSLError included
        raise ValueError(f"cannot load the TLS certificate {cert} and key {key}: {exc}") from None


def main(argv: list[str]) -> int:
    """Run the collector until interrupted; the exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        import uvicorn

        from .access import is_loopback
        from .app import Collector, create_app
        from .protocol import with_head_timeout
        from .stopping import Server
        from .storage import StorageError, open_storage
    except ImportError as exc:
        print(f"ox-telemetry serve: {exc.name} is missing; install the collector with "
              "pip install 'ox-telemetry[server]'", file=sys.stderr)
        return 2
    try:
        sock = socket.create_server((args.host, args.port), family=_family(args.host), backlog=2048)
    except OSError as exc:
        print(f"ox-telemetry serve: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    host, port = sock.getsockname()[:2]
    try:
        config = config_from_args(args, loopback=is_loopback(host))
        storage = open_storage(config.db_url)
    except (ValueError, OSError, StorageError) as exc:
        sock.close()
        print(f"ox-telemetry serve: {exc}", file=sys.stderr)
        return 2
    collector = Collector(config, storage)
    shown = f"[{host}]" if ":" in host else host
    scheme = "https" if args.tls_cert else "http"
    print(f"ox-telemetry collector listening on {scheme}://{shown}:{port} (store: {storage.describe()})",
          flush=True)
    server = Server(uvicorn.Config(
        create_app(collector), log_level=args.log_level, access_log=args.access_log,
        http=with_head_timeout(config.head_timeout), timeout_keep_alive=5,
        proxy_headers=args.forwarded_allow_ips is not None, forwarded_allow_ips=args.forwarded_allow_ips,
        ssl_certfile=args.tls_cert, ssl_keyfile=args.tls_key,
        server_header=False, timeout_graceful_shutdown=10,
    ))
    tune_gc()
    tune_malloc()
    server.run(sockets=[sock])
    return 128 + signal.SIGINT if server.interrupted else 0


def tune_gc() -> None:
    """Garbage collection for a server process: what was loaded at start is never scanned again, and a
    collection waits for 10,000 new objects instead of 700.

    A request allocates thousands of objects and frees nearly all of them once parsed. Under load the default
    collected many times a second, freed nothing, and now and then walked every loaded module.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


def tune_malloc() -> None:
    """Large blocks (request bodies, their decoded text) go back to the system when freed (glibc only).

    glibc raises its mmap threshold to the size of each large block freed, up to 32 MiB; after that, 20 MiB bodies
    came from the heap of each worker thread and stayed resident: 100 MB over a 64 MiB --max-inflight-bytes.
    """
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, 128 * 1024)  # setting it turns the raising off


_M_MMAP_THRESHOLD = -3


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET
