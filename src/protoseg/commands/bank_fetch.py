"""``protoseg bank fetch NAME``: download a published bank into protoseg's cache once (``--list``: the names)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from protoseg.commands.common import progress_bar


class _AmountColumn(ProgressColumn):
    """Bytes for the tasks marked ``bytes=True`` (downloads, unpacking), counts for the others."""

    def __init__(self) -> None:
        super().__init__()
        self.as_bytes, self.as_count = DownloadColumn(), MofNCompleteColumn()

    def render(self, task: Task) -> Text:
        return (self.as_bytes if task.fields.get("bytes") else self.as_count).render(task)


def _list_published() -> None:
    from protoseg.offline.published_banks import PUBLISHED_BANKS, bank_folder, is_fetched  # see fetch_published

    table = Table("name", "preset", "fetched", "what")
    for entry in PUBLISHED_BANKS.values():
        table.add_row(entry.name, entry.preset, str(bank_folder(entry.name)) if is_fetched(entry.name) else "no",
                      entry.description)
    Console().print(table)


def fetch_published(
    name: Annotated[str | None, typer.Argument(help="Published bank to fetch (see --list).")] = None,
    list_names: Annotated[bool, typer.Option("--list", help="List the published banks and whether they are "
                                                            "fetched.")] = False,
) -> None:
    """Download, verify and import a published bank once (freeda-l: FreeDA's released bank); prints its folder.

    Kept in $PROTOSEG_HOME/banks (default ~/.cache/protoseg/banks): a second fetch downloads nothing, an
    interrupted one continues where it stopped.

    Other addresses (mirrors): PROTOSEG_FREEDA_EMBEDDINGS_URL and PROTOSEG_FREEDA_INDEX_URL."""
    # a measured import-time cost: the importer loads protoseg.offline and torch (~5 s)
    from protoseg.offline.published_banks import fetch_bank, published_bank

    if list_names or name is None:
        _list_published()
        return
    entry = published_bank(name)
    columns = (TextColumn("{task.description}"), BarColumn(), _AmountColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with progress_bar(transient=True, columns=columns) as bar:
        tasks: dict[str, int] = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=None, bytes=stage != "import")
            bar.update(tasks[stage], completed=done, total=total or None)

        folder = fetch_bank(name, progress=report)
    typer.echo(f"{entry.name}: {folder}")
    typer.echo(f"segment with: protoseg segment IMAGE --classes ... --preset {entry.preset} --bank {folder}")
