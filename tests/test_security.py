"""Issue 19 item 0: a run's artifacts and tags are data, never paths.

The threat: anyone who can log a run to a shared tracking server. Whatever names that run's index, tags or
config hold, analyzing it must not write, read or delete anything outside tc's cache, and a refused run gets
one message naming the bad entry with nothing written. Every test logs a hostile run with `MlflowClient`
into a real sqlite store (`mlflow_store`) and a file-based artifact store."""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from entrypoints import analyze as analyze_ep
from tc.config import AnalyzeConfig, TrainConfig
from tc.core import checkpoints as ck
from tc.tracking import analyses, cache, checkpoints, jobs, writers
from tc.tracking import client as tc_client

ORIGINAL = "the victim's own content\n"


@pytest.fixture
def cache_root(tmp_path, monkeypatch) -> Path:
    """A private tc cache for the test; its checkpoint root (which need not exist yet)."""
    monkeypatch.setenv("TC_CACHE_DIR", str(tmp_path / "tc-cache"))
    return tmp_path / "tc-cache" / "checkpoints"


@pytest.fixture
def victim(tmp_path) -> Path:
    """A file of the user's, outside tc's cache, that a hostile run would like to overwrite."""
    path = tmp_path / "home" / "victim.txt"
    path.parent.mkdir()
    path.write_text(ORIGINAL)
    return path


def _files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if not p.is_dir()] if root.exists() else []


def _sd() -> dict[str, torch.Tensor]:
    return {"w": torch.arange(6.0).view(2, 3)}


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _hostile_run(tmp_path: Path, entries, uploads: dict[str, Path] = (), config: bool = False) -> str:
    """A FINISHED run whose `checkpoints/index.json` holds `entries` (a list, or a function of the run id);
    real checkpoints at steps 0 and 1 are uploaded for entries that name those files, and `uploads` (artifact
    dir -> local file) beside them. With `config`, a tiny valid `config.json`: analyze gets to the download."""
    c = MlflowClient()
    run_id = c.create_run("0").info.run_id
    stage = tmp_path / f"stage-{run_id}"
    stage.mkdir()
    for step in (0, 1):
        ck.save_checkpoint(stage, step, float(step), {"model": "x"}, _sd())
        c.log_artifact(run_id, str(stage / ck.filename(step)), ck.ARTIFACT_DIR)
    for where, local in dict(uploads).items():
        c.log_artifact(run_id, str(local), where)
    entries = entries(run_id) if callable(entries) else entries
    (stage / ck.INDEX_FILE).write_text(json.dumps({"format": ck.FORMAT, "checkpoints": entries}))
    c.log_artifact(run_id, str(stage / ck.INDEX_FILE), ck.ARTIFACT_DIR)
    if config:
        cfg = TrainConfig(dataset="digits", model="mlp", width=16, epochs=1, batch_size=256, train_size=600)
        c.log_dict(run_id, asdict(cfg), tc_client.CONFIG_FILE)
    c.set_terminated(run_id, "FINISHED")
    return run_id


def _good_entry(tmp_path: Path, step: int) -> dict:
    path = tmp_path / f"good-{step}"
    path.mkdir(exist_ok=True)
    entry = ck.save_checkpoint(path, step, float(step), {"model": "x"}, _sd())
    return asdict(entry)


def _payload(tmp_path: Path, name: str) -> tuple[Path, str]:
    path = tmp_path / "payload" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text("ssh-ed25519 AAAA attacker\n")
    return path, _sha(path.read_bytes())


# ---- names in the index --------------------------------------------------------------------------------


def test_an_absolute_name_in_the_index_writes_nothing_outside_the_cache(
    mlflow_store, tmp_path, cache_root, victim, downloads
):
    """The attack as reported: the index names an absolute path, the payload sits under checkpoints/<that
    path's dir>; today the payload replaces the victim file."""
    payload, sha = _payload(tmp_path, victim.name)
    entries = [_good_entry(tmp_path, 0), {"step": 1, "epoch": 1.0, "file": str(victim), "sha256": sha}]
    run_id = _hostile_run(tmp_path, entries, {f"{ck.ARTIFACT_DIR}{victim.parent}": payload})
    with pytest.raises(ck.CheckpointError) as err:
        checkpoints.download_checkpoints(run_id, cache_root)
    assert victim.read_text() == ORIGINAL
    message = str(err.value)
    assert repr(str(victim)) in message and "entry 1" in message and "step_00000001.pt" in message
    assert downloads == [f"{ck.ARTIFACT_DIR}/{ck.INDEX_FILE}"]  # the whole index is checked before any download
    assert _files_under(cache_root) == []


def test_dotdot_names_neither_read_nor_write_outside_the_cache(mlflow_store, tmp_path, cache_root, victim, downloads):
    """`..` segments: today a file outside the cache whose hash the attacker knows is taken as a checkpoint."""
    sha = _sha(victim.read_bytes())
    good = _good_entry(tmp_path, 0)

    def entries(run_id):  # from the run's cache dir up to the victim
        return [good, {"step": 1, "epoch": 1.0, "file": os.path.relpath(victim, cache_root / run_id), "sha256": sha}]

    run_id = _hostile_run(tmp_path, entries)
    with pytest.raises(ck.CheckpointError, match=r"entry 1 names the file '\.\./"):
        checkpoints.download_checkpoints(run_id, cache_root)
    assert victim.read_text() == ORIGINAL
    assert downloads == [f"{ck.ARTIFACT_DIR}/{ck.INDEX_FILE}"]


@pytest.mark.parametrize(
    "name",
    [
        "sub/step_00000001.pt",  # a separator
        "..\\..\\step_00000001.pt",  # a Windows separator
        "step_00000001.pt/",
        "./step_00000001.pt",
        "step_00000002.pt",  # a valid name, but of another step
        "step_1.pt",  # not the rule's spelling of step 1
        "step_000000001.pt",
        "step_0000000１.pt",  # a non-ASCII digit
        "",
        ".",
        "step_00000001.pt\x00",
    ],
)
def test_every_name_that_is_not_the_rules_is_refused_before_any_download(
    mlflow_store, tmp_path, cache_root, downloads, name
):
    entries = [_good_entry(tmp_path, 0), {**_good_entry(tmp_path, 1), "file": name}]
    run_id = _hostile_run(tmp_path, entries)
    with pytest.raises(ck.CheckpointError) as err:
        checkpoints.download_checkpoints(run_id, cache_root)
    message = str(err.value)
    assert f"run {run_id}: checkpoints/index.json entry 1 names the file {name!r}" in message
    assert "step_00000001.pt" in message and "nothing was downloaded" in message
    assert downloads == [f"{ck.ARTIFACT_DIR}/{ck.INDEX_FILE}"]
    assert _files_under(cache_root) == []


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("step", -1, "step"),
        ("step", "1", "step"),
        ("step", True, "step"),
        ("step", 1.0, "step"),
        ("sha256", "../x", "sha256"),
        ("sha256", 7, "sha256"),
        ("epoch", "1", "epoch"),
        ("epoch", float("nan"), "epoch"),
    ],
)
def test_entries_with_odd_types_are_refused_naming_the_field(tmp_path, field, value, why):
    entries = [_good_entry(tmp_path, 0), {**_good_entry(tmp_path, 1), field: value}]
    (tmp_path / ck.INDEX_FILE).write_text(json.dumps({"format": ck.FORMAT, "checkpoints": entries}))
    with pytest.raises(ck.CheckpointError, match=rf"entry 1 .*{why}"):
        ck.read_index(tmp_path / ck.INDEX_FILE)


def test_unknown_extra_index_keys_are_ignored_and_never_become_paths(mlflow_store, tmp_path, cache_root, victim):
    """A newer tc (or another tool) may add fields: they are dropped, and a missing field is still refused."""
    extra = {"note": "hello", "path": str(victim), "file_v2": "../../x"}
    entries = [{**_good_entry(tmp_path, 0), **extra}, _good_entry(tmp_path, 1)]
    run_id = _hostile_run(tmp_path, entries)
    files = checkpoints.download_checkpoints(run_id, cache_root)
    assert [e for e, _ in files] == [ck.IndexEntry(**_good_entry(tmp_path, s)) for s in (0, 1)]
    assert victim.read_text() == ORIGINAL
    missing = {k: v for k, v in _good_entry(tmp_path, 1).items() if k != "sha256"}
    (tmp_path / ck.INDEX_FILE).write_text(json.dumps({"format": ck.FORMAT, "checkpoints": [missing]}))
    with pytest.raises(ck.CheckpointError, match=r"entry 0 .*lacks the field.*sha256"):
        ck.read_index(tmp_path / ck.INDEX_FILE)


def test_the_refusal_says_a_step_has_at_least_8_digits(tmp_path):
    entries = [{**_good_entry(tmp_path, 1), "file": "x.pt"}]
    (tmp_path / ck.INDEX_FILE).write_text(json.dumps({"format": ck.FORMAT, "checkpoints": entries}))
    with pytest.raises(ck.CheckpointError, match=r"at least 8 digits"):
        ck.read_index(tmp_path / ck.INDEX_FILE)


def test_two_entries_for_one_step_are_refused(tmp_path):
    entries = [_good_entry(tmp_path, 0), _good_entry(tmp_path, 1), _good_entry(tmp_path, 1)]
    (tmp_path / ck.INDEX_FILE).write_text(json.dumps({"format": ck.FORMAT, "checkpoints": entries}))
    with pytest.raises(ck.CheckpointError, match=r"entry 2 .*step 1 .*twice"):
        ck.read_index(tmp_path / ck.INDEX_FILE)


def test_the_filename_rule_names_only_steps():
    assert [ck.filename(s) for s in (0, 7, 123456789)] == ["step_00000000.pt", "step_00000007.pt", "step_123456789.pt"]
    for bad in (-1, True, 1.0, "3", None):
        with pytest.raises(ValueError, match="an integer >= 0"):
            ck.filename(bad)


def test_a_checkpoint_whose_own_step_is_not_its_index_step_is_refused(tmp_path):
    """The index says step 7 (and the file's name agrees), but the file holds step 5's payload: the steps an
    analysis reports would be the payload's, the selection the index's."""
    a = ck.save_checkpoint(tmp_path, 0, 0.0, {"model": "x"}, _sd())
    b = ck.save_checkpoint(tmp_path, 5, 1.0, {"model": "x"}, _sd())
    (tmp_path / b.file).rename(tmp_path / ck.filename(7))
    lying = ck.IndexEntry(7, 1.0, ck.filename(7), b.sha256)
    with pytest.raises(ck.CheckpointError, match=r"step_00000007\.pt.* holds step 5"):
        ck.load_series([(a, tmp_path / a.file), (lying, tmp_path / lying.file)])


def test_an_index_that_is_a_directory_is_refused_in_one_message(mlflow_store, tmp_path, cache_root):
    (tmp_path / "not-an-index").write_text("x")
    c = MlflowClient()
    run_id = c.create_run("0").info.run_id
    c.log_artifact(run_id, str(tmp_path / "not-an-index"), f"{ck.ARTIFACT_DIR}/{ck.INDEX_FILE}")
    with pytest.raises(ck.CheckpointError, match=rf"run {run_id}: checkpoints/index\.json is a directory"):
        checkpoints.download_checkpoints(run_id, cache_root)
    with pytest.raises(ck.CheckpointError, match="is a directory"):
        ck.read_index(tmp_path)


def test_a_checkpoint_that_is_a_directory_is_refused_in_one_message(mlflow_store, tmp_path, cache_root):
    junk = tmp_path / "junk"
    junk.write_text("x")
    entries = [_good_entry(tmp_path, 0), _good_entry(tmp_path, 1), {**_good_entry(tmp_path, 2)}]
    run_id = _hostile_run(tmp_path, entries, {f"{ck.ARTIFACT_DIR}/{ck.filename(2)}": junk})
    with pytest.raises(ck.CheckpointError, match=rf"run {run_id}: checkpoints/step_00000002\.pt is a directory"):
        checkpoints.download_checkpoints(run_id, cache_root)
    assert sorted(p.name for p in _files_under(cache_root / run_id)) == [ck.filename(0), ck.filename(1)]


# ---- symlinks in the cache -----------------------------------------------------------------------------


def _honest_run(tmp_path: Path) -> str:
    return _hostile_run(tmp_path, [_good_entry(tmp_path, 0), _good_entry(tmp_path, 1)])


def test_a_symlinked_run_dir_in_the_cache_is_not_written_through(mlflow_store, tmp_path, cache_root):
    run_id = _honest_run(tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    cache_root.mkdir(parents=True)
    (cache_root / run_id).symlink_to(outside, target_is_directory=True)
    with pytest.raises(ValueError, match=rf"{run_id}.* symbolic link"):
        checkpoints.download_checkpoints(run_id, cache_root)
    assert list(outside.iterdir()) == []


def test_a_symlinked_checkpoint_in_the_cache_is_neither_read_nor_written_through(
    mlflow_store, tmp_path, cache_root, victim
):
    run_id = _honest_run(tmp_path)
    run_dir = cache_root / run_id
    run_dir.mkdir(parents=True)
    # one link to the victim, one to a file outside with the right content (a "valid" cache hit through a link)
    (run_dir / ck.filename(0)).symlink_to(victim)
    copy = tmp_path / "outside-copy.pt"
    copy.write_bytes((tmp_path / "good-1" / ck.filename(1)).read_bytes())
    (run_dir / ck.filename(1)).symlink_to(copy)
    files = checkpoints.download_checkpoints(run_id, cache_root)
    assert victim.read_text() == ORIGINAL
    for entry, path in files:
        assert path.parent == run_dir and not path.is_symlink() and ck.sha256(path) == entry.sha256


def _swap_in_link(directory: Path, to: Path) -> None:
    """What an attacker with write access to the cache would do between tc's check and its write."""
    directory.rename(directory.with_name(directory.name + ".moved"))
    directory.symlink_to(to, target_is_directory=True)


def test_move_into_does_not_follow_a_link_swapped_in_after_the_check(tmp_path, monkeypatch):
    """The race: the directory was checked (here: the check is made to see the directory as it was), then a
    link is swapped in before the rename. The rename must not follow it (O_NOFOLLOW on a dir fd)."""
    directory, outside = tmp_path / "run", tmp_path / "outside"
    directory.mkdir()
    outside.mkdir()
    src = tmp_path / "staged"
    src.write_bytes(b"checkpoint")
    _swap_in_link(directory, outside)
    real_is_symlink = Path.is_symlink
    monkeypatch.setattr(Path, "is_symlink", lambda self: False if self == directory else real_is_symlink(self))
    with pytest.raises(cache.CacheError, match="not a real directory"):
        cache.move_into(src, directory, ck.filename(0))
    assert list(outside.iterdir()) == [] and src.read_bytes() == b"checkpoint"


def test_a_run_dir_swapped_for_a_link_after_run_dir_is_refused_with_nothing_left_outside(
    mlflow_store, tmp_path, cache_root, monkeypatch
):
    run_id = _honest_run(tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    real_run_dir = cache.run_dir

    def racing_run_dir(root, rid):
        d = real_run_dir(root, rid)
        _swap_in_link(d, outside)
        return d

    monkeypatch.setattr(cache, "run_dir", racing_run_dir)
    with pytest.raises(cache.CacheError):
        checkpoints.download_checkpoints(run_id, cache_root)
    assert list(outside.iterdir()) == []


def test_a_fresh_cache_is_created_private(mlflow_store, tmp_path, cache_root):
    run_id = _honest_run(tmp_path)
    checkpoints.download_checkpoints(run_id, cache_root)
    for d in (cache_root.parent, cache_root, cache_root / run_id):
        assert d.stat().st_mode & 0o777 == 0o700, d


@pytest.mark.parametrize("mode", [0o775, 0o757, 0o1777])
@pytest.mark.parametrize("which", ["cache", "checkpoints"])
def test_a_cache_others_can_write_is_refused_before_anything_is_written(
    mlflow_store, tmp_path, cache_root, downloads, mode, which
):
    """Anyone who can write in the cache can swap a link in after any check tc makes: tc refuses such a cache
    (and creates its own dirs 0o700), one message naming the dir and the fix."""
    run_id = _honest_run(tmp_path)
    cache_root.mkdir(parents=True, mode=0o700)
    cache_root.parent.chmod(0o700)
    shared = cache_root.parent if which == "cache" else cache_root
    shared.chmod(mode)
    with pytest.raises(cache.CacheError) as err:
        checkpoints.download_checkpoints(run_id, cache_root)
    message = str(err.value)
    assert str(shared) in message and "writable by group or others" in message and "chmod go-w" in message
    assert _files_under(cache_root) == [] and downloads == [f"{ck.ARTIFACT_DIR}/{ck.INDEX_FILE}"]


def test_a_cache_owned_by_another_user_is_refused(mlflow_store, tmp_path, cache_root, monkeypatch):
    run_id = _honest_run(tmp_path)
    cache_root.mkdir(parents=True, mode=0o700)
    cache_root.parent.chmod(0o700)
    me = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: me + 1)
    with pytest.raises(cache.CacheError, match=rf"{cache_root.parent}.* owned by uid {me}, not you .*TC_CACHE_DIR"):
        checkpoints.download_checkpoints(run_id, cache_root)
    assert _files_under(cache_root) == []


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../step_00000001.pt", "x.pt", "step_1.pt", "writer.json"])
def test_move_into_writes_only_checkpoint_names(tmp_path, name):
    directory = tmp_path / "run"
    directory.mkdir()
    src = tmp_path / "staged"
    src.write_bytes(b"checkpoint")
    with pytest.raises(cache.CacheError, match="not a checkpoint file name"):
        cache.move_into(src, directory, name)
    assert list(directory.iterdir()) == [] and src.is_file()


def test_names_read_from_a_run_follow_one_set_of_rules():
    """tc.core.names owns the rules; every name tc itself writes passes them, and hostile ones do not."""
    from tc.core import names

    assert all(names.is_checkpoint_file(ck.filename(s)) for s in (0, 7, 10**8, 10**18))
    assert all(names.is_run_id(r) for r in ("0123456789abcdef0123456789abcdef", "m-abc_1"))
    assert all(names.is_number(str(n)) for n in (0, 1, 10**9, analyses.MAX_VERSION))
    for bad in ("", "..", "a/b", "٣", "1e3", " 1", "-1", str(analyses.MAX_VERSION + 1), None, 3):
        assert not names.is_number(bad)
    for bad in ("step_1.pt", "step_0000000١.pt", "../step_00000001.pt", "step_00000001.pt/", None):
        assert not names.is_checkpoint_file(bad)
    for bad in ("../x", "/abs", "a/b", "..", ".", "", "a\\b", "x\x00", None, 1):
        assert not names.is_run_id(bad)


def test_prune_neither_follows_nor_counts_symlinks(tmp_path):
    root = tmp_path / "checkpoints"
    (root / "real").mkdir(parents=True)
    (root / "real" / ck.filename(0)).write_bytes(b"x" * 10)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "big").write_bytes(b"y" * 100_000)
    (root / "planted").symlink_to(outside, target_is_directory=True)
    assert cache.prune(root, max_bytes=1000) == []  # 10 bytes of real cache: nothing to delete
    assert cache.prune(root, max_bytes=1000, keep=("planted",)) == []  # a kept link is not counted either
    assert (outside / "big").is_file() and (root / "real" / ck.filename(0)).is_file()
    assert cache.dir_size(root) == 10


def test_a_checkpoints_dir_linked_to_a_bigger_disk_is_sized_pruned_and_used(
    mlflow_store, tmp_path, cache_root, monkeypatch, capsys
):
    """Links are refused only BELOW the cache's checkpoints dir: a user may link that dir itself elsewhere."""
    disk = tmp_path / "bigdisk"
    (disk / "old").mkdir(parents=True, mode=0o700)
    disk.chmod(0o700)
    with open(disk / "old" / ck.filename(0), "wb") as f:
        f.truncate(5_000_000)  # sparse: 5 MB as sized, nothing on disk
    cache_root.parent.mkdir(mode=0o700)
    cache_root.symlink_to(disk, target_is_directory=True)
    assert cache.dir_size(cache_root) == 5_000_000
    assert cache.main(["size"]) == 0 and capsys.readouterr().out == f"{cache_root}: 0.005 GB\n"
    run_id = _honest_run(tmp_path)
    files = checkpoints.download_checkpoints(run_id, cache_root)
    assert all((disk / run_id / p.name).is_file() for _, p in files)
    assert cache.dir_size(cache_root) == 5_000_000 + sum(p.stat().st_size for _, p in files)
    assert cache.prune(cache_root, max_bytes=1, keep=(run_id,)) == [cache_root / "old"]
    assert not (disk / "old").exists() and (disk / run_id).is_dir()


def test_run_ids_become_cache_dirs_only_when_they_are_plain_names(tmp_path):
    for bad in ("../x", "/abs", "a/b", "..", ".", "", "a\\b", "x\x00"):
        with pytest.raises(ValueError, match="run id"):
            cache.run_dir(tmp_path, bad)
    assert cache.run_dir(tmp_path, "0123abcdef").parent == tmp_path


# ---- the analysis-version tag --------------------------------------------------------------------------


@pytest.mark.parametrize("tag", ["../../../etc", "1/../../x", "-1", "٣", " 2", "1e3", ""])
def test_an_analysis_version_tag_that_is_not_a_number_is_refused(mlflow_store, tmp_path, tag):
    c = MlflowClient()
    run_id = c.create_run("0").info.run_id
    c.set_tag(run_id, analyses.ANALYSIS_VERSION_TAG, tag)
    with pytest.raises(ValueError, match=rf"{analyses.ANALYSIS_VERSION_TAG}={tag!r} is not"):
        analyses.analysis_dir(run_id)
    out = tmp_path / "analysis-out"
    out.mkdir()
    (out / "summary.json").write_text(json.dumps({"metrics": {"m": 1.0}}))
    with pytest.raises(ValueError, match=rf"{analyses.ANALYSIS_VERSION_TAG}={tag!r} is not"):
        analyses.log_analysis(run_id, out, {"m": 1.0}, 0, {})
    run = c.get_run(run_id)
    assert run.data.metrics == {} and c.list_artifacts(run_id) == []  # refused before writing anything


def test_an_analysis_dir_with_a_non_ascii_digit_is_not_a_version(mlflow_store, tmp_path):
    """`"²".isdigit()` is True and `int("²")` raises: such a dir must be skipped, not crash the write-back."""
    c = MlflowClient()
    run_id = c.create_run("0").info.run_id
    (tmp_path / "junk").write_text("x")
    c.log_artifact(run_id, str(tmp_path / "junk"), f"{analyses.ANALYSIS_DIR}/v²")
    out = tmp_path / "analysis-out"
    out.mkdir()
    (out / "summary.json").write_text(json.dumps({"metrics": {"m": 1.0}}))
    assert analyses.log_analysis(run_id, out, {"m": 1.0}, 0, {}) == 1
    assert analyses.analysis_dir(run_id) == f"{analyses.ANALYSIS_DIR}/v1"


def _analysis_out(tmp_path: Path) -> Path:
    out = tmp_path / "analysis-out"
    out.mkdir(exist_ok=True)
    (out / "summary.json").write_text(json.dumps({"metrics": {"m": 1.0}}))
    return out


class _Stop(Exception):
    pass


def _refused_before_the_analysis(run_id: str, monkeypatch, match: str) -> None:
    """`load_analysis_inputs` refuses the run before it loads any data (an hour of analysis would be lost)."""

    def stop(train_cfg):
        raise _Stop

    monkeypatch.setattr(checkpoints, "load_for", stop)
    with pytest.raises(ValueError, match=match):
        checkpoints.load_analysis_inputs(AnalyzeConfig(run_id=run_id))


def _run_with_config(tags: dict[str, str]) -> str:
    c = MlflowClient()
    run_id = c.create_run("0", tags=tags).info.run_id
    c.log_dict(run_id, asdict(TrainConfig(dataset="digits", model="mlp")), tc_client.CONFIG_FILE)
    return run_id


@pytest.mark.parametrize("tag", ["abc", "-1", "1.5", "٣", ""])
def test_an_analysis_step_tag_that_is_not_a_number_is_refused_before_the_analysis(
    mlflow_store, tmp_path, monkeypatch, tag
):
    run_id = _run_with_config({analyses.ANALYSIS_STEP_TAG: tag})
    message = rf"{analyses.ANALYSIS_STEP_TAG}={tag!r} is not"
    _refused_before_the_analysis(run_id, monkeypatch, message)
    with pytest.raises(ValueError, match=message):
        analyses.log_analysis(run_id, _analysis_out(tmp_path), {"m": 1.0}, 0, {})
    c = MlflowClient()
    assert c.get_run(run_id).data.metrics == {} and c.list_artifacts(run_id, analyses.ANALYSIS_DIR) == []


@pytest.mark.parametrize("body", ["[1, 2]", "{not json", '"metrics"', '{"metrics": [1]}', "{}", "\udcff", None])
def test_a_summary_json_that_is_not_an_analysis_summary_is_refused_before_the_analysis(
    mlflow_store, tmp_path, monkeypatch, body
):
    """The current analysis's summary.json names the metrics a new analysis sets to NaN: it is read before
    the analysis, and anything but {"metrics": {...}} is refused naming it (None: summary.json is a dir)."""
    run_id = _run_with_config({analyses.ANALYSIS_VERSION_TAG: "3", analyses.ANALYSIS_TAG: "{}"})
    local = tmp_path / "summary" / "summary.json"
    local.parent.mkdir()
    if body is None:
        local.mkdir()
        (local / "x").write_text("x")
        MlflowClient().log_artifacts(run_id, str(local.parent), f"{analyses.ANALYSIS_DIR}/v3")
    else:
        local.write_text(body, errors="surrogateescape")
        MlflowClient().log_artifact(run_id, str(local), f"{analyses.ANALYSIS_DIR}/v3")
    message = rf"run {run_id}: analysis/v3/summary.json is not"
    _refused_before_the_analysis(run_id, monkeypatch, message)
    with pytest.raises(ValueError, match=message):
        analyses.log_analysis(run_id, _analysis_out(tmp_path), {"m": 1.0}, 0, {})
    c = MlflowClient()
    assert c.get_run(run_id).data.metrics == {}
    assert [f.path for f in c.list_artifacts(run_id, analyses.ANALYSIS_DIR)] == [f"{analyses.ANALYSIS_DIR}/v3"]


def test_an_analysis_version_past_nine_digits_is_read_back(mlflow_store, tmp_path):
    """log_analysis writes max + 1: the version it writes must be one it reads."""
    c = MlflowClient()
    run_id = c.create_run("0", tags={analyses.ANALYSIS_VERSION_TAG: "999999999"}).info.run_id
    assert analyses.log_analysis(run_id, _analysis_out(tmp_path), {"m": 1.0}, 0, {}) == 10**9
    assert analyses.analysis_dir(run_id) == f"{analyses.ANALYSIS_DIR}/v1000000000"
    assert analyses.log_analysis(run_id, _analysis_out(tmp_path), {"m": 2.0}, 0, {}) == 10**9 + 1


def test_an_analysis_version_at_the_cap_is_refused_before_writing(mlflow_store, tmp_path):
    c = MlflowClient()
    run_id = c.create_run("0", tags={analyses.ANALYSIS_VERSION_TAG: "9" * 18}).info.run_id
    assert analyses.analysis_dir(run_id) == f"{analyses.ANALYSIS_DIR}/v{'9' * 18}"
    with pytest.raises(ValueError, match="largest"):
        analyses.log_analysis(run_id, _analysis_out(tmp_path), {"m": 1.0}, 0, {})
    assert c.get_run(run_id).data.metrics == {} and c.list_artifacts(run_id) == []


# ---- what analyze takes from a run's config ------------------------------------------------------------


def test_analyze_reads_no_data_dir_and_downloads_nothing_a_run_names(mlflow_store, tmp_path, cache_root, monkeypatch):
    """A run's `data_dir` is a path on the trainer's machine: analyze reads data only where the analyzing user
    says (TC_DATA_DIR, tc's cache) and never downloads into a directory a run names."""
    c = MlflowClient()
    run_id = c.create_run("0").info.run_id
    cfg = TrainConfig(dataset="digits", model="mlp", data_dir=str(tmp_path / "theirs"), download=True)
    c.log_dict(run_id, asdict(cfg), tc_client.CONFIG_FILE)
    seen = []

    class Stop(Exception):
        pass

    def fake_load_for(train_cfg):
        seen.append(train_cfg)
        raise Stop

    monkeypatch.setattr(checkpoints, "load_for", fake_load_for)
    with pytest.raises(Stop):
        checkpoints.load_analysis_inputs(AnalyzeConfig(run_id=run_id))
    assert seen[0].data_dir is None and seen[0].download is False


def test_a_run_trained_with_its_own_data_dir_is_analyzed_where_the_analyzing_user_says(mlflow_store, tmp_path, capsys):
    """The run's data_dir is never read; the analyzing user's own `-P data_dir=` is (same trust as `-P model=`),
    and without it the refusal says what to pass."""
    from entrypoints import train as train_ep

    from .formats import mnist_like

    mine = tmp_path / "data" / "mine"
    mnist_like(mine, "MNIST", n_train=64, n_test=32)
    argv = ["--dataset", "mnist", "--model", "mlp", "--width", "8", "--epochs", "2", "--batch_size", "32"]
    assert train_ep.main([*argv, "--data_dir", str(mine)]) == 0
    run_id = MlflowClient().search_runs(["0"], order_by=["start_time DESC"])[0].info.run_id
    capsys.readouterr()
    tiny = ["--run_id", run_id, "--max_samples", "16", "--splits", "test", "--matrix", "final"]
    tiny += ["--anisotropy", "false", "--measures", "false"]
    assert analyze_ep.main(tiny) == 2  # refused
    err = capsys.readouterr().err
    assert "TC_DATA_DIR" in err and "-P data_dir=" in err and f"data_dir={str(mine)!r}" in err, err
    assert analyses.ANALYSIS_VERSION_TAG not in MlflowClient().get_run(run_id).data.tags
    assert analyze_ep.main([*tiny, "--data_dir", str(mine)]) == 0
    assert analyses.analysis_dir(run_id) == f"{analyses.ANALYSIS_DIR}/v1"


# ---- end to end: the analyze entry point ---------------------------------------------------------------


def test_analyze_entry_point_refuses_the_reported_attack_in_one_line(
    mlflow_store, tmp_path, cache_root, victim, capsys
):
    payload, sha = _payload(tmp_path, victim.name)
    entries = [_good_entry(tmp_path, 0), {"step": 1, "epoch": 1.0, "file": str(victim), "sha256": sha}]
    run_id = _hostile_run(tmp_path, entries, {f"{ck.ARTIFACT_DIR}{victim.parent}": payload}, config=True)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file() and "mlruns" not in p.parts}
    assert analyze_ep.main(["--run_id", run_id, "--max_samples", "20"]) == 2  # refused
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith(f"tc analyze: run {run_id}: checkpoints/index.json entry 1 names the file {str(victim)!r}")
    assert victim.read_text() == ORIGINAL
    after = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file() and "mlruns" not in p.parts}
    changed = {p for p in after if before.get(p) != after[p]}
    assert all(p.name == "mlflow.db" or p.name.endswith("-journal") for p in changed), changed
    assert _files_under(cache_root) == []
    assert analyses.ANALYSIS_VERSION_TAG not in MlflowClient().get_run(run_id).data.tags


def test_resume_reads_no_data_dir_and_downloads_nothing_a_run_names(mlflow_store, tmp_path, monkeypatch):
    """Resuming takes the run's config, but where the data is on this machine is the resuming user's to say."""
    from entrypoints import train as train_ep

    c = MlflowClient()
    run_id = c.create_run("0").info.run_id
    cfg = TrainConfig(dataset="digits", model="mlp", data_dir=str(tmp_path / "theirs"), download=True)
    c.log_dict(run_id, asdict(cfg), tc_client.CONFIG_FILE)
    c.set_terminated(run_id, "FAILED")
    seen = []
    monkeypatch.setattr(jobs, "train_into_run", lambda run_id, cfg, *a, **k: seen.append(cfg))
    train_ep.main(["--resume_run_id", run_id, "--data_dir", str(tmp_path / "mine")])
    assert seen[0].data_dir == str(tmp_path / "mine") and seen[0].download is False
    assert (seen[0].dataset, seen[0].model) == ("digits", "mlp")  # the rest is the run's own config
    assert not (tmp_path / "theirs").exists()


def test_a_resume_state_whose_index_names_a_path_is_refused_before_anything(mlflow_store, tmp_path, victim):
    """resume/state.pt is run data too: its index becomes checkpoints/index.json (and so, later, paths)."""
    from tc.tracking.jobs import train_into_run

    c = MlflowClient()
    run_id = c.create_run("0").info.run_id
    cfg = TrainConfig(dataset="digits", model="mlp", width=16, epochs=1, batch_size=256, train_size=600)
    bad = {**_good_entry(tmp_path, 1), "file": str(victim)}
    state = {"step": 1, "index": [_good_entry(tmp_path, 0), bad], "pending_metrics": {"test_acc": 0.5}}
    with pytest.raises(ck.CheckpointError) as err:
        train_into_run(run_id, cfg, state)
    assert str(err.value).startswith(f"run {run_id}: resume/state.pt index entry 1 names the file {str(victim)!r}")
    run = c.get_run(run_id)
    assert run.data.metrics == {} and writers.WRITER_TAG not in run.data.tags and c.list_artifacts(run_id) == []
    assert victim.read_text() == ORIGINAL


def test_a_resume_state_that_lists_a_step_twice_is_refused_before_anything(mlflow_store, tmp_path):
    """The same rule as checkpoints/index.json: no step twice (the index written back would list it twice)."""
    from tc.tracking.jobs import train_into_run

    c = MlflowClient()
    run_id = c.create_run("0").info.run_id
    cfg = TrainConfig(dataset="digits", model="mlp", width=16, epochs=1, batch_size=256, train_size=600)
    state = {"step": 1, "index": [_good_entry(tmp_path, 0), _good_entry(tmp_path, 0)], "pending_metrics": {}}
    with pytest.raises(ck.CheckpointError, match=r"resume/state.pt index entry 1 is for step 0 again"):
        train_into_run(run_id, cfg, state)
    run = c.get_run(run_id)
    assert run.data.metrics == {} and writers.WRITER_TAG not in run.data.tags and c.list_artifacts(run_id) == []


def test_analyze_never_imports_a_model_a_run_names(mlflow_store, tmp_path, cache_root, monkeypatch, capsys):
    """DESIGN habit 15: code is imported only from names the user passes on the command line."""
    import sys

    marker = tmp_path / "imported"
    (tmp_path / "hostile_models.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\ndef make(): pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    c = MlflowClient()
    run_id = c.create_run("0").info.run_id
    c.log_dict(run_id, asdict(TrainConfig(dataset="digits", model="hostile_models:make")), tc_client.CONFIG_FILE)
    c.set_terminated(run_id, "FINISHED")
    assert analyze_ep.main(["--run_id", run_id]) == 2  # refused
    assert "tc imports code only from names given on the command line" in capsys.readouterr().err
    assert not marker.exists() and "hostile_models" not in sys.modules


@pytest.fixture
def umask_002():
    """Ubuntu's default umask: mkdir's mode is 0o775 unless tc asks for 0o700."""
    old = os.umask(0o002)
    yield
    os.umask(old)


@pytest.mark.parametrize("first", ["train", "data"])
def test_a_cache_train_or_data_creates_first_is_private_and_analyze_accepts_it(tmp_path, monkeypatch, umask_002, first):
    """Whichever command creates the cache first (train's staging dir, a data set's dir) creates it 0o700, so
    analyze's check of the cache (cache.run_dir) passes on a fresh machine with a group-writable umask."""
    from tc.core import data

    root = tmp_path / "home" / ".cache" / "tc"
    monkeypatch.setenv("TC_CACHE_DIR", str(root))
    if first == "train":
        checkpoints.CheckpointCallback("fresh0", {}).close()
        made = [root / "staging"]
    else:
        debian = tmp_path / "debian"
        debian.mkdir()
        for name in data._IDX_FILES:
            with gzip.open(debian / f"{name}.gz", "wb") as f:
                f.write(b"idx")
        monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", debian)
        assert data._install_debian_fashion_mnist(data.cache_dir() / "data")
        made = [root / "data"]
    run = cache.run_dir(cache.checkpoint_root(), "fresh0")
    for d in [root.parent.parent, root.parent, root, *made, cache.checkpoint_root(), run]:
        assert d.stat().st_mode & 0o777 == 0o700, d
