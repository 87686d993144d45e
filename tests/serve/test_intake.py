"""The edge's task checks, in-process: every task of a list passes the one task-text check a single task passes
(rewards.base.check_task_text)."""

import pytest

from rewards import InvalidTaskError
from rewards.base import MAX_TASK_CHARS
from serve.intake import task_list


def test_a_list_of_tasks_is_checked_like_one_task():
    assert task_list('[" go to the red ball "]', 3) == ["go to the red ball"] * 3  # one task shared by all
    assert task_list('["open the door", "go", "go"]', 3) == ["open the door", "go", "go"]
    for refused in ("[1]", '["go", null, "go"]', '["go", "go"]', '["go", "  ", "go"]',
                    f'["{"x" * (MAX_TASK_CHARS + 1)}"]', "go"):
        with pytest.raises(InvalidTaskError):
            task_list(refused, 3)
