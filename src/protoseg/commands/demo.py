"""``protoseg demo``: the web demo (a Gradio page on this machine)."""

from __future__ import annotations

import shutil
import signal
import socket
import tempfile
from pathlib import Path
from typing import Annotated

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


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def demo(
    bank: Annotated[Path | None, typer.Option(help="Prototype bank folder the page starts with.")] = None,
    preset: Annotated[str, typer.Option(help="Preset the page starts with (see `protoseg presets`).")] = "freeda-b",
    port: Annotated[int, typer.Option(help="Port to serve the page on.")] = 7860,
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    device: DeviceOption = "auto",
    features: FeaturesOption = None,
    text: TextOption = None,
    sam: SamOption = None,
    allow_synthetic_backend: AllowSyntheticOption = False,
) -> None:
    """Serve the web demo: drop images, type classes, see input and overlay side by side with each class's
    share of the pixels, and download the label maps. Runs until Ctrl-C."""
    # import time: these load torch (and protoseg.demo the whole library), paid only by this command
    from protoseg.bank import PrototypeBank
    from protoseg.bank_source import bank_location
    from protoseg.config.segment import get_preset
    from protoseg.demo import DemoSettings, build_demo, launch

    try:
        import gradio  # noqa: F401  (the optional dependency of the demo alone)
    except ModuleNotFoundError:
        raise ProtosegError('the web demo needs gradio, which protoseg installs only with its demo extra: '
                            'pip install "protoseg[demo]"') from None
    get_preset(preset, **model_overrides(features, text, sam))  # an unknown preset is one error line, now
    check_device(device)
    if bank is not None:
        bank = bank_location(bank)  # a published bank's name -> its folder (fetched once)
        PrototypeBank.load(bank)
    check_port(host, port)

    settings = DemoSettings(bank=str(bank) if bank is not None else "", preset=preset, features=features, text=text,
                            sam=sam, device=device, allow_synthetic=allow_synthetic_backend)
    out_dir = Path(tempfile.mkdtemp(prefix="protoseg-demo-"))
    signal.signal(signal.SIGTERM, _stop)  # `kill` stops the server like Ctrl-C, and the outputs are removed
    try:
        app = build_demo(settings, out_dir)
        typer.echo(f"protoseg demo on http://{host}:{port} (Ctrl-C stops it)")
        try:
            launch(app, host, port, out_dir)
        except KeyboardInterrupt:
            typer.echo("demo stopped")
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)  # the demo's own outputs only


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
