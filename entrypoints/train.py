"""Train a model and log every checkpoint to MLflow.

    mlflow run . --env-manager local -e train -P dataset=fashion-mnist -P model=resnet20 -P epochs=5 \
        -P train_size=5000

Logs: every parameter, `config.json`, per-epoch `train_loss, train_acc, epoch, lr`, `test_loss, test_acc` (every
`test_every` epochs and at the last) and `train_seconds` (active training time so far, without the downtime of
a resume; MLflow step = global optimizer step), `checkpoints/step_XXXXXXXX.pt` from step 0 to the last step,
`checkpoints/index.json` (step, epoch, file, sha256) and `resume/state.pt` (deleted once the run finishes),
and the tags `tc.writer` / `tc.writer_heartbeat` (who trains the run: resuming a run with a live writer is refused).

Resume a killed run (its own config is used, but for data_dir and download: where the data is on this machine is
yours to say, never a run's; other parameters are ignored):

    mlflow run . --env-manager local -e train -P resume_run_id=<run id>

The resumed run equals an uninterrupted one bit for bit (the resume state holds the random-number streams);
when its state cannot promise that (written by an older tc, or another kind of device), it says why in the
tag `tc.resume_not_exact`. The job is `tc.tracking.jobs.train_job` (the sweep's trials and the report train
through it too).

A refused command (a bad parameter, a run it cannot resume, a data set it cannot find) exits 2 and leaves one
FAILED run named `refused: <reason>`, the whole message in its tag `tc.error`; a training that diverges exits 1
and its run keeps its name (`tc.tracking.refusals`).
"""

from __future__ import annotations

import sys

from tc.config import TrainConfig, build_parser, from_strings, unquote
from tc.tracking import refusals
from tc.tracking.access import exit_on_refusal
from tc.tracking.client import use_default_experiment
from tc.tracking.jobs import TRAIN_REFUSALS, train_job


def parse(argv: list[str] | None) -> tuple[TrainConfig, str | None]:
    parser = build_parser(TrainConfig, description=__doc__.splitlines()[0])
    parser.add_argument("--resume_run_id", default="none", help="continue this killed or failed run")
    ns = vars(parser.parse_args(argv))
    resume = unquote(ns.pop("resume_run_id"))
    return from_strings(TrainConfig, ns), (None if resume.lower() in ("", "none") else resume)


@exit_on_refusal("tc train")  # the server's 401/403: one line, exit 1 (tc.tracking.access)
def main(argv: list[str] | None = None) -> int:
    try:
        cfg, resume_id = parse(argv)
    except ValueError as e:  # one FAILED run named `refused: ...`, exit 2 (tc.tracking.refusals)
        return refusals.refuse("train", e)
    use_default_experiment()
    try:  # the run `mlflow run` made (MLFLOW_RUN_ID), or a new one; on resume, a user model's code still
        # comes only from this command line
        run_id = train_job(cfg, resume_run_id=resume_id, command_line_model=cfg.model)
    except TRAIN_REFUSALS as e:  # the job tagged tc.error, named a refusal's run, and ended its runs FAILED
        print(f"tc train: {refusals.error_text(e, TRAIN_REFUSALS)}", file=sys.stderr)  # as its tag: masked
        return refusals.exit_code(e)  # 2 refused, 1 failed (training diverged)
    print(f"tc train: done; run {run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
