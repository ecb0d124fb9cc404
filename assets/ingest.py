"""raw_transactions and quarantined_transactions: landing files enforced against the raw
contract, one Delta table for kept rows and one for rejected rows with their reason."""


from collections import Counter

import dagster as dg
import pyarrow as pa

from assets.common import daily_partitions, partition_days, preview, single_run
from fraudkit import lake
from fraudkit.batch import PREVIEW_ROWS, chunk_days, ids_on_several_days, ingest_days
from fraudkit.schema import (
    QUARANTINE_SCHEMA,
    RAW_SCHEMA,
    LandingFileError,
    check_landing_file,
    day_of_file,
    file_name,
    landing_entries,
    landing_files_for_day,
    skip_reason,
    skipped_files,
)
from resources import DaskResource, DeltaLakeResource, LandingZoneResource

DAYS_PER_TASK = 15
#: raw_transactions' key, for the assets that read it: naming the multi-asset itself in
#: their ``deps`` would make them depend on quarantined_transactions as well.
RAW_TRANSACTIONS = dg.AssetKey("raw_transactions")


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            RAW_TRANSACTIONS,
            description="Transactions that satisfy the raw contract, partitioned by day.",
            group_name="batch",
            kinds={"deltalake"},
        ),
        dg.AssetSpec(
            "quarantined_transactions",
            description="Landing rows that broke the contract, as text, with file, row and "
            "reason.",
            group_name="batch",
            kinds={"deltalake"},
        ),
    ],
    check_specs=[
        dg.AssetCheckSpec(
            "rows_conserved",
            asset=RAW_TRANSACTIONS,
            description="Rows read from landing = rows kept + rows quarantined, read back "
            "from both Delta tables.",
        ),
        dg.AssetCheckSpec(
            "ids_unique_across_days",
            asset=RAW_TRANSACTIONS,
            blocking=True,
            description="No transaction_id of these days is also on another day (landing "
            "validation quarantines duplicates within a day; this looks across the table). "
            "Blocks the features until the landing files are fixed and the days re-run.",
        ),
    ],
    partitions_def=daily_partitions,
    backfill_policy=single_run,
)
def raw_transactions(
    context: dg.AssetExecutionContext,
    dask: DaskResource,
    delta: DeltaLakeResource,
    landing: LandingZoneResource,
):
    days = partition_days(context)
    landing_dir = landing.ensure()
    options = landing.storage_options
    # The files are listed once here and handed to the tasks, so the files checked below
    # are the files ingested.
    listed = landing_entries(landing_dir, options)
    files = {d: landing_files_for_day(landing_dir, d, entries=listed) for d in days}
    # Files of these days (or of no day) that no run reads: named, never dropped silently.
    skipped = skipped_files(landing_dir, days, entries=listed)
    root = f"{str(landing_dir).rstrip('/')}/"
    skipped_note = "; ".join(f"{str(p).removeprefix(root)}: {skip_reason(p)}"
                             for p in skipped[:20]) + (" ..." if len(skipped) > 20 else "")
    if skipped:
        context.log.warning(f"{len(skipped)} file(s) in {landing_dir} skipped: {skipped_note}")
    missing = [d for d in days if not files[d]]
    if missing:
        unread = [file_name(p) for p in skipped if day_of_file(p) in missing][:5]
        raise dg.Failure(
            f"no landing file for {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}"
            f" in {landing_dir}: each day needs a file whose name contains the day "
            "(e.g. transactions_2026-05-01.parquet, .csv or .csv.gz, in any case)"
            + (f"; skipped there: {', '.join(unread)}" if unread else "")
            + "; nothing was written"
        )
    # Every file's header first, so a bad header late in a back-fill fails the run before
    # any chunk of it is written.
    try:
        for paths in files.values():
            for path in paths:
                check_landing_file(path, options)
    except LandingFileError as exc:
        raise dg.Failure(f"{exc}; nothing was written") from exc
    tables = delta.tables()
    lake.ensure_table(tables.raw, RAW_SCHEMA, tables.storage_options)
    lake.ensure_table(tables.quarantine, QUARANTINE_SCHEMA, tables.storage_options)
    with dask.client() as client:
        results = dask.map_with_progress(
            context, ingest_days, chunk_days(days, DAYS_PER_TASK), "ingest", client,
            landing_dir=str(landing_dir), tables=tables,
            files={d: [str(p) for p in paths] for d, paths in files.items()},
        )
        raw_version = lake.table_version(tables.raw, tables.storage_options)
        across = client.submit(ids_on_several_days, days, tables=tables,
                               raw_version=raw_version, pure=False).result()
    across_note = None
    if across["ids"]:
        across_note = (f"{across['ids']} transaction_id(s) of these days are on other days "
                       f"too, e.g. {across['examples']} (id: days): remove the duplicates "
                       "from the landing files and re-run those days")
        context.log.error(across_note)
    per_day = {d: s for r in results for d, s in r["days"].items()}
    rows_in = sum(s["rows_in"] for s in per_day.values())
    kept = lake.rows_per_day(tables.raw, days, storage_options=tables.storage_options)
    quarantined = lake.rows_per_day(tables.quarantine, days,
                                    storage_options=tables.storage_options)
    broken = [d for d in days
              if per_day[d]["rows_in"] != kept[d] + quarantined[d]]
    reasons = Counter()
    for s in per_day.values():
        reasons.update(s["reasons"])
    # Previews from the tasks' own rows (fraudkit.batch.head_of): the last day's first kept
    # rows, and the first quarantined rows of the run.
    sample = results[-1]["head"]
    bad_sample = pa.concat_tables([r["quarantine_head"] for r in results]).slice(
        0, PREVIEW_ROWS)
    yield dg.MaterializeResult(
        asset_key=RAW_TRANSACTIONS,
        metadata={
            "days": dg.MetadataValue.text(f"{days[0]} .. {days[-1]} ({len(days)})"),
            "dagster/row_count": sum(kept.values()),
            "rows_in": rows_in,
            "landing_files": sum(s["files"] for s in per_day.values()),
            "skipped_files": dg.MetadataValue.text(skipped_note or "none"),
            "table_version": raw_version,
            "table_uri": dg.MetadataValue.path(tables.raw),
            "seconds": round(sum(r["seconds"] for r in results), 2),
            "preview": preview(sample.to_pandas()),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="rows_conserved",
                passed=not broken,
                metadata={
                    "rows_in": rows_in,
                    "kept": sum(kept.values()),
                    "quarantined": sum(quarantined.values()),
                    "days_not_conserved": dg.MetadataValue.text(", ".join(broken) or "none"),
                },
            ),
            dg.AssetCheckResult(
                check_name="ids_unique_across_days",
                passed=across["ids"] == 0,
                metadata={
                    "ids_on_several_days": across["ids"],
                    "examples (id: days)": dg.MetadataValue.json(
                        {str(k): v for k, v in across["examples"].items()}),
                },
                description=across_note,
            ),
        ],
    )
    yield dg.MaterializeResult(
        asset_key="quarantined_transactions",
        metadata={
            "dagster/row_count": sum(quarantined.values()),
            "table_version": lake.table_version(tables.quarantine, tables.storage_options),
            "table_uri": dg.MetadataValue.path(tables.quarantine),
            "reasons": dg.MetadataValue.json(dict(reasons)),
            "preview": preview(bad_sample.to_pandas()) if bad_sample.num_rows
            else dg.MetadataValue.text("no rows quarantined"),
        },
    )
