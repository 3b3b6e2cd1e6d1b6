"""`python -m catalog_cli`: run one region's sync against given endpoints, with progress."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import boto3
import typer
from botocore.exceptions import BotoCoreError, ClientError
from rich.console import Console
from rich.markup import escape

from catalog_sync import fsx_import
from catalog_sync.catalogs import open_sink
from catalog_sync.published import FileCounts
from catalog_sync.records import Association
from catalog_sync.references import References
from catalog_sync.sinks import SinkError
from catalog_sync.sync import sync_region
from stackconfig import PROJECT_DIR, TOP_LEVEL_KEYS, ConfigError, load_stack_file

console = Console(stderr=True)
app = typer.Typer(add_completion=False, help=__doc__, rich_markup_mode=None)


# Without a stack, the stack config's own default drop limit (syncMaxDropPercent).
DEFAULT_MAX_DROP = next(key.default for key in TOP_LEVEL_KEYS if key.name == "syncMaxDropPercent") / 100


def _association(stack: str | None, region: str, dataset: str | None, lustre_path: str | None
                 ) -> tuple[Association, float]:
    """The region's association, and the stack's drop limit (syncMaxDropPercent) or the default."""
    if dataset is None:
        if stack is None:
            raise typer.BadParameter("give --stack (to read the dataset from it) or --dataset", param_hint="--dataset")
        try:
            config = load_stack_file(PROJECT_DIR, stack)
        except ConfigError as error:
            console.print(escape(str(error)), style="red")
            raise typer.Exit(2) from None
        worker = next((w for w in config.workers if w.region == region), None)
        if worker is None:
            known = ", ".join(w.region for w in config.workers)
            raise typer.BadParameter(f"stack {stack!r} has no worker region {region!r} (it has {known})",
                                     param_hint="--region")
        return (Association(region, worker.dataset.bucket, worker.dataset.prefix,
                            worker.fsx_path if worker.on_lustre else None),
                config.sync_max_drop_percent / 100)
    if not dataset.startswith("s3://") or len(dataset) <= len("s3://"):
        raise typer.BadParameter(f"{dataset!r} is not an s3://bucket[/prefix] URI", param_hint="--dataset")
    bucket, _, prefix = dataset.removeprefix("s3://").partition("/")
    prefix = prefix.strip("/")
    return (Association(region, bucket, prefix, f"/{region}/{(lustre_path or prefix or bucket).strip('/')}"),
            DEFAULT_MAX_DROP)


@app.command()
def run(
    region: Annotated[str, typer.Option(help="The worker region to sync.")],
    catalog: Annotated[str, typer.Option(help="sqlite:///<path> or an OpenSearch endpoint URL.")],
    stack: Annotated[str | None, typer.Option(help="Read the region's dataset from Pulumi.<stack>.yaml.")] = None,
    dataset: Annotated[str | None, typer.Option(help="s3://bucket[/prefix] (instead of --stack).")] = None,
    lustre_path: Annotated[str | None, typer.Option(help="With --dataset: the path under /fsx/<region>/.")] = None,
    s3_endpoint: Annotated[str | None, typer.Option(help="S3 endpoint URL (e.g. a local emulation).")] = None,
    file_system_id: Annotated[str | None, typer.Option(help="Import FSx metadata first (omit to skip).")] = None,
    domain_region: Annotated[str | None, typer.Option(help="Sign catalog requests (SigV4) for this region.")] = None,
    max_drop: Annotated[float | None, typer.Option(
        min=0.0, max=1.0, help="Refuse a swap losing more than this share (default: the stack's "
                               "syncMaxDropPercent with --stack, else 0.5).")] = None,
    force: Annotated[bool, typer.Option(help="Swap even past --max-drop.")] = False,
    page_size: Annotated[int, typer.Option(min=1, max=1000, help="Keys per S3 listing page.")] = 1000,
    published_counts: Annotated[Path | None, typer.Option(
        help="A JSON file keeping each region's last published count, so that the shrink guard holds even when "
             "the catalog lost its indices.")] = None,
    references: Annotated[str | None, typer.Option(
        help="s3://bucket[/prefix] (at the same endpoint) to write each netCDF collection's kerchunk reference set "
             "under, so that workers open a collection in one read (omit to write none).")] = None,
) -> None:
    association, stack_max_drop = _association(stack, region, dataset, lustre_path)
    max_drop = stack_max_drop if max_drop is None else max_drop
    source = f"s3://{association.bucket}/{association.key_prefix}"
    if references is not None and (not references.startswith("s3://") or not references[5:].strip("/")):
        raise typer.BadParameter(f"{references!r} is not an s3://bucket[/prefix] URI", param_hint="--references")
    try:
        sink = open_sink(catalog, domain_region)
        s3 = boto3.client("s3", region_name=region, endpoint_url=s3_endpoint)
        fsx = boto3.client("fsx", region_name=region) if file_system_id else None
        with console.status(f"importing and listing {source}") as status_line:
            def progress(documents: int) -> None:
                status_line.update(f"{documents} datasets loaded from {source}")

            report, checkpoint = sync_region(s3, association, sink, fsx=fsx, file_system_id=file_system_id,
                                             max_drop=max_drop, force=force, page_size=page_size,
                                             on_record=progress,
                                             counts=FileCounts(published_counts) if published_counts else None,
                                             references=References(s3, references) if references else None)
    except (SinkError, fsx_import.FsxImportError) as error:
        console.print(f"[red]catalog sync failed, the previous catalog is still serving:[/red] {escape(str(error))}")
        raise typer.Exit(1) from None
    except (BotoCoreError, ClientError) as error:
        console.print("[red]catalog sync failed talking to AWS, the previous catalog is still serving:[/red] "
                      f"{escape(str(error))}")
        raise typer.Exit(1) from None
    skipped: dict[str, Any] = checkpoint.skipped
    summary = f"(was {report.previous}; {report.loaded})" + (f"; skipped keys: {skipped}" if skipped else "")
    if checkpoint.unreferenced:
        summary += f"; {checkpoint.unreferenced} netCDF files without references (opened file by file)"
    console.print(f"[green]{report.region}: {report.documents} datasets now serving[/green] {escape(summary)}")


if __name__ == "__main__":
    app()
