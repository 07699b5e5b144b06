import pytest
import torch

from tc import checkpoints as ck

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
