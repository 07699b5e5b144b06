"""How tc's runs read in the MLflow UI, written onto the runs: names, Markdown descriptions and filterable tags.

The text comes from `tc.tracking.labels` (pure). A description that shows an analysis takes the analysis'
metrics as an argument (`tc.tracking.analyses.current_analysis_metrics` reads them): labels never read analyses.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import mlflow

from tc.config import TrainConfig
from tc.tracking import labels
from tc.tracking.client import client, get_run, load_train_config
from tc.tracking.secrets import mask_text


def name_run(run_id: str, name: str, *, force: bool = False) -> None:
    """Rename a run, but keep a name the user gave (`--run-name`): only MLflow's made-up names are replaced."""
    if force or labels.is_generated_name(get_run(run_id).info.run_name):
        client().set_tag(run_id, "mlflow.runName", name)


def describe_run(run_id: str, markdown: str) -> None:
    """The run's description in the UI (Markdown)."""
    client().set_tag(run_id, "mlflow.note.content", mask_text(markdown)[:5000])


def label_train_run(run_id: str, cfg: TrainConfig, unknown: Collection[str] = ()) -> None:
    """Name (`resnet20-w16 fashion-mnist seed0`), tags (tc.dataset, tc.model, ...) and a first description;
    `unknown`: the settings an own-loop run did not log (named as not logged, not as tc's defaults)."""
    name_run(run_id, labels.run_name(cfg, unknown))
    tags = labels.train_tags(cfg, unknown)
    client().log_batch(run_id, tags=[mlflow.entities.RunTag(k, v) for k, v in tags.items()])
    describe_run(run_id, labels.describe_train(cfg, get_run(run_id).data.metrics, unknown=unknown))


def describe_train_run(run_id: str, analysis: Mapping[str, float]) -> None:
    """Refresh a training run's description from its logged metrics and `analysis`, its current analysis'
    metrics ({} when it has none), with that analysis' settings (its `tc.analysis.<setting>` tags), after
    training and after each analysis."""
    unknown: list[str] = []
    cfg = load_train_config(run_id, unknown)
    run = get_run(run_id)
    settings = labels.score_settings(labels.settings_from_tags(run.data.tags))
    describe_run(run_id, labels.describe_train(cfg, run.data.metrics, analysis, settings, unknown))


def label_analysis(train_run_id: str, analyze_run_id: str | None, cfg: Any, analysis: Mapping[str, float]) -> None:
    """After an analysis: `tc.analysis.<setting>` tags on the training run (and the analyze run), the analyze
    run named `analyze <training run name>` with the headline numbers, the training run's description updated
    with `analysis` (the current analysis' metrics); both descriptions name the settings that change a score."""
    tags = [mlflow.entities.RunTag(k, v[:5000]) for k, v in labels.analysis_tags(cfg).items()]
    client().log_batch(train_run_id, tags=tags)
    describe_train_run(train_run_id, analysis)
    if analyze_run_id and analyze_run_id != train_run_id:
        source = get_run(train_run_id)
        client().log_batch(analyze_run_id, tags=tags)
        name_run(analyze_run_id, labels.analyze_name(source.info.run_name))
        link = f"#/experiments/{source.info.experiment_id}/runs/{train_run_id}"
        settings = labels.analysis_settings(cfg)
        describe_run(
            analyze_run_id, labels.describe_analysis(source.info.run_name, link, source.data.metrics, settings)
        )
