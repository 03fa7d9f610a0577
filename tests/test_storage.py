"""Every file mlproj writes is whole or absent: a failure keeps the old file, concurrent writers do not collide."""

import csv
import json
import multiprocessing
import os
import threading
import uuid
from pathlib import Path

import pytest

from mlproj.storage import atomic_dir, atomic_write, read_text, write_bytes, write_csv, write_json, write_text

ROWS = 20_000  # about 1 MB of CSV: big enough that two writers sharing a temporary file overlap


class WriterError(Exception):
    pass


def fail_halfway(handle):
    handle.write(b"half of the new")
    raise WriterError


def rows_marked(mark: str) -> list[list[str]]:
    return [[f"{mark}-{i}", mark * 20] for i in range(ROWS)]


def write_csv_repeatedly(path: str, mark: str, start: object, times: int = 6) -> None:
    start.wait()
    for _ in range(times):
        write_csv(path, ["id", "mark"], rows_marked(mark))


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def test_a_failing_writer_leaves_the_old_file_and_no_temporary_file(tmp_path):
    target = tmp_path / "summary.json"
    write_text(target, "old\n")
    with pytest.raises(WriterError):
        atomic_write(str(target), fail_halfway)
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_a_failing_writer_creates_nothing_where_there_was_nothing(tmp_path):
    with pytest.raises(WriterError):
        atomic_write(tmp_path / "new" / "metrics.csv", fail_halfway)
    assert list((tmp_path / "new").iterdir()) == []


def test_the_replaced_file_can_be_kept(tmp_path):
    target = tmp_path / "checkpoints" / "last.ckpt"
    write_bytes(target, b"epoch 1")
    write_bytes(target, b"epoch 2")
    atomic_write(str(target), lambda handle: handle.write(b"epoch 3"), keep_previous_as="last.prev.ckpt")
    assert target.read_bytes() == b"epoch 3"
    assert (target.parent / "last.prev.ckpt").read_bytes() == b"epoch 2"
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt", "last.prev.ckpt"]


def test_a_kill_before_the_new_file_takes_its_name_still_leaves_the_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The previous file gets its second name without losing the first: a run killed there still resumes."""
    import mlproj.storage

    target = tmp_path / "last.ckpt"
    target.write_bytes(b"epoch 2")
    replace = os.replace

    def killed_at_the_last_rename(source: Path, destination: Path) -> None:
        if Path(destination) == target:
            raise KeyboardInterrupt
        replace(source, destination)

    monkeypatch.setattr(mlproj.storage.os, "replace", killed_at_the_last_rename)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(str(target), lambda handle: handle.write(b"epoch 3"), keep_previous_as="last.prev.ckpt")
    assert target.read_bytes() == (tmp_path / "last.prev.ckpt").read_bytes() == b"epoch 2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "last.prev.ckpt"]


def test_a_bucket_write_keeps_the_previous_object_and_leaves_no_temporary_one():
    pytest.importorskip("fsspec")
    import fsspec

    folder = f"memory://bucket-{uuid.uuid4().hex}/checkpoints"
    write_bytes(f"{folder}/last.ckpt", b"epoch 1")
    atomic_write(f"{folder}/last.ckpt", lambda handle: handle.write(b"epoch 2"), keep_previous_as="last.prev.ckpt")
    with pytest.raises(WriterError):
        atomic_write(f"{folder}/last.ckpt", fail_halfway)
    fs, path = fsspec.core.url_to_fs(folder)
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)) == ["last.ckpt", "last.prev.ckpt"]
    assert read_text(f"{folder}/last.ckpt") == "epoch 2"
    assert read_text(f"{folder}/last.prev.ckpt") == "epoch 1"


def test_two_processes_writing_one_file_both_succeed_and_leave_it_whole(tmp_path):
    target = tmp_path / "reports" / "manifest.csv"
    context = multiprocessing.get_context("fork")
    start = context.Barrier(2)
    writers = [context.Process(target=write_csv_repeatedly, args=(str(target), m, start)) for m in "ab"]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=60)
    assert [w.exitcode for w in writers] == [0, 0], "a writer failed: the two collided"
    rows = read_csv(target)
    assert rows[0] == ["id", "mark"]
    assert rows[1:] in (rows_marked("a"), rows_marked("b")), "the file mixes two writes or is cut short"
    assert [p.name for p in target.parent.iterdir()] == ["manifest.csv"], "a temporary file was left behind"


def test_two_threads_writing_one_file_both_succeed(tmp_path):
    target = tmp_path / "versions" / "abc.txt"
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def write(mark: bytes) -> None:
        start.wait()
        try:
            for _ in range(50):
                write_bytes(target, mark * 100_000)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=write, args=(m,)) for m in (b"a", b"b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert target.read_bytes() in (b"a" * 100_000, b"b" * 100_000)
    assert [p.name for p in target.parent.iterdir()] == ["abc.txt"]


def test_csv_round_trips_what_a_spreadsheet_would_mangle(tmp_path):
    rows = [
        ["cats/a,b.jpg", "cat", 1],
        ['say "cheese".png', "dog", 2.5],
        ["two\nlines.png", "café", ""],
    ]
    path = tmp_path / "deep" / "er" / "rows.csv"
    write_csv(path, ["path", "label", "value"], iter(rows))
    assert read_csv(path) == [["path", "label", "value"], *[[str(v) for v in row] for row in rows]]
    assert path.read_bytes().startswith(b"path,label,value\r\n")  # the csv module's own line ends, as before


def test_json_is_indented_and_ends_with_a_newline(tmp_path):
    path = tmp_path / "run" / "summary.json"
    write_json(path, {"status": "finished", "best_checkpoint": Path("/runs/x/best.ckpt")})
    text = path.read_text()
    assert text.endswith("}\n") and '\n  "status": "finished"' in text
    assert json.loads(text) == {"status": "finished", "best_checkpoint": "/runs/x/best.ckpt"}


def test_reading_a_missing_file_gives_none(tmp_path):
    assert read_text(tmp_path / "nothing.txt") is None
    write_text(str(tmp_path / "something.txt"), "ünïcode\n")
    assert read_text(tmp_path / "something.txt") == "ünïcode\n"


def test_a_folder_appears_whole_when_its_block_ends(tmp_path):
    target = tmp_path / "pixels" / "key"
    with atomic_dir(target) as staging:
        (staging / "pixels.u8").write_bytes(b"\x00" * 12)
        assert not target.exists(), "the folder is visible before it is complete"
    assert (target / "pixels.u8").read_bytes() == b"\x00" * 12
    assert [p.name for p in target.parent.iterdir()] == ["key"]


def test_a_failed_folder_leaves_nothing(tmp_path):
    target = tmp_path / "pixels" / "key"
    with pytest.raises(WriterError), atomic_dir(target) as staging:
        (staging / "pixels.u8").write_bytes(b"\x00" * 12)
        raise WriterError
    assert list(target.parent.iterdir()) == []


def test_the_first_process_to_finish_a_folder_keeps_it(tmp_path):
    target = tmp_path / "digits"
    with atomic_dir(target) as slow:
        (slow / "0").mkdir()
        (slow / "0" / "slow.png").write_bytes(b"slow")
        with atomic_dir(target) as fast:  # another process building the same folder, finishing first
            (fast / "0").mkdir()
            (fast / "0" / "fast.png").write_bytes(b"fast")
    assert [p.name for p in (target / "0").iterdir()] == ["fast.png"]
    assert [p.name for p in tmp_path.iterdir()] == ["digits"], "a staging folder was left behind"
