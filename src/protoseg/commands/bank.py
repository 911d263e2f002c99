"""``protoseg bank ...``: inspect, build from examples, grow, merge and import prototype banks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from protoseg.commands.bank_fetch import fetch_published
from protoseg.commands.common import (
    DeviceOption,
    FeaturesOption,
    JsonOption,
    StorageDtypeOption,
    TextOption,
    check_device,
    check_storage_dtype,
    model_overrides,
    print_json,
    progress_bar,
)
from protoseg.commands.verbosity import model_library_output

bank_app = typer.Typer(no_args_is_help=True, help="Inspect, build, extend, merge and import prototype banks.")


@bank_app.command("info")
def info(bank: Annotated[Path, typer.Argument(help="Bank directory, or hf://owner/name (hf://owner/name@revision).")],
         classes: Annotated[bool, typer.Option(help="List prototype counts per class.")] = False,
         json_output: JsonOption = False) -> None:
    """Print a summary of a bank (--json: every field, the counts per class included)."""
    # imported on use, like every command: the CLI starts without loading the library (about 1 s)
    from protoseg.bank import load_bank

    summary = load_bank(bank).summary()
    if json_output:
        print_json(summary)
        return
    table = Table(title=f"bank {bank}", show_header=False)
    for key in ("method", "prototypes", "classes", "support_images", "levels", "feature_encoder", "feature_dim",
                "dtype", "text_encoder", "text_keys", "index"):
        table.add_row(key, str(summary[key]))
    Console().print(table)
    if classes:
        per = Table("class", "prototypes")
        for name, count in summary["per_class"].items():
            per.add_row(repr(name) if name != name.strip() else name, str(count))
        Console().print(per)


@bank_app.command("from-examples")
def from_examples(
    examples: Annotated[Path, typer.Argument(help="Folder with classes.txt, images/ and masks/.")],
    out: Annotated[Path, typer.Option(help="Bank directory to write.")],
    preset: Annotated[str, typer.Option(help="Preset whose feature (and CLIP) models to use.")] = "freeda-b",
    device: DeviceOption = "auto",
    storage_dtype: StorageDtypeOption = "float16",
    features: FeaturesOption = None,
    text: TextOption = None,
) -> None:
    """Build a bank from a few labelled images (no diffusion model needed). Interrupted builds resume."""
    # imported on use, like every command: the CLI starts without loading the library (about 1 s)
    from protoseg.bank import load_bank
    from protoseg.config.segment import get_preset
    from protoseg.offline import build_examples_bank

    check_storage_dtype(storage_dtype)
    check_device(device)
    segment = get_preset(preset, **model_overrides(features, text))
    model_library_output()
    with progress_bar(transient=True) as bar:
        task = bar.add_task("pooling examples", total=None)
        build_examples_bank(examples, out, segment, dtype=storage_dtype, device=device,
                            progress=lambda stage, done, total: stage == "shards" and bar.update(
                                task, completed=done, total=total))
    s = load_bank(out).summary()
    typer.echo(f"wrote {out}: {s['prototypes']} prototypes ({s['levels']}) for {s['classes']} classes")


@bank_app.command("merge")
def merge(banks: Annotated[list[Path], typer.Argument(help="Banks to merge.")],
          out: Annotated[Path, typer.Option(help="Bank directory to write.")]) -> None:
    """Merge banks built with the same encoders into one."""
    # imported on use, like every command: the CLI starts without loading the library (about 1 s)
    from protoseg.bank import merge_banks

    merged = merge_banks(banks, out)
    typer.echo(f"wrote {out}: {len(merged)} prototypes, {len(merged.classes)} classes")


@bank_app.command("extend")
def extend(bank: Annotated[Path, typer.Argument(help="Bank to extend.")],
           new: Annotated[Path, typer.Argument(help="Bank with the classes to add.")],
           out: Annotated[Path, typer.Option(help="Bank directory to write (may equal BANK).")],
           replace: Annotated[bool, typer.Option(help="Rebuild classes present in both from NEW.")] = False) -> None:
    """Add the classes of NEW to BANK without rebuilding it."""
    # imported on use, like every command: the CLI starts without loading the library (about 1 s)
    from protoseg.bank import extend_bank

    grown = extend_bank(bank, new, out, replace=replace)
    typer.echo(f"wrote {out}: {len(grown)} prototypes, {len(grown.classes)} classes")


@bank_app.command("import-freeda")
def import_freeda_cmd(
    embeddings: Annotated[Path, typer.Argument(help="FreeDA's prototype_embeddings/ folder.")],
    index: Annotated[Path, typer.Argument(help="FreeDA's knn.index.")],
    out: Annotated[Path, typer.Option(help="Bank directory to write.")],
    feature_encoder: Annotated[str, typer.Option(help="Encoder of the prototypes.")] = "facebook/dinov2-large",
    text_encoder: Annotated[str, typer.Option(help="Encoder of the keys.")] = "openai/clip-vit-large-patch14",
) -> None:
    """Turn FreeDA's released embeddings + faiss index into a bank (use with --preset freeda-l).

    Where the files are: the README of FreeDA's official repository links them (Google Drive):

    https://github.com/aimagelab/freeda

    faiss_index.zip holds knn.index; the tar archive of the embeddings unpacks into prototype_embeddings/

    (one 1024-d DINOv2 ViT-L/14 prototype per .npy file).

    Interrupted imports resume."""
    # imported on use, like every command: the CLI starts without loading the library (about 1 s)
    from protoseg.offline import import_freeda

    with progress_bar(transient=True) as progress:
        task = progress.add_task("importing", total=None)
        import_freeda(embeddings, index, out, feature_encoder=feature_encoder, text_encoder=text_encoder,
                      progress=lambda stage, done, total: stage == "shards" and progress.update(
                          task, completed=done, total=total))
    typer.echo(f"wrote {out}")


@bank_app.command("push")
def push(bank: Annotated[Path, typer.Argument(help="Bank directory to publish.")],
         repo: Annotated[str, typer.Argument(help="Hub dataset repository, owner/name (created when missing).")],
         private: Annotated[bool, typer.Option(help="Create the repository private.")] = False,
         branch: Annotated[str | None, typer.Option(
             "--branch", "--revision", help="Branch to commit to (created from main when missing).")] = None,
         licence: Annotated[str, typer.Option(
             "--licence", "--license", help="Licence id of the dataset card (e.g. cc-by-4.0, openrail++).")] = "other",
         ) -> None:
    """Upload a bank to the Hugging Face Hub as a dataset with a generated card (README.md).

    Read it back anywhere with --bank hf://owner/name (or hf://owner/name@BRANCH).

    Uses HF_TOKEN or `hf auth login`; HF_ENDPOINT picks the Hub."""
    # imported on use, like every command: the CLI starts without loading the library (about 1 s)
    from protoseg.bank.hub import push_bank

    pushed = push_bank(bank, repo, private=private, branch=branch, licence=licence)
    typer.echo(f"pushed {bank} to {pushed['url']}; segment with --bank {pushed['uri']}")


bank_app.command("fetch")(fetch_published)


def register(app: typer.Typer) -> None:
    app.add_typer(bank_app, name="bank")
