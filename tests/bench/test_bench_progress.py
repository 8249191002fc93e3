"""The progress bar: one line on stderr that says how far a run has got."""

import io

from bench.progress import Progress


def test_the_line_shows_done_total_and_failures():
    progress = Progress(4, "vllm c=1", stream=io.StringIO(), width=8)
    progress.advance()
    progress.advance(ok=False)
    line = progress.line()
    assert line.startswith("vllm c=1 [####....] 2/4")
    assert line.endswith("1 failed")


def test_a_log_file_gets_whole_lines_and_always_the_last_one():
    stream = io.StringIO()
    progress = Progress(3, "run", stream=stream)
    for _ in range(3):
        progress.advance()
    progress.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert lines[-1].startswith("run [") and " 3/3 " in lines[-1]
    assert len(lines) <= 2  # redrawn rarely, not once per request
