"""The reply task's pacing: the coalescing window follows the loop's load."""

import pytest

from conversations import generation


def test_the_coalescing_window_is_the_setting_on_an_idle_loop_and_widens_boundedly_when_it_is_late(settings):
    settings.CHAT_FRAME_INTERVAL_MS = 50
    saved = generation.LoopLoad.lateness
    try:
        generation.LoopLoad.lateness = 0.0
        assert generation.frame_window() == 0.05
        for _ in range(200):  # pumps waking 10 ms late, again and again
            generation.LoopLoad.woke(0.010)
        assert 0.05 < generation.frame_window() <= 0.05 * generation.WINDOW_MAX_FACTOR
        for _ in range(200):
            generation.LoopLoad.woke(1.0)  # a saturated loop: the window stops growing at its cap
        assert generation.frame_window() == pytest.approx(0.05 * generation.WINDOW_MAX_FACTOR)
        for _ in range(400):
            generation.LoopLoad.woke(0.0)  # idle again: it narrows back
        assert generation.frame_window() < 0.051
    finally:
        generation.LoopLoad.lateness = saved
