import h5py
import numpy as np
import pytest

from rsdlib.actions import chunk_episode, read_hdf5_actions


def test_chunks_are_windows_padded_with_the_last_action():
    actions = np.arange(5 * 2, dtype=float).reshape(5, 2)
    chunks = chunk_episode(actions, 3)
    assert chunks.shape == (5, 3, 2)
    np.testing.assert_array_equal(chunks[0], actions[0:3])
    np.testing.assert_array_equal(chunks[3], np.stack([actions[3], actions[4], actions[4]]))
    np.testing.assert_array_equal(chunks[4], np.stack([actions[4]] * 3))


def test_chunking_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\(T, A\)"):
        chunk_episode(np.zeros(4), 2)
    with pytest.raises(ValueError, match="horizon"):
        chunk_episode(np.zeros((4, 7)), 0)


def test_reads_episodes_in_numeric_order(tmp_path):
    path = tmp_path / "demo.hdf5"
    with h5py.File(path, "w") as f:
        for i in (10, 2, 1):
            f.create_dataset(f"data/demo_{i}/actions", data=np.full((3, 7), i, dtype=np.float32))
    episodes = read_hdf5_actions(path)
    assert list(episodes) == ["demo_1", "demo_2", "demo_10"]
    assert episodes["demo_10"][0, 0] == 10


def test_truncated_or_foreign_files_raise_with_the_path(tmp_path):
    bad = tmp_path / "broken.hdf5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 20)
    with pytest.raises(ValueError, match="broken.hdf5"):
        read_hdf5_actions(bad)
    empty = tmp_path / "empty.hdf5"
    with h5py.File(empty, "w") as f:
        f.create_group("other")
    with pytest.raises(ValueError, match="no 'data' group"):
        read_hdf5_actions(empty)
    with pytest.raises(FileNotFoundError, match="nope.hdf5"):
        read_hdf5_actions(tmp_path / "nope.hdf5")
