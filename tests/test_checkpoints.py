import pytest
import torch

from tc.core import checkpoints as ck

MARKER = []


class Exploit:
    """An object whose unpickling would run code."""

    def __reduce__(self):
        return (MARKER.append, ("code ran",))


def _sd():
    return {"w": torch.arange(6.0).view(2, 3), "b": torch.zeros(3)}


def test_filename_zero_pads_so_lexical_order_is_step_order():
    names = [ck.filename(s) for s in (0, 9, 10, 1234567)]
    assert names[0] == "step_00000000.pt" and sorted(names) == names


def test_save_then_load_round_trip_with_hash(tmp_path):
    entry = ck.save_checkpoint(tmp_path, 40, 1.0, {"model": "mlp"}, _sd())
    payload = ck.load_checkpoint(tmp_path / entry.file, entry.sha256)
    assert payload["step"] == 40 and payload["model_spec"] == {"model": "mlp"}
    assert all(torch.equal(payload["state_dict"][k], v) for k, v in _sd().items())


def test_index_round_trip_is_sorted_by_step(tmp_path):
    entries = [ck.save_checkpoint(tmp_path, s, s / 10, {}, _sd()) for s in (20, 0, 10)]
    assert [e.step for e in ck.read_index(ck.write_index(tmp_path, entries))] == [0, 10, 20]


def test_tampered_file_fails_the_hash_check(tmp_path):
    entry = ck.save_checkpoint(tmp_path, 0, 0.0, {}, _sd())
    path = tmp_path / entry.file
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ck.CheckpointError, match="sha256"):
        ck.load_checkpoint(path, entry.sha256)


def test_truncated_file_is_a_clear_error(tmp_path):
    entry = ck.save_checkpoint(tmp_path, 0, 0.0, {}, _sd())
    path = tmp_path / entry.file
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ck.CheckpointError, match="truncated or corrupted"):
        ck.load_checkpoint(path)


def test_pickled_code_is_refused_and_never_runs(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": ck.FORMAT, "state_dict": {}, "x": Exploit()}, path)
    with pytest.raises(ck.CheckpointError, match="more than tensors"):
        ck.load_checkpoint(path)
    assert MARKER == []


def test_file_of_another_format_is_refused(tmp_path):
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ck.CheckpointError, match="not a tc-checkpoint"):
        ck.load_checkpoint(tmp_path / "other.pt")


@pytest.mark.parametrize("held", [10.0, True, 11, "10"])
def test_load_series_refuses_a_payload_that_does_not_hold_its_index_step_as_an_int(tmp_path, held):
    """One rule for both loaders (`ck.check_payload_step`): 10.0 == 10 and True == 1, but neither is step 10."""
    entries = [ck.save_checkpoint(tmp_path, s, s / 10, {}, _sd()) for s in (0, 10)]
    files = [(e, tmp_path / e.file) for e in entries]
    assert ck.load_series(files)[0] == [0, 10]  # the honest series loads
    payload = ck.safe_load(tmp_path / entries[1].file)
    payload["step"] = held
    ck.atomic_save(payload, tmp_path / entries[1].file)
    lying = ck.IndexEntry(10, 1.0, entries[1].file, ck.sha256(tmp_path / entries[1].file))
    with pytest.raises(ck.CheckpointError, match=rf"step_00000010\.pt is listed as step 10 but holds step {held!r}"):
        ck.load_series([files[0], (lying, tmp_path / lying.file)])


def test_an_index_step_beyond_max_number_is_refused_by_check_entry():
    """A step becomes the analysis's `tc.analysis_step` (names.NUMBER, at most 18 digits): one beyond that is
    refused when the index is read, before any download or analysis, not when the result is written back."""
    from tc.core import names

    def entry(step):
        return {"step": step, "epoch": 1.0, "file": ck.filename(step), "sha256": "0" * 64}

    assert ck.check_entry(entry(names.MAX_NUMBER)).step == names.MAX_NUMBER
    for step in (names.MAX_NUMBER + 1, 10**30):
        with pytest.raises(ValueError, match=f"a step is an integer from 0 to {names.MAX_NUMBER}"):
            ck.check_entry(entry(step))
