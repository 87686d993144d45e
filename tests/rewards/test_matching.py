import numpy as np
import pytest

from rewards.matching import cost_matrix, diagonal_band, dtw, orca, orca_step, ot, temporal_ot, threshold

MATCHERS = [orca, ot, temporal_ot, dtw, threshold]


def orca_loops(cost, tau=1.0):
    """The coverage recurrence of design §4.2, written out cell by cell."""
    p = np.exp(-cost / tau)
    t, n = p.shape
    cov = np.zeros_like(p)
    for i in range(t):
        for j in range(n - 1):
            if i == 0:
                cov[i, j] = p[0, 0] if j == 0 else cov[0, j - 1] * p[0, j]
            elif j == 0:
                cov[i, j] = max(cov[i - 1, 0], p[i, 0])
            else:
                cov[i, j] = max(cov[i - 1, j], cov[i, j - 1] * p[i, j])
        cov[i, n - 1] = cov[i, n - 2] * p[i, n - 1]
    return cov[:, -1]


@pytest.mark.parametrize("shape", [(1, 2), (1, 6), (6, 2), (7, 7), (15, 4), (4, 15)])
@pytest.mark.parametrize("tau", [1.0, 0.3])
def test_orca_equals_the_double_loop(shape, tau):
    cost = np.random.default_rng(sum(shape)).uniform(0, 2, shape)
    np.testing.assert_allclose(orca(cost, tau), orca_loops(cost, tau), rtol=1e-10, atol=0)


def test_orca_hand_worked_3x3():
    p = np.array([[0.5, 0.2, 0.1], [0.4, 0.8, 0.3], [0.1, 0.5, 0.9]])
    # row 0: .5, .5·.2 = .1, .1·.1 = .01; row 1: max(.5,.4) = .5, max(.1, .5·.8) = .4, .4·.3 = .12;
    # row 2: .5, max(.4, .5·.5) = .4, .4·.9 = .36
    np.testing.assert_allclose(orca(-np.log(p)), [0.01, 0.12, 0.36], rtol=1e-12)


def test_orca_needs_two_demo_frames():
    with pytest.raises(ValueError, match="at least 2 demo frames"):
        orca(np.zeros((3, 1)))


@pytest.mark.parametrize("context", [1, 3])
def test_orca_rewards_in_order_over_reversed(context):
    demo = np.random.default_rng(0).normal(size=(8, 32))
    slow = np.repeat(demo, 2, axis=0)
    forward = orca(cost_matrix(slow, demo, context))
    backward = orca(cost_matrix(slow[::-1], demo, context))
    assert forward[-1] > 50 * backward[-1]
    if context == 1:  # every demo frame is met exactly, in order
        assert forward[-1] == pytest.approx(1.0)


def test_orca_steps_stream_the_offline_rewards():
    cost = np.random.default_rng(1).uniform(0, 2, (9, 5))
    log_row, streamed = None, []
    for row in cost:
        reward, log_row = orca_step(row, log_row)
        streamed.append(reward)
    np.testing.assert_allclose(streamed, orca(cost), rtol=1e-12)


def test_dtw_hand_worked_3x3():
    cost = np.array([[0.0, 2.0, 9.0], [9.0, 9.0, 1.0], [9.0, 9.0, 0.0]])
    # accumulated: [0 2 11], [9 9 3], [18 18 3]; path (0,0) (0,1) (1,2) (2,2)
    np.testing.assert_allclose(dtw(cost), [-1.0, -1.0, 0.0])


def test_threshold_advances_the_subgoal_past_the_threshold():
    p = np.array([[0.95, 0.1], [0.2, 0.5], [0.3, 0.99]])
    # k = 0: (.95 + 0) / 2, then k = 1: (.5 + 1) / 2, (.99 + 1) / 2; k stays at the last frame
    np.testing.assert_allclose(threshold(-np.log(p)), [0.475, 0.75, 0.995])


def test_ot_and_temporal_ot_follow_a_zero_cost_diagonal():
    cost = np.where(np.eye(6, dtype=bool), 0.0, 2.0)
    np.testing.assert_allclose(ot(cost), 0.0, atol=1e-6)
    np.testing.assert_allclose(temporal_ot(cost, mask_k=1), 0.0, atol=1e-6)


def test_diagonal_band_splits_the_longer_sequence_evenly():
    # rows 0-1 -> column 0, rows 2-3 -> column 1, rows 4-6 -> column 2 (the remainder goes last), as in the reference
    np.testing.assert_array_equal(diagonal_band(7, 3, 0).argmax(1), [0, 0, 1, 1, 2, 2, 2])
    # T < N: row 0 owns columns 0-1, row 1 owns 2-3, row 2 owns 4-6; every column is reachable
    np.testing.assert_array_equal(diagonal_band(3, 7, 0).astype(int),
                                  [[1, 1, 0, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0, 0], [0, 0, 0, 0, 1, 1, 1]])
    assert diagonal_band(3, 7, 1)[1].tolist() == [0, 1, 1, 1, 1, 0, 0]


@pytest.mark.parametrize("shape", [(1, 2), (2, 9), (12, 12), (30, 7), (7, 30)])
@pytest.mark.parametrize("fill", [0.0, 2.0, None])
@pytest.mark.parametrize("matcher", MATCHERS)
def test_every_matcher_is_finite_on_extreme_and_random_costs(matcher, shape, fill):
    cost = np.random.default_rng(2).uniform(0, 2, shape) if fill is None else np.full(shape, fill)
    rewards = matcher(cost)
    assert rewards.shape == (shape[0],) and np.isfinite(rewards).all()


def test_cost_matrix_clips_the_context_at_the_ends():
    learner = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    demo = np.array([[2.0, 0.0], [0.0, 3.0]])
    distance = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 1.0]])
    np.testing.assert_allclose(cost_matrix(learner, demo, context=1), distance, atol=1e-12)
    # cost[i, j] = mean_k distance[min(i+k, 2), min(j+k, 1)]; e.g. cost[0, 0] = (0 + 0 + 1) / 3
    np.testing.assert_allclose(cost_matrix(learner, demo, context=3),
                               [[1 / 3, 2 / 3], [1.0, 2 / 3], [4 / 3, 1.0]], atol=1e-12)
