"""training_set and model: a matured-label window, a LightGBM model exported to ONNX, and
its registration (the first model in an empty registry becomes champion; later ones wait
for a retrain's gate)."""


import base64
import io
import json

import dagster as dg
import pandas as pd
import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, write_deltalake
from pydantic import Field

from assets.common import SETTINGS, TRAINING_POOL, md_table, preview
from assets.features import transaction_features
from assets.ingest import RAW_TRANSACTIONS
from fraudkit import lake
from fraudkit.batch import chunk_days_by_rows
from fraudkit.features import FEATURE_COLUMNS, lookback_days
from fraudkit.training import (
    Candidate,
    TrainingParams,
    fit_candidate,
    importance_png,
    importance_table,
    precision_recall_png,
    sample_mask,
)
from resources import DeltaLakeResource, ModelRegistryResource

#: Commit metadata of a training_set version: the source tables' versions (JSON), and the
#: share of the window's rows it holds.
SOURCES_KEY = "source_table_versions"
SAMPLE_KEY = "sample_rate"
#: Rows of a training window (train and test days) read whole; above, a uniform sample of
#: this many (:func:`load_labelled`). The demo's window holds 1.01 M rows, read whole; at 10x
#: the data the train step's memory then stays flat (benchmarks/scale.py, README).
MAX_TRAINING_ROWS = 1_100_000
#: Rows read from the tables at a time while sampling a window.
READ_ROWS = 2_000_000


class TrainingWindowConfig(dg.Config):
    """Which days train and which test. Labels are only known ``label_delay_days`` after a
    transaction, so everything ends at ``as_of - delay``; a gap of the same length between
    train and test keeps the test period's labels out of the training features' era."""

    train_days: int = 90
    test_days: int = 14
    as_of: str | None = None  # default: the last day that has features
    warmup_days: int = lookback_days(SETTINGS.label_delay_days)  # skip incomplete look-backs
    max_rows: int = Field(MAX_TRAINING_ROWS, gt=0,
                          description="Rows of the window (train and test days) used whole; "
                                      "above, a uniform sample of this many, the same rate "
                                      "for both splits.")


def training_windows(first_day: str, last_day: str, cfg: TrainingWindowConfig,
                     delay: int) -> tuple[list[str], list[str]]:
    """(train_days, test_days) for data spanning ``first_day..last_day``."""
    as_of = cfg.as_of or last_day
    matured_end = lake.shift_day(as_of, -delay)
    test_start = lake.shift_day(matured_end, -(cfg.test_days - 1))
    train_end = lake.shift_day(test_start, -(delay + 1))
    train_start = max(lake.shift_day(train_end, -(cfg.train_days - 1)),
                      lake.shift_day(first_day, cfg.warmup_days))
    if train_start > train_end or test_start < first_day:
        raise dg.Failure(
            f"not enough matured data: features span {first_day}..{last_day}, label delay "
            f"{delay} days, asked for {cfg.train_days} train + {cfg.test_days} test days "
            f"after {cfg.warmup_days} warm-up days; materialize more days or shrink the window"
        )
    return lake.day_range(train_start, train_end), lake.day_range(test_start, matured_end)


def load_labelled(delta: DeltaLakeResource, train_days: list[str], test_days: list[str],
                  max_rows: int = MAX_TRAINING_ROWS) -> tuple[pd.DataFrame, dict]:
    """Features of the days joined with their labels, each row's ``split`` (``train`` or
    ``test``) set by its day; returns the frame and the table versions read. The training
    set and the retrain job both label rows here.

    Above ``max_rows`` rows in the window, both splits are a uniform sample of the same rate
    (:func:`sample_mask`; ``frame.attrs["sample_rate"]``), so that the step's memory stays
    flat as the data grows: read a few days at a time, sampled as read. The rate keeps the
    class balance and the per-day structure, so the metrics, the thresholds and the drift
    reference mean what they meant on the whole window."""
    days = train_days + test_days
    tables = delta.tables()
    feats_version = lake.table_version(tables.features, tables.storage_options)
    raw_version = lake.table_version(tables.raw, tables.storage_options)
    counts = lake.rows_per_day(tables.features, days, feats_version, tables.storage_options)
    rate = min(1.0, max_rows / max(1, sum(counts.values())))
    parts = []
    for chunk in chunk_days_by_rows(sorted(days), counts, len(days), READ_ROWS):
        feats = lake.read_days(tables.features, chunk, None, feats_version,
                               tables.storage_options).to_pandas()
        feats = feats[sample_mask(feats["transaction_id"].to_numpy(), rate)]
        labels = lake.read_days(tables.raw, chunk, ["transaction_id", "tx_fraud", "day"],
                                raw_version, tables.storage_options).to_pandas()
        # By day too: ids are unique within a day by the raw contract's validation (and
        # across days by raw_transactions' blocking check).
        parts.append(feats.merge(labels, on=["transaction_id", "day"], how="inner",
                                 validate="one_to_one"))
    frame = pd.concat(parts, ignore_index=True)
    frame["split"] = frame["day"].isin(test_days).map({True: "test", False: "train"})
    frame.attrs["sample_rate"] = rate
    return frame, {"transaction_features": feats_version, "raw_transactions": raw_version}


@dg.asset(
    deps=[transaction_features, RAW_TRANSACTIONS],
    group_name="training",
    kinds={"deltalake"},
    description="Feature rows with matured labels, split into a train window and a later, "
    "held-out test window.",
)
def training_set(
    context: dg.AssetExecutionContext, config: TrainingWindowConfig, delta: DeltaLakeResource
) -> dg.MaterializeResult:
    tables = delta.tables()
    if lake.table_version(tables.features, tables.storage_options) is None:
        raise dg.Failure(f"no transaction_features table at {tables.features}")
    present = lake.partition_values(tables.features, tables.storage_options)
    train_days, test_days = training_windows(present[0], present[-1], config,
                                             SETTINGS.label_delay_days)
    frame, versions = load_labelled(delta, train_days, test_days, config.max_rows)
    if frame.attrs["sample_rate"] < 1.0:
        context.log.info(f"the window holds more than {config.max_rows:,} rows: a uniform "
                         f"sample of {frame.attrs['sample_rate']:.1%} of them")
    uri = delta.uri("training_set")
    # The source versions travel in the commit, so the model's manifest can name them.
    write_deltalake(uri, pa.Table.from_pandas(frame, preserve_index=False), mode="overwrite",
                    schema_mode="overwrite", storage_options=tables.storage_options,
                    commit_properties=CommitProperties(
                        custom_metadata={SOURCES_KEY: json.dumps(versions),
                                         SAMPLE_KEY: json.dumps(frame.attrs["sample_rate"])}))
    summary = frame.groupby("split")["tx_fraud"].agg(["size", "sum", "mean"]).round(5)
    context.log.info(f"training set: {summary.to_dict()}")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(frame),
            "sample_rate": dg.MetadataValue.float(frame.attrs["sample_rate"]),
            "train_days": dg.MetadataValue.text(f"{train_days[0]} .. {train_days[-1]}"),
            "test_days": dg.MetadataValue.text(f"{test_days[0]} .. {test_days[-1]}"),
            "splits": dg.MetadataValue.md(summary.to_markdown()),
            "source_table_versions": dg.MetadataValue.json(versions),
            "table_version": DeltaTable(uri, storage_options=tables.storage_options).version(),
            "table_uri": dg.MetadataValue.path(uri),
        }
    )


_PARAMS = TrainingParams()


class HyperparamsConfig(dg.Config):
    """LightGBM's main knobs and where the decision thresholds go, editable in the
    launchpad; the defaults are :class:`fraudkit.training.TrainingParams`'s."""

    n_estimators: int = Field(_PARAMS.n_estimators, gt=0, description="Boosting rounds.")
    learning_rate: float = Field(_PARAMS.learning_rate, gt=0,
                                 description="Shrinkage of each round.")
    num_leaves: int = Field(_PARAMS.num_leaves, ge=2, description="Leaves per tree.")
    decline_precision: float = Field(
        _PARAMS.decline_precision, gt=0, le=1,
        description="Decline where precision on the held-out days reaches this.")
    review_rate: float = Field(
        _PARAMS.review_rate, ge=0, lt=1,
        description="Share of all traffic sent to review: the most suspicious below the "
                    "declines.")

    validation_days: int = Field(
        _PARAMS.validation_days, ge=0,
        description="The last train days held out in time order for early stopping (up to "
                    "n_estimators rounds) and the class weighting; 0: off. "
                    "benchmarks/model_selection.py measured it (README).")
    class_weights: list[str] = Field(
        list(_PARAMS.class_weights),
        description="Class weightings tried on the validation days: none, balanced.")

    def params(self) -> TrainingParams:
        return TrainingParams(n_estimators=self.n_estimators, learning_rate=self.learning_rate,
                              num_leaves=self.num_leaves,
                              decline_precision=self.decline_precision,
                              review_rate=self.review_rate,
                              validation_days=self.validation_days,
                              class_weights=tuple(self.class_weights))


class ModelConfig(HyperparamsConfig):
    """Run config of the ``model`` asset."""


def read_training_set(delta: DeltaLakeResource) -> tuple[pd.DataFrame, int, dict]:
    """The training set, its Delta version and the source table versions it was built from."""
    table = DeltaTable(delta.uri("training_set"), storage_options=delta.storage_options)
    version = table.version()
    commit = next((c for c in table.history(10) if c.get("version") == version), {})
    frame = lake.dataset(delta.uri("training_set"), version=version,
                         storage_options=delta.storage_options).to_table().to_pandas()
    frame.attrs["sample_rate"] = json.loads(commit.get(SAMPLE_KEY, "1.0"))
    return frame, version, json.loads(commit.get(SOURCES_KEY, "{}"))


def training_data_summary(frame: pd.DataFrame, sources: dict,
                          training_set_version: int | None = None) -> dict:
    """The manifest's ``training_data``: the Delta table versions the rows were read from
    and the date ranges, the same for a first model and a retrained one."""
    train = frame[frame["split"] == "train"]["day"]
    test = frame[frame["split"] == "test"]["day"]
    return {
        "source_table_versions": sources,
        **({"training_set_version": training_set_version}
           if training_set_version is not None else {}),
        "train_range": [train.min(), train.max()],
        "test_range": [test.min(), test.max()],
        "rows": {"train": int(len(train)), "test": int(len(test))},
        "sample_rate": float(frame.attrs.get("sample_rate", 1.0)),
    }


def candidate_metadata(candidate: Candidate, frame: pd.DataFrame, title: str) -> dict:
    test = frame[frame["split"] == "test"]
    png = precision_recall_png(test["tx_fraud"].to_numpy(), candidate.test_scores, title)
    image = base64.b64encode(png).decode()
    return {
        "auc_roc": round(candidate.metrics["auc_roc"], 4),
        "average_precision": round(candidate.metrics["average_precision"], 4),
        "card_precision_at_100": round(candidate.metrics["card_precision_at_100"], 4),
        "onnx_max_abs_diff": float(candidate.onnx_max_abs_diff),
        "thresholds": dg.MetadataValue.json(candidate.thresholds.as_dict()),
        "precision_recall": dg.MetadataValue.md(f"![precision-recall](data:image/png;base64,"
                                                f"{image})"),
        **explanation_metadata(candidate.explanations, title),
    }


def explanation_metadata(explanations: dict, title: str) -> dict:
    """The model's global explanations as the UI shows them: the table and a bar chart."""
    if not explanations:
        return {}
    image = base64.b64encode(importance_png(explanations, title.replace("PR", "mean |SHAP|"))
                             ).decode()
    return {
        "feature_importance": md_table(importance_table(explanations)),
        "importance_plot": dg.MetadataValue.md(
            f"![mean |SHAP|](data:image/png;base64,{image})"),
        "shap_additivity_max_abs_diff": explanations["additivity_max_abs_diff"],
    }


def reference_bytes(candidate: Candidate) -> bytes:
    buf = io.BytesIO()
    candidate.reference.to_parquet(buf, index=False)
    return buf.getvalue()


@dg.asset(
    deps=[training_set],
    group_name="training",
    kinds={"lightgbm", "onnx"},
    pool=TRAINING_POOL,
    description="A LightGBM model exported to ONNX, checked against onnxruntime, measured on "
    "the held-out window and registered; the first one in an empty registry becomes champion.",
)
def model(
    context: dg.AssetExecutionContext, config: ModelConfig, delta: DeltaLakeResource,
    registry: ModelRegistryResource,
) -> dg.MaterializeResult:
    frame, version, sources = read_training_set(delta)
    params = config.params()
    candidate = fit_candidate(frame, params)
    context.log.info(f"metrics on the held-out window: {json.dumps(candidate.metrics)}; "
                     f"onnx vs native max |diff| {candidate.onnx_max_abs_diff:.2e}")
    reg = registry.registry()
    # "First model" means an empty registry. Otherwise the champion must be known
    # (champion.json, else the event log): the new version is kept but not promoted (a
    # retrain's gate decides), and an unknown champion stops here, before registering.
    first = not reg.versions()
    if not first:
        reg.champion()  # RegistryError naming the broken or missing record and the fix
    registered = reg.register(
        candidate.onnx_bytes,
        training_data=training_data_summary(frame, sources, version),
        metrics={**candidate.metrics, "onnx_max_abs_diff": candidate.onnx_max_abs_diff},
        thresholds=candidate.thresholds,
        extra_files={"reference.parquet": reference_bytes(candidate)},
        notes={"params": params.__dict__, "feature_columns": list(FEATURE_COLUMNS),
               **({"selection": candidate.selection} if candidate.selection else {})},
        explanations=candidate.explanations,
    )
    if first:
        reg.promote(registered.version, reason="first model")
    champion = reg.champion().version
    return dg.MaterializeResult(
        metadata={
            "model_version": registered.version,
            "champion": champion,
            "registry_path": dg.MetadataValue.path(
                str(reg.location(f"versions/{registered.version}"))),
            "sha256": registered.manifest["sha256"],
            "training_rows": int((frame["split"] == "train").sum()),
            **candidate_metadata(candidate, frame, f"{registered.version} held-out PR"),
            "test_preview": preview(frame[frame["split"] == "test"][list(FEATURE_COLUMNS)]),
        }
    )
