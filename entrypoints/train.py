"""Train a model and log every checkpoint to MLflow.

    mlflow run . --env-manager local -e train -P dataset=fashion-mnist -P model=resnet20 -P epochs=5 \
        -P train_size=5000

Logs: every parameter, `config.json`, per-epoch `train_loss, train_acc, test_loss, test_acc, epoch, lr` and
`train_seconds` (active training time so far, without the downtime of a resume; MLflow step = global
optimizer step), `checkpoints/step_XXXXXXXX.pt` from step 0 to the last step,
`checkpoints/index.json` (step, epoch, file, sha256) and `resume/state.pt` (deleted once the run finishes),
and the tags `tc.writer` / `tc.writer_heartbeat` (who trains the run: resuming a run with a live writer is refused).

Resume a killed run (its own config is used, but for data_dir and download: where the data is on this machine is
yours to say, never a run's; other parameters are ignored):

    mlflow run . --env-manager local -e train -P resume_run_id=<run id>

The resumed run equals an uninterrupted one bit for bit (the resume state holds the random-number streams);
when its state cannot promise that (written by an older tc, or another kind of device), it says why in the
tag `tc.resume_not_exact`.
"""

from __future__ import annotations

import sys
from dataclasses import replace

import mlflow

from tc import tracking
from tc.config import TrainConfig, build_parser, from_strings, unquote
from tc.core.data import DatasetNotFoundError
from tc.core.models import factory_for
from tc.core.train import TrainingFailure
from tc.tracking.jobs import train_into_run


def parse(argv: list[str] | None) -> tuple[TrainConfig, str | None]:
    parser = build_parser(TrainConfig, description=__doc__.splitlines()[0])
    parser.add_argument("--resume_run_id", default="none", help="continue this killed or failed run")
    ns = vars(parser.parse_args(argv))
    resume = unquote(ns.pop("resume_run_id"))
    return from_strings(TrainConfig, ns), (None if resume.lower() in ("", "none") else resume)


def main(argv: list[str] | None = None) -> int:
    try:
        cfg, resume_id = parse(argv)
        command_line_model = cfg.model  # on resume, a user model's code still comes only from here
    except ValueError as e:
        print(f"tc train: {e}", file=sys.stderr)
        return 2
    tracking.use_default_experiment()
    with mlflow.start_run() as run:  # the run `mlflow run` made (MLFLOW_RUN_ID), or a new one
        target = run.info.run_id  # stays this run until every check on the run to resume has passed
        resume_state = None
        try:
            if resume_id:
                # Refusals below touch only this run, never the one they refuse.
                resumed = tracking.get_run(resume_id)
                if resumed.info.status == "FINISHED":
                    raise ValueError(f"run {resume_id} already FINISHED: nothing to resume")
                if why := tracking.live_writer(resumed):
                    raise ValueError(f"run {resume_id} is RUNNING and has a live writer ({why}): not resuming it")
                cfg = replace(tracking.load_train_config(resume_id), data_dir=cfg.data_dir, download=cfg.download)
                resume_state = tracking.load_resume_state(resume_id)
                target = resume_id
                # `mlflow run` logged this command's params; only data_dir and download were used.
                mlflow.set_tags(
                    {
                        "tc.resumed_run_id": resume_id,
                        "mlflow.note.content": f"Resumes training run {resume_id}, with that run's own config "
                        f"({cfg.dataset}, {cfg.model}, {cfg.epochs} epochs; see its params), except data_dir and "
                        "download (where the data is on this machine), which are this run's. This run's other "
                        "params are ignored.",
                    }
                )
                tracking.client().update_run(resume_id, status="RUNNING")
            else:
                tracking.log_config(target, cfg)
                tracking.label_train_run(target, cfg)
            train_into_run(target, cfg, resume_state, factory=factory_for(cfg.model, command_line_model))
        except (ValueError, LookupError, DatasetNotFoundError, TrainingFailure) as e:
            print(f"tc train: {e}", file=sys.stderr)
            for run_id in {target, run.info.run_id}:
                tracking.client().set_tag(run_id, "tc.error", str(e)[:5000])
            if target != run.info.run_id and resume_id and tracking.get_run(target).info.status == "RUNNING":
                tracking.client().set_terminated(target, "FAILED")
            mlflow.end_run("FAILED")
            return 1
        tracking.describe_train_run(target)
        if target != run.info.run_id:
            tracking.client().set_terminated(target, "FINISHED")
        print(f"tc train: done; run {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
