"""BabyAI (MiniGrid) adapter: state-vector observations for the policy, RGB frames and the mission for the reward.

The policy sees the 7x7 egocentric grid encoding (cheap to learn from); the reward model sees full top-down
frames in `info["frame"]`, as ORCA and VLC do on Meta-World (design.md §6).
"""

from __future__ import annotations

import contextlib
import heapq
import io
import math
import re

import gymnasium as gym
import minigrid  # noqa: F401  (registers the BabyAI-* ids)
import numpy as np
from minigrid.core.actions import Actions
from minigrid.core.grid import Grid
from minigrid.envs.babyai.core.verifier import GoToInstr, ObjDesc, OpenInstr, PickupInstr
from minigrid.utils.baby_ai_bot import BabyAIBot

from envs.episode import Episode, first_success, record
from envs.suites import EnvSuite

# short name ("GoToRedBall") -> gym id ("BabyAI-GoToRedBall-v0")
_LEVELS = {re.sub(r"^BabyAI-|-v\d+$", "", env_id): env_id for env_id in gym.registry if env_id.startswith("BabyAI-")}
# max value of each image channel (object index, colour index, door state), so the scaled obs lies in [0, 1]
_IMAGE_MAX = np.array([10.0, 5.0, 2.0], dtype=np.float32)
# random actions only move and turn: a realistic failure wanders around instead of toggling or dropping things
_MOVE_ACTIONS = np.array([Actions.left, Actions.right, Actions.forward])
# policy -> default probability of a random action; "other_task" is the expert of another task in the same scene
POLICIES = {"expert": 0.0, "random": 1.0, "noisy_expert": 0.8, "other_task": 0.0}
# a mission's leading verb -> three rewordings, for paraphrase training and the paraphrase metric
_REWORDINGS = {"go to ": ("walk to ", "head over to ", "make your way to "),
               "pick up ": ("grab ", "take ", "collect "),
               "put ": ("place ", "move ", "set "),
               "open ": ("pull open ", "swing open ", "get open ")}


def level_name(task: str) -> str:
    """Canonical short level name for a short name or a full gym id; ValueError lists the valid names."""
    name = re.sub(r"^BabyAI-|-v\d+$", "", task)
    if name not in _LEVELS:
        raise ValueError(f"unknown BabyAI level {task!r}; valid names: {', '.join(sorted(_LEVELS))}")
    return name


def paraphrases(mission: str) -> tuple[str, ...]:
    """The mission and three rewordings of its first verb ("go to the red ball" -> "walk to the red ball", ...);
    only the mission itself where the verb has none. Index 0 is always the mission."""
    for verb, rewordings in _REWORDINGS.items():
        if mission.startswith(verb):
            return (mission, *(new + mission[len(verb):] for new in rewordings))
    return (mission,)


class BabyAIEnv(gym.Wrapper):
    """Flat float32 state observations plus `info["frame"]` (unless `render_size` is 0), `info["mission"]`, `info["success"]` and
    `info["progress"]` (the share of the bot's path closed since the reset, `path_progress`; NaN for missions
    without a single object to reach, so the key is a float in every info and vector envs can stack it).

    Observation: the 7x7x3 egocentric grid encoding scaled to [0, 1], then a one-hot direction (151 values).
    `terminated`/`truncated` are the MiniGrid ones, untouched. BabyAI pays a positive reward only on the step
    that solves the mission, so that is when `success` is True.
    """

    def __init__(self, env: gym.Env, seed: int | None = None, render_size: int = 64):
        super().__init__(env)
        self.render_size, self.render_frames = render_size, True
        self.observation_space = gym.spaces.Box(0.0, 1.0, (7 * 7 * 3 + 4,), np.float32)
        self._first_seed = seed  # used by the first reset() that passes no seed

    def reset(self, *, seed=None, options=None):
        if seed is None:
            seed, self._first_seed = self._first_seed, None
        with contextlib.redirect_stdout(io.StringIO()):  # BabyAI prints every rejected level sample
            obs, info = self.env.reset(seed=seed, options=options)
        self._start_path = remaining_path(self.unwrapped)
        return self._observation(obs), self._info(info, success=False)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._observation(obs), reward, terminated, truncated, self._info(info, success=reward > 0)

    def _observation(self, obs: dict) -> np.ndarray:
        image = (obs["image"] / _IMAGE_MAX).astype(np.float32).ravel()
        return np.concatenate([image, np.eye(4, dtype=np.float32)[obs["direction"]]])

    def _info(self, info: dict, success: bool) -> dict:
        progress = path_progress(self._start_path, remaining_path(self.unwrapped))
        # 0: no frames (nothing scores them); render_frames: off on the steps whose frame a FrameStride drops
        frame = {"frame": self.render()} if self.render_size and self.render_frames else {}
        return {**info, **frame, "mission": self.unwrapped.mission, "success": bool(success), "progress": progress}

    def render(self) -> np.ndarray:
        """Top-down RGB view without the agent-view highlight: uint8 [render_size, render_size, 3]. Every suite's env
        renders through `render()`; MiniGrid's own returns None here (the level is made without a render mode)."""
        env = self.unwrapped
        tile_size = max(1, math.ceil(self.render_size / max(env.width, env.height)))
        # what get_frame(highlight=False) draws, without the agent's visibility mask that get_frame computes even
        # when it does not highlight (3.6x the cost on KeyCorridorS3R3)
        frame = _TILES.render(env.grid, tile_size, env.agent_pos, env.agent_dir)
        # nearest-neighbour resize; a no-op for the 8x8 levels at 64 px
        rows = np.arange(self.render_size) * frame.shape[0] // self.render_size
        cols = np.arange(self.render_size) * frame.shape[1] // self.render_size
        return frame[rows][:, cols]


class TileAtlas:
    """MiniGrid's `Grid.render` (no highlight) pixel for pixel, at a fraction of its cost: MiniGrid draws a frame
    cell by cell in Python; here each cell only names its tile (MiniGrid's own, drawn once by `Grid.render_tile` and
    kept in one array) and numpy lays the frame out in one gather."""

    def __init__(self):
        self._rows: dict[tuple, int] = {}  # MiniGrid's tile-cache key (the tile size in it) -> row in its size's tiles
        self._tiles: dict[int, np.ndarray] = {}  # tile size -> uint8 [tiles, size, size, 3]

    def _row(self, cell, agent_dir: int | None, tile_size: int) -> int:
        key = (cell.encode() if cell is not None else ()) + (agent_dir, tile_size)
        row = self._rows.get(key)
        if row is None:  # a tile not seen yet: drawn by MiniGrid (a few per level)
            # float, truncated to uint8 as Grid.render's assignment does
            tile = Grid.render_tile(cell, agent_dir=agent_dir, highlight=False, tile_size=tile_size).astype(np.uint8)
            tiles = self._tiles.get(tile_size, np.zeros((0, *tile.shape), np.uint8))
            self._tiles[tile_size] = np.concatenate([tiles, tile[None]])
            row = self._rows[key] = len(tiles)
        return row

    def render(self, grid, tile_size: int, agent_pos, agent_dir: int) -> np.ndarray:
        """uint8 [height * tile_size, width * tile_size, 3]: the grid with the agent drawn facing `agent_dir`."""
        agent = int(agent_pos[1]) * grid.width + int(agent_pos[0])
        rows = [self._row(cell, agent_dir if k == agent else None, tile_size) for k, cell in enumerate(grid.grid)]
        tiles = self._tiles[tile_size][rows].reshape(grid.height, grid.width, tile_size, tile_size, 3)
        return tiles.transpose(0, 2, 1, 3, 4).reshape(grid.height * tile_size, grid.width * tile_size, 3)


_TILES = TileAtlas()


def remaining_path(env) -> int | None:
    """Actions (turns, steps forward, toggles, pick-ups and the final pick-up or toggle) the agent still needs to do
    its mission's object: a shortest path over (cell, direction, key carried). A closed door costs one toggle more;
    a locked one opens only with a key of its colour, which the path may fetch first (one pick-up). None for missions
    with no single object to reach (put next, sequences) or when no matching object is reachable."""
    instrs = env.instrs
    if not isinstance(instrs, (GoToInstr, PickupInstr, OpenInstr)):
        return None
    carrying = env.carrying
    if isinstance(instrs, PickupInstr) and carrying is not None and carrying in instrs.desc.obj_set:
        return 0
    targets = set(map(tuple, instrs.desc.obj_poss))
    held = carrying.color if carrying is not None and carrying.type == "key" else ""  # "": no key
    hands_full = carrying is not None and held is None  # a non-key must be dropped before any pick-up

    def finish(ahead, key) -> int | None:
        """Actions to complete the mission when facing `ahead` (a target) with `key` carried; None if it cannot."""
        if isinstance(instrs, GoToInstr):
            return 0
        if isinstance(instrs, OpenInstr):
            door = env.grid.get(*ahead)
            return 1 if not door.is_locked or key == door.color else None
        return 1 + bool(key or hands_full)  # pick-up, after dropping what is carried

    steps = ((1, 0), (0, 1), (-1, 0), (0, -1))  # MiniGrid's directions: right, down, left, up
    start = (*env.agent_pos, env.agent_dir, held)
    best, frontier = {start: 0}, [(0, start)]
    while frontier:
        cost, state = heapq.heappop(frontier)
        if cost > best[state]:
            continue
        x, y, direction, key = state
        ahead = (x + steps[direction][0], y + steps[direction][1])
        if ahead in targets and (done := finish(ahead, key)) is not None:
            return cost + done
        moves = [(1, (x, y, (direction - 1) % 4, key)), (1, (x, y, (direction + 1) % 4, key))]
        if 0 <= ahead[0] < env.width and 0 <= ahead[1] < env.height:
            obj = env.grid.get(*ahead)
            if obj is None or obj.can_overlap() or (obj.type == "door" and obj.is_open):
                moves.append((1, (*ahead, direction, key)))
            elif obj.type == "door" and (not obj.is_locked or key == obj.color):
                moves.append((2, (*ahead, direction, key)))  # toggle, then step through
            elif obj.type == "key" and obj.color == key:  # the cell of the key now carried (picked up)
                moves.append((1, (*ahead, direction, key)))
            elif obj.type == "key" and not key:
                moves.append((1 + hands_full, (x, y, direction, obj.color)))
        for extra, nxt in moves:
            if cost + extra < best.get(nxt, math.inf):
                best[nxt] = cost + extra
                heapq.heappush(frontier, (cost + extra, nxt))
    return None


def path_progress(start: int | None, now: int | None) -> float:
    """Progress in [0, 1] from the remaining path: 1 − now / start (1 when it started there); NaN without a path."""
    if start is None or now is None:
        return math.nan
    return 1.0 if start == 0 else float(np.clip(1 - now / start, 0, 1))


def make_env(task: str, seed: int | None = None, render_size: int = 64) -> gym.Env:
    """A BabyAI level ("GoToRedBall" or "BabyAI-GoToRedBall-v0") as a `BabyAIEnv`; `seed` seeds the first reset."""
    env = gym.make(_LEVELS[level_name(task)])
    env.action_space.seed(seed)
    return BabyAIEnv(env, seed=seed, render_size=render_size)


def other_task(env: gym.Env, rng: np.random.Generator):
    """Another instruction in the same scene, for a hard negative: pick up (for pick-up and put-next missions) or
    go to an object that the mission does not mention; None if the scene has no such object."""
    env = env.unwrapped
    descs = [getattr(env.instrs, name) for name in ("desc", "desc_move", "desc_fixed") if hasattr(env.instrs, name)]
    named = {(obj.type, obj.color) for desc in descs for obj in desc.obj_set}
    others = sorted({(obj.type, obj.color) for obj in env.grid.grid
                     if obj is not None and obj.type in ("ball", "box", "key")} - named)
    if not others:
        return None
    instr_type = GoToInstr if isinstance(env.instrs, GoToInstr) else PickupInstr
    instr = instr_type(ObjDesc(*others[rng.integers(len(others))]))
    instr.reset_verifier(env)
    return instr


def rollout(
    task: str,
    seed: int,
    policy: str = "expert",
    render_size: int = 64,
    max_steps: int | None = None,
    action_noise: float | None = None,
    attempt: int = 0,
) -> Episode:
    """Run one episode, deterministic in (task, seed, policy, attempt); `seed` fixes the scene and mission.

    Policies: "expert" (`BabyAIBot`), "random" (uniform over left/right/forward), "noisy_expert" (the expert,
    but with probability `action_noise`, default 0.8, a random move instead), "other_task" (the expert of another
    instruction in the same scene, `other_task`, until it completes that one; "random" where the scene has no
    other object). `attempt` > 0 draws the policy's randomness anew in the same scene. Stops at termination,
    truncation or after `max_steps` actions. `progress` is 1 − (remaining path / initial path) to the mission's
    object (`remaining_path`), reaching 1 on success; None for missions without a single object to reach.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; valid policies: {', '.join(POLICIES)}")
    noise = POLICIES[policy] if action_noise is None else action_noise
    rng = np.random.default_rng(seed if attempt == 0 else [seed, attempt])
    env = make_env(task, render_size=render_size)
    performed = None

    def make_policy(env):
        nonlocal policy, performed
        instrs = env.unwrapped.instrs
        target = other_task(env, rng) if policy == "other_task" else instrs
        if target is None:
            policy = "random"
        if policy == "random":
            return lambda obs, info: int(rng.choice(_MOVE_ACTIONS))
        if target is not instrs:
            performed = target.surface(env.unwrapped)
        env.unwrapped.instrs = target  # the bot plans for `target`; the env keeps checking its own mission
        bot = BabyAIBot(env)
        env.unwrapped.instrs = instrs
        last = []

        def act(obs, info):
            if target is not instrs and last and target.verify(last[-1]) == "success":
                return None
            # the bot must see every step, including the random ones, to keep its map and plan current
            expert_action = bot.replan(last[-1] if last else None)
            last.append(int(rng.choice(_MOVE_ACTIONS)) if rng.random() < noise else int(expert_action))
            return last[-1]

        return act

    frames, states, actions, infos = record(env, seed, make_policy, max_steps)
    env.close()
    success_step = first_success(infos)
    progress = np.array([info["progress"] for info in infos], np.float32)
    if np.isnan(progress).any():
        progress = None
    elif success_step is not None:
        progress[success_step:] = 1.0
    return Episode(np.stack(frames), np.stack(states), np.array(actions, dtype=np.int64), infos[-1]["mission"],
                   success_step is not None, level_name(task), seed, policy, success_step, progress=progress,
                   performed=performed)


SUITE = EnvSuite(
    name="babyai",
    default_tasks=("GoToRedBall",),
    canonical_task=level_name,
    sentences=lambda task, mission: paraphrases(mission),  # missions vary per episode: reword the episode's own
    make_env=make_env,
    env_class=BabyAIEnv,
    rollout=rollout,
    policies=tuple(POLICIES),
    render_size=64,
    max_steps=None,
)
