"""Stopping the embedded server's postmaster (``storage.embedded.stop_postmaster``)."""

from storage.embedded import stop_postmaster


def test_stopping_a_postmaster_the_wheel_found_no_process_for_is_a_no_op(tmp_path):
    # The wheel's PostmasterInfo.process is None when no process has the pid of postmaster.pid; stop_server passed
    # it on, and stop_postmaster failed with AttributeError on None.send_signal instead of finding nothing to stop.
    (tmp_path / "postmaster.pid").write_text("4194304\n")
    stop_postmaster(None, tmp_path, fast_timeout=0.1)
    assert (tmp_path / "postmaster.pid").exists()  # nothing was touched
