"""The walk of one message (tests.benchmarks.walk): from the route loop to the core's decision, the
message passes each layer's file once, in order."""

from __future__ import annotations

from pathlib import Path

from tests.benchmarks.walk import runs_of, walk


def test_the_path_to_the_decision_reads_each_file_once_in_layer_order() -> None:
    calls, decision = walk()
    files = [Path(file).as_posix() for file in runs_of([file for file, _ in decision])]
    assert files == ["processors/runtime/engine/stream_thread.py",
                     "processors/runtime/engine/task.py",
                     "processors/runtime/gate/processor.py",
                     "processors/core/step.py"]
    assert decision[-1] == ("processors/core/step.py", "decide")
    # The walk saw the whole batch, its flush and its commit, not only the path.
    assert ("processors/runtime/gate/batch_state.py", "flush") in calls
    assert ("processors/runtime/engine/record_collector.py", "flush") in calls


def test_runs_of_counts_a_return_to_a_file_as_a_new_stay() -> None:
    assert runs_of(["a", "a", "b", "a", "c", "c"]) == ["a", "b", "a", "c"]
    assert runs_of([]) == []
