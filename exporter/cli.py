"""Command line: ``serve`` (default), ``scan``, ``check-config``, ``demo``, ``simulate``.

Flags follow Prometheus exporter conventions (dotted long flags). Bad input of any
kind prints one line naming the problem and exits 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import NoReturn, TextIO

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from exporter import __version__
from exporter.collectors import build_registry
from exporter.config import Config, ConfigError, load_config
from exporter.logs import configure_logging, register_secret
from exporter.output import render
from exporter.processmetrics import register_process_collectors
from exporter.scanner import ProgressCallback
from exporter.service import ExporterService
from exporter.sharding import Shard, ordinal_from_hostname
from exporter.state import StateFileError
from exporter.web import make_app
from exporter.webconfig import WebConfig, WebConfigError, load_web_config
from exporter.webserver import (
    HEADER_TIMEOUT_SECONDS,
    GuardedSite,
    default_max_connections,
    quiet_accept_errors,
)

log = structlog.get_logger("exporter.cli")

DEFAULT_LISTEN = "0.0.0.0:9842"
SHUTDOWN_GRACE_SECONDS = 3.0
SHUTDOWN_DEADLINE_SECONDS = 4.5
"""After the first signal, the process exits by this time even if cleanup hangs."""
EXIT_OK, EXIT_SCAN_FAILED, EXIT_USAGE = 0, 1, 2
COMMANDS = ("serve", "scan", "check-config", "demo", "simulate")


class UsageError(Exception):
    """Bad input on the command line; exit 2 with the message."""


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``:PORT`` means every interface; ``[::1]:PORT`` for IPv6)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"listen address {value!r} is not HOST:PORT")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def _build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--log.level",
        dest="log_level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="lowest level logged (default: info)",
    )
    common.add_argument(
        "--log.format",
        dest="log_format",
        default="console",
        choices=("console", "json"),
        help="log line format (default: console)",
    )
    config_flag = argparse.ArgumentParser(add_help=False)
    config_flag.add_argument(
        "--config.file", dest="config_file", required=True, help="YAML configuration file"
    )
    listen_flag = argparse.ArgumentParser(add_help=False)
    listen_flag.add_argument(
        "--web.listen-address",
        dest="listen",
        default=DEFAULT_LISTEN,
        help=f"address for /metrics and the landing page (default: {DEFAULT_LISTEN})",
    )
    listen_flag.add_argument(
        "--web.config.file",
        dest="web_config_file",
        default=None,
        help="YAML file enabling TLS and/or basic auth (Prometheus exporter-toolkit format)",
    )
    listen_flag.add_argument(
        "--web.max-connections",
        dest="max_connections",
        type=int,
        default=None,
        help="most client connections held at once; beyond, the oldest idle one is closed "
        "(default: from the open-file limit)",
    )

    shard_flags = argparse.ArgumentParser(add_help=False)
    shard_flags.add_argument(
        "--shard.index",
        dest="shard_index",
        type=int,
        default=None,
        help="this instance's shard, 0 .. count-1 (default 0)",
    )
    shard_flags.add_argument(
        "--shard.count",
        dest="shard_count",
        type=int,
        default=1,
        help="number of shards the users are split into (default 1: no sharding)",
    )
    shard_flags.add_argument(
        "--shard.from-hostname",
        dest="shard_from_hostname",
        action="store_true",
        help="take the shard index from the trailing ordinal of the host name "
        "(a StatefulSet pod name such as exporter-2; $HOSTNAME, else the system's)",
    )

    parser = argparse.ArgumentParser(
        prog="gitlab-activity-exporter",
        description="Prometheus exporter for per-user GitLab activity.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser(
        "serve",
        parents=[common, config_flag, listen_flag, shard_flags],
        help="run the exporter (default)",
    )
    scan = commands.add_parser(
        "scan",
        parents=[common, config_flag, shard_flags],
        help="scan once, print the result, exit",
    )
    scan.add_argument(
        "--output", default="table", choices=("table", "json", "csv", "prometheus")
    )
    check = commands.add_parser(
        "check-config", parents=[common, config_flag], help="validate the configuration"
    )
    check.add_argument(
        "--connect",
        action="store_true",
        help="also reach GitLab once: who the token is (administrator or not) and "
        "GitLab's version, or what is wrong with the connection (exit 1)",
    )
    commands.add_parser(
        "demo",
        parents=[common, listen_flag],
        help="run the exporter against a built-in GitLab simulator",
    )
    simulate = commands.add_parser(
        "simulate", parents=[common], help="run only the GitLab simulator"
    )
    simulate.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT to serve on")
    simulate.add_argument("--seed", type=int, default=1)
    simulate.add_argument("--users", type=int, default=20)
    simulate.add_argument("--projects", type=int, default=60)
    simulate.add_argument("--latency-ms", dest="latency_ms", type=float, default=0.0)
    simulate.add_argument("--fault-rate", dest="fault_rate", type=float, default=0.0)
    simulate.add_argument("--token", default=os.environ.get("GITLAB_TOKEN", "simulator-token"))
    return parser


def _normalise_argv(argv: Sequence[str]) -> list[str]:
    """``serve`` is the default command: insert it when none is given."""
    args = list(argv)
    if any(a in ("-h", "--help", "--version") for a in args):
        return args
    if not any(a in COMMANDS for a in args):
        args.insert(0, "serve")
    return args


def shard_from_args(args: argparse.Namespace) -> Shard:
    """The shard from ``--shard.*`` flags; :class:`UsageError` when they do not fit."""
    count: int = args.shard_count
    if count < 1:
        raise UsageError(f"--shard.count must be at least 1, not {count}")
    if args.shard_from_hostname:
        if args.shard_index is not None:
            raise UsageError("give --shard.index or --shard.from-hostname, not both")
        hostname = os.environ.get("HOSTNAME") or socket.gethostname()
        try:
            index = ordinal_from_hostname(hostname)
        except ValueError as exc:
            raise UsageError(f"--shard.from-hostname: {exc}") from None
    else:
        index = 0 if args.shard_index is None else args.shard_index
    try:
        return Shard(index, count)
    except ValueError as exc:
        raise UsageError(f"{exc}; check --shard.index/--shard.count") from None


def _load(path: str) -> Config:
    config = load_config(path)
    register_secret(config.token)
    return config


# --- commands -----------------------------------------------------------------------


async def _serve_until_signal(
    app: web.Application,
    host: str,
    port: int,
    on_started: Callable[[str], None] | None = None,
    web_config: WebConfig | None = None,
    max_connections: int | None = None,
    on_reload: Callable[[], None] | None = None,
) -> None:
    """Serve ``app`` until SIGTERM or SIGINT; a second signal exits at once. SIGHUP calls
    ``on_reload`` (or is logged as ignored, like SIGUSR1 and SIGUSR2)."""
    ssl_context = web_config.apply(app) if web_config is not None else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    quiet_accept_errors(loop)

    def _force_exit(signum: int, reason: str) -> None:
        log.error(reason, signal=signal.Signals(signum).name)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(128 + signum)

    def _signal(signum: int) -> None:
        if stop.is_set():
            _force_exit(signum, "second signal; exiting at once")
        log.info("shutting down", signal=signal.Signals(signum).name)
        stop.set()
        # a shutdown that hangs must not keep the process alive
        loop.call_later(
            SHUTDOWN_DEADLINE_SECONDS, _force_exit, signum, "shutdown took too long; exiting"
        )

    def _other(signum: int) -> None:
        if signum == signal.SIGHUP and on_reload is not None:
            on_reload()
        else:
            log.info("signal ignored", signal=signal.Signals(signum).name)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _signal, signum)
    for signum in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        loop.add_signal_handler(signum, _other, signum)
    # What start-up allocated (modules, configuration, the app) lives as long as the
    # process: keep it out of the garbage collector's full passes, which pause the loop.
    gc.freeze()
    runner = web.AppRunner(
        app,
        handle_signals=False,
        shutdown_timeout=SHUTDOWN_GRACE_SECONDS,
        access_log=None,
        # a request's headers must be in within this of connecting or of the last response
        keepalive_timeout=HEADER_TIMEOUT_SECONDS,
    )
    await runner.setup()
    try:
        site = GuardedSite(
            runner,
            host,
            port,
            ssl_context=ssl_context,
            max_connections=max_connections or default_max_connections(),
        )
        await site.start()
        address = site.name
        log.info("listening", address=address, version=__version__)
        if on_started is not None:
            on_started(address)
        await stop.wait()
    finally:
        await runner.cleanup()


def _service_registry(service: ExporterService) -> CollectorRegistry:
    registry = build_registry(
        lambda: service.snapshot,
        version=__version__,
        interval_seconds=service.config.scan.interval_seconds,
        shard=(service.shard.index, service.shard.count),
    )
    service.attach_metrics(registry, warm=True)
    return registry


def _exporter_app(service: ExporterService) -> web.Application:
    registry = _service_registry(service)
    register_process_collectors(registry)  # serve and demo only, not `scan`
    app = make_app(
        registry=registry,
        source=lambda: service.snapshot,
        version=__version__,
        progress=service.progress,
    )
    app.cleanup_ctx.append(service.lifespan)
    return app


def _max_connections(args: argparse.Namespace) -> int | None:
    value: int | None = args.max_connections
    if value is not None and value < 1:
        raise UsageError(f"--web.max-connections must be at least 1, not {value}")
    return value


def _web_config(args: argparse.Namespace) -> WebConfig | None:
    return load_web_config(args.web_config_file) if args.web_config_file else None


def _reloader(service: ExporterService, path: str) -> Callable[[], None]:
    """SIGHUP: read ``path`` again; teams, users, periods and weights change from the
    next scan on, state and numbers stay; an invalid file is one error line, and the
    running configuration stays."""

    def reload() -> None:
        try:
            new = _load(path)
        except ConfigError as exc:
            log.error("configuration not reloaded; the running one is kept", error=str(exc))
            return
        waiting = service.reload(new)
        log.info(
            "configuration reloaded",
            teams=len(new.teams),
            users=len(new.static_usernames),
            **({"restart_needed_for": ", ".join(waiting)} if waiting else {}),
        )

    return reload


def cmd_serve(args: argparse.Namespace) -> int:
    shard = shard_from_args(args)
    config = _load(args.config_file)
    host, port = parse_listen(args.listen)
    web_config = _web_config(args)
    service = ExporterService(config, shard=shard)
    asyncio.run(
        _serve_until_signal(
            _exporter_app(service),
            host,
            port,
            web_config=web_config,
            max_connections=_max_connections(args),
            on_reload=_reloader(service, args.config_file),
        )
    )
    return EXIT_OK


@contextlib.contextmanager
def terminal_progress(
    stream: TextIO, *, log_level: str, log_format: str
) -> Iterator[ProgressCallback | None]:
    """A progress bar on ``stream`` while scanning when it is a terminal, else nothing.

    While the bar is shown, log lines are printed above it instead of through it.
    """
    if not stream.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    console = Console(file=stream)
    bar = Progress(
        TextColumn("Scanning users"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    with bar:
        task = bar.add_task("scan", total=None)
        # rich now routes sys.stderr above the bar: send the logs there too
        configure_logging(log_level, log_format)
        try:
            yield lambda done, total: bar.update(task, completed=done, total=total)
        finally:
            configure_logging(log_level, log_format, stream=stream)


async def _scan(
    config: Config, output: str, shard: Shard, on_progress: ProgressCallback | None = None
) -> tuple[str, bool, bool]:
    """The rendered scan, whether it ran to completion, and whether GitLab could not be
    used at all (the cause then logged)."""
    service = ExporterService(config, shard=shard, on_progress=on_progress)
    registry = _service_registry(service)
    async with service:
        snapshot = await service.scan_once()
    summary = snapshot.last_scan
    door = service.connection_problem is not None
    ok = not door and (
        summary is not None
        and (summary.users_total == 0 or summary.users_failed < summary.users_total)
    )
    return render(snapshot, output, registry=registry), ok, door


def cmd_scan(args: argparse.Namespace) -> int:
    # a scan cut short by SIGTERM or a hang-up did not run to completion: not exit 0
    # (see __main__, which catches them while the modules load)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    shard = shard_from_args(args)
    config = _load(args.config_file)
    with terminal_progress(
        sys.stderr, log_level=args.log_level, log_format=args.log_format
    ) as on_progress:
        text, ok, door = asyncio.run(_scan(config, args.output, shard, on_progress))
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    if not ok:
        if not door:  # a door mistake's cause was logged in one line already
            log.error("no user could be scanned")
        return EXIT_SCAN_FAILED
    return EXIT_OK


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args.config_file)
    users = len(config.static_usernames)
    groups = sum(1 for t in config.teams if t.group)
    print(
        f"config ok: {len(config.teams)} teams, {users} users listed"
        + (f", {groups} GitLab groups resolved at scan time" if groups else "")
    )
    if getattr(args, "connect", False):
        return asyncio.run(_check_connection(config))
    return EXIT_OK


async def _check_connection(config: Config) -> int:
    """``check-config --connect``: one probe; who the token is, or what is wrong."""
    async with ExporterService(config) as service:
        problem = await service.check_connection(report=False)
        server = service.server
    if problem is not None or server is None:
        print(f"gitlab-activity-exporter: error: connection: {problem}", file=sys.stderr)
        return EXIT_SCAN_FAILED
    print(server.describe(config.gitlab.url))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from exporter.demo import run_demo

    host, port = parse_listen(args.listen)
    web_config = _web_config(args)

    async def _run() -> None:
        async with run_demo() as config:
            register_secret(config.token)
            service = ExporterService(config)
            await _serve_until_signal(
                _exporter_app(service),
                host,
                port,
                on_started=lambda address: print(
                    f"demo exporter on {address}/metrics (GitLab simulator at {config.gitlab.url})",
                    flush=True,
                ),
                web_config=web_config,
                max_connections=max_connections,
            )

    max_connections = _max_connections(args)
    asyncio.run(_run())
    return EXIT_OK


def cmd_simulate(args: argparse.Namespace) -> int:
    from exporter.simulator.server import serve_simulator

    host, port = parse_listen(args.listen)
    if args.users < 1 or args.projects < 1:
        raise UsageError("--users and --projects must be at least 1")
    if not 0.0 <= args.fault_rate <= 1.0:
        raise UsageError("--fault-rate must be between 0 and 1")
    if args.latency_ms < 0:
        raise UsageError("--latency-ms must not be negative")
    register_secret(args.token)

    async def _run() -> None:
        task = asyncio.ensure_future(
            serve_simulator(
                host,
                port,
                seed=args.seed,
                users=args.users,
                projects=args.projects,
                latency_ms=args.latency_ms,
                fault_rate=args.fault_rate,
                token=args.token,
            )
        )
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(_run())
    return EXIT_OK


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "serve": cmd_serve,
    "scan": cmd_scan,
    "check-config": cmd_check_config,
    "demo": cmd_demo,
    "simulate": cmd_simulate,
}


def _fail(message: str) -> NoReturn:
    print(f"gitlab-activity-exporter: error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(_normalise_argv(sys.argv[1:] if argv is None else argv))
    configure_logging(args.log_level, args.log_format)
    try:
        return HANDLERS[args.command](args)
    except ConfigError as exc:
        _fail(f"config: {exc}")
    except WebConfigError as exc:
        _fail(f"web config: {exc}")
    except StateFileError as exc:
        _fail(str(exc))
    except UsageError as exc:
        _fail(str(exc))
    except OSError as exc:  # e.g. the listen port is taken
        _fail(f"{exc.strerror or exc}")
    except KeyboardInterrupt:
        return 130

