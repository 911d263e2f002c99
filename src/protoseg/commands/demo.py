"""``protoseg demo``: the web demo (a Gradio page on this machine, or — with ``--auth`` — on a network)."""

from __future__ import annotations

import importlib.util
import ipaddress
import logging
import os
import shutil
import signal
import socket
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from protoseg.commands.common import (
    AllowSyntheticOption,
    DeviceOption,
    FeaturesOption,
    SamOption,
    TextOption,
    check_device,
    model_overrides,
)
from protoseg.errors import ProtosegError

if TYPE_CHECKING:
    from protoseg.demo import DemoSettings


def check_port(host: str, port: int) -> None:
    """The demo can listen on ``host:port``.

    Raises:
        ProtosegError: a port out of range, an unknown host, or a port in use.
    """
    if not 1 <= port <= 65535:
        raise ProtosegError(f"--port must be between 1 and 65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise ProtosegError(f"--host {host!r} is not an address of this machine") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise ProtosegError(f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port") from None


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` names is this machine's loopback (only this machine can connect)."""
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def read_auth(pairs: list[str], auth_file: Path | None) -> list[tuple[str, str]]:
    """The ``(user, password)`` pairs of ``--auth USER:PASSWORD`` and of ``--auth-file`` (one ``USER:PASSWORD``
    a line, ``#`` comments). Messages never repeat a password.

    Raises:
        ProtosegError: a pair without ``:``, an empty user or password, or an unreadable file.
    """
    lines = [("--auth", k, pair) for k, pair in enumerate(pairs, 1)]
    if auth_file is not None:
        try:
            text = auth_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ProtosegError(f"cannot read --auth-file {auth_file}: {exc}") from None
        lines += [("--auth-file line", k, line.strip()) for k, line in enumerate(text.splitlines(), 1)
                  if line.strip() and not line.lstrip().startswith("#")]
    users = []
    for where, k, pair in lines:
        user, sep, password = pair.partition(":")
        if not sep or not user.strip() or not password:
            raise ProtosegError(f"{where} {k} is not USER:PASSWORD (a user name, a colon, a password)")
        users.append((user.strip(), password))
    return users


def check_exposure(host: str, users: list[tuple[str, str]]) -> None:
    """A host other than loopback needs users with passwords.

    Raises:
        ProtosegError: ``host`` is reachable from other machines and no ``--auth`` / ``--auth-file`` is given.
    """
    if not is_loopback(host) and not users:
        raise ProtosegError(f"--host {host} makes the demo reachable from other machines; give --auth USER:PASSWORD "
                            "(repeatable) or --auth-file FILE (one USER:PASSWORD a line) so that only the people "
                            "you invite can use it")


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def demo(
    bank: Annotated[list[str] | None, typer.Option(
        help="A bank the page offers (repeatable): a folder, hf://owner/name[@revision] or a published name "
             "(freeda-l). Web users choose among these.")] = None,
    preset: Annotated[str, typer.Option(help="Preset the page starts with (see `protoseg presets`).")] = "freeda-b",
    port: Annotated[int, typer.Option(help="Port to serve the page on.")] = 7860,
    host: Annotated[str, typer.Option(help="Address to listen on; other than loopback (e.g. 0.0.0.0) it needs "
                                           "--auth or --auth-file.")] = "127.0.0.1",
    auth: Annotated[list[str] | None, typer.Option(help="USER:PASSWORD allowed to log in (repeatable).")] = None,
    auth_file: Annotated[Path | None, typer.Option(help="File of USER:PASSWORD lines allowed to log in.")] = None,
    allow_bank_paths: Annotated[bool, typer.Option(
        help="Let web users type a bank folder or hf:// id of this server's (off: only the --bank list).")] = False,
    allow_generate: Annotated[bool, typer.Option(
        help="Let web users grow a bank with classes it lacks (in the background, capped).")] = False,
    generate_max_classes: Annotated[int, typer.Option(help="New classes per request when generating.")] = 5,
    generate_max_seconds: Annotated[float, typer.Option(help="Seconds one generation may run.")] = 900.0,
    offline: Annotated[bool, typer.Option(help="Never use the network: HF_HUB_OFFLINE=1, no Hub or published "
                                               "bank downloads.")] = False,
    cache_size: Annotated[int, typer.Option(help="Banks (and segmenters) kept loaded.")] = 4,
    max_megapixels: Annotated[float, typer.Option(help="Pixels per image, in millions.")] = 16.0,
    max_file_mb: Annotated[float, typer.Option(help="Megabytes per uploaded file.")] = 20.0,
    max_files: Annotated[int, typer.Option(help="Images per request.")] = 8,
    max_classes: Annotated[int, typer.Option(help="Classes per request.")] = 50,
    max_class_chars: Annotated[int, typer.Option(help="Characters per class name.")] = 60,
    time_limit: Annotated[float, typer.Option(help="Seconds a request may run.")] = 120.0,
    queue_size: Annotated[int, typer.Option(help="Requests waiting at most.")] = 16,
    concurrency: Annotated[int, typer.Option(help="Requests served at the same time.")] = 2,
    device: DeviceOption = "auto",
    features: FeaturesOption = None,
    text: TextOption = None,
    sam: SamOption = None,
    allow_synthetic_backend: AllowSyntheticOption = False,
) -> None:
    """Serve the web demo: drop images, type classes, see input and overlay side by side with each class's
    share of the pixels, and download the label maps. Runs until Ctrl-C."""
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"  # before the Hub client is imported: it reads this once
    # import time: these load torch (and protoseg.demo the whole library), paid only by this command
    from protoseg.config.segment import get_preset
    from protoseg.demo import DemoLimits, DemoSettings, GenerationLimits, operator_banks

    if importlib.util.find_spec("gradio") is None:  # before any bank is read or fetched
        raise ProtosegError('the web demo needs gradio, which protoseg installs only with its demo extra: '
                            'pip install "protoseg[demo]"')
    overrides = model_overrides(features, text, sam)
    get_preset(preset, **overrides)  # an unknown preset is one error line, now
    check_device(device)
    limits = DemoLimits(max_pixels=int(max_megapixels * 1e6), max_file_mb=max_file_mb, max_files=max_files,
                        max_classes=max_classes, max_class_chars=max_class_chars, time_limit_s=time_limit,
                        queue_size=queue_size, concurrency=concurrency, cache_size=cache_size)
    generation = GenerationLimits(generate_max_classes, generate_max_seconds) if allow_generate else None
    users = read_auth(auth or [], auth_file)
    check_exposure(host, users)
    check_port(host, port)
    if not bank and not allow_bank_paths:
        raise ProtosegError("give the banks the page offers: --bank FOLDER, --bank hf://owner/name or --bank "
                            "freeda-l (repeatable)")
    banks = operator_banks(list(bank or []), overrides, offline)
    settings = DemoSettings(banks=tuple(banks), preset=preset, features=features, text=text, sam=sam, device=device,
                            allow_synthetic=allow_synthetic_backend, allow_bank_paths=allow_bank_paths,
                            offline=offline, limits=limits, generation=generation)
    fitting = sorted({name for b in banks for name in b.presets})
    if banks and preset not in fitting:
        raise ProtosegError(f"--preset {preset} fits none of the banks; use one of {', '.join(fitting)}")
    _serve(settings, host, port, users)


def exposure_lines(settings: DemoSettings, host: str, port: int, users: list[tuple[str, str]]) -> list[str]:
    """What the demo serves and to whom, as the command prints it when it starts."""
    s = settings
    reach = ("this machine only" if is_loopback(host)
             else f"every machine that can reach {host}:{port}")
    banks = "; ".join(f"{b.name} ({', '.join(b.presets)})" for b in s.banks) or "none"
    lines = [
        f"protoseg demo on http://{host}:{port} (Ctrl-C stops it)",
        f"  reachable from: {reach}" + (f"; {len(users)} user(s) log in with a password" if users else ""),
        f"  banks (presets): {banks}",
        f"  typed bank paths: {'on' if s.allow_bank_paths else 'off'}; generation: "
        + (f"on (at most {s.generation.max_classes} classes, {s.generation.max_seconds:g} s)" if s.generation
           else "off") + f"; network: {'off (--offline)' if s.offline else 'on (hf:// banks, model weights)'}",
        f"  limits: {s.limits.describe()}; {s.limits.cache_size} banks kept loaded",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0 and not is_loopback(host):
        lines.append("  warning: running as root on a network; a user of its own is safer")
    return lines


def _serve(settings: DemoSettings, host: str, port: int, users: list[tuple[str, str]]) -> None:
    """Serve the page until Ctrl-C or SIGTERM; the demo's folder (outputs and Gradio's uploads) is removed on
    stop."""
    root = Path(tempfile.mkdtemp(prefix="protoseg-demo-"))
    os.environ["GRADIO_TEMP_DIR"] = str(root / "uploads")  # before gradio is imported: it reads this once
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # the page reports nothing to anyone
    try:
        import gradio  # noqa: F401  (a dependency; checked so that a broken install says what is missing)
    except ModuleNotFoundError:
        shutil.rmtree(root, ignore_errors=True)
        raise ProtosegError('the web demo needs gradio, which protoseg installs only with its demo extra: '
                            'pip install "protoseg[demo]"') from None
    from protoseg.demo import build_demo, launch  # see demo(): the whole library

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("protoseg.demo").setLevel(logging.INFO)  # refused banks, failures, generations
    signal.signal(signal.SIGTERM, _stop)  # `kill` stops the server like Ctrl-C, and the folder is removed
    app = None
    try:
        app = build_demo(settings, root / "out")
        for line in exposure_lines(settings, host, port, users):
            typer.echo(line)
        try:
            launch(app, host, port, root / "out", auth=users)
        except KeyboardInterrupt:
            pass  # gradio usually handles it itself and returns
        typer.echo("demo stopped")
    finally:
        if app is not None:
            app.protoseg_service.close()
            app.close()
        shutil.rmtree(root, ignore_errors=True)  # the demo's own folder only


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
