"""Meta-World v3 adapter: state observations for the policy, RGB frames, a task sentence and success for the reward.

Same face as `envs.babyai`: `make_env(task, seed, render_size)` returns a gymnasium Env whose info carries
`frame` (uint8 [S, S, 3] from the "corner" camera), `mission` (a sentence; Meta-World has no language of its own)
and `success`; `rollout` records one episode of a scripted expert (`metaworld.policies`) or a failure policy.
Scenes come from `metaworld.MT1` (50 goals per benchmark seed): env seed s is goal s % 50 of `MT1(seed=s // 50)`,
so every seed is its own scene and a fixed seed is the same scene on every machine.
"""

from __future__ import annotations

import atexit
import copy
import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless offscreen rendering; must precede the mujoco import

import warnings
import weakref
from functools import lru_cache

import gymnasium as gym
import metaworld
import mujoco
import numpy as np
from metaworld.policies import ENV_POLICY_MAP

from envs.episode import Episode, first_success, record
from envs.suites import EnvSuite

# task -> sentences: the first is the task's description, the others paraphrase it (paraphrase id = index)
TASKS: dict[str, tuple[str, ...]] = {
    "reach": ("reach the goal position", "move the gripper to the target", "put the robot hand on the goal point",
              "reach toward the target location"),
    "push": ("push the puck to the goal", "slide the puck to the target", "shove the puck onto the goal spot",
             "push the disc over to the target location"),
    "pick-place": ("pick up the puck and place it at the goal", "grasp the puck and put it on the target",
                   "lift the puck and carry it to the goal", "pick the disc up and set it down at the target"),
    "door-open": ("open the door", "pull the door open", "swing the door open", "open the cabinet door"),
    "door-close": ("close the door", "push the door shut", "swing the door closed", "shut the open door"),
    "drawer-open": ("open the drawer", "pull the drawer out", "slide the drawer open", "pull out the drawer"),
    "drawer-close": ("close the drawer", "push the drawer shut", "slide the drawer closed", "push the drawer in"),
    "button-press": ("press the button", "push the button in", "push the button on the box",
                     "press the button from the front"),
    "window-open": ("open the window", "slide the window open", "push the window open sideways",
                    "open the sliding window"),
    "window-close": ("close the window", "slide the window shut", "push the window closed sideways",
                     "close the sliding window"),
    "plate-slide": ("slide the plate into the goal", "push the plate into the net", "shove the plate forward into the goal",
                    "slide the plate forward into the cage"),
    "plate-slide-back": ("slide the plate back out of the goal", "pull the plate back out of the net",
                         "drag the plate backwards out of the goal", "slide the plate back toward the robot"),
}
# task -> a different task in the same scene, whose expert makes a hard negative. Left out: button-press (no
# sibling scene), reach (the push expert's hand passes the reach goal) and window-open (the window-close expert
# opened the window in a measured scene); their "other_task" episodes fall back to random actions
SAME_SCENE = {
    "push": "reach", "pick-place": "push", "door-open": "door-close", "door-close": "door-open",
    "drawer-open": "drawer-close", "drawer-close": "drawer-open", "window-close": "window-open",
    "plate-slide": "plate-slide-back", "plate-slide-back": "plate-slide",
}
# Meta-World reports obj_to_target = 0 for door-open; its success test measures the handle's x to the target
_DISTANCE = {"door-open": lambda env, obs, info: abs(obs[4] - env._target_pos[0])}
# tasks whose target is for the hand itself: no object to reach first
_HAND_TASKS = {"reach"}
#: the grid (m) the rendered meshes are welded to: the arm's ~68k triangles become ~14k, which software GL draws
#: ~3x faster, and at the critics' 64-128 px a frame changes by under one grey level on average
RENDER_MESH_CELL_M = 0.01
POLICIES = {"expert": 0.0, "random": 1.0, "noisy_expert": 1.0, "other_task": 0.0}
GOALS_PER_BENCHMARK = 50  # metaworld.MT1 samples this many goals per benchmark seed


def task_name(task: str) -> str:
    """Canonical short name ("drawer-open") for a short name or a Meta-World id ("drawer-open-v3")."""
    name = task.removesuffix("-v3")
    if name not in TASKS:
        raise ValueError(f"unknown Meta-World task {task!r}; valid names: {', '.join(TASKS)}")
    return name


def coarse_meshes(model: mujoco.MjModel, cell: float) -> mujoco.MjModel:
    """A copy of `model` to render from, its meshes simplified by vertex clustering: the vertices in one grid cube
    of side `cell` merge into the first of them and the triangles that collapse are dropped. Physics keeps the
    full model; the scene reads every pose from the shared `MjData`, so both draw the same state."""
    coarse = copy.copy(model)
    for mesh in range(model.nmesh):
        vertices = model.mesh_vert[model.mesh_vertadr[mesh]:][:model.mesh_vertnum[mesh]]
        first_face, num_faces = model.mesh_faceadr[mesh], model.mesh_facenum[mesh]
        faces = slice(first_face, first_face + num_faces)
        _, first, cube = np.unique(np.floor(vertices / cell), axis=0, return_index=True, return_inverse=True)
        welded = first[cube.ravel()][model.mesh_face[faces]]  # face corners as indices of their cube's vertex
        keep = (welded[:, 0] != welded[:, 1]) & (welded[:, 1] != welded[:, 2]) & (welded[:, 0] != welded[:, 2])
        coarse.mesh_facenum[mesh] = num_kept = int(keep.sum())
        kept = slice(first_face, first_face + num_kept)
        coarse.mesh_face[kept] = welded[keep]
        coarse.mesh_facenormal[kept] = model.mesh_facenormal[faces][keep]
        coarse.mesh_facetexcoord[kept] = model.mesh_facetexcoord[faces][keep]
    return coarse


@lru_cache(maxsize=16)
def _benchmark(task: str, benchmark_seed: int) -> metaworld.MT1:
    """MT1 draws its 50 goals with 50 env resets (~1-2 s): build each (task, seed block) once per process."""
    return metaworld.MT1(f"{task}-v3", seed=benchmark_seed)


class MetaWorldEnv(gym.Env):
    """One Meta-World task with flat float32 state observations (39 values: hand, gripper, objects, goal),
    actions in [-1, 1]^4 (hand xyz delta, gripper), and `info["frame"]` (unless `render_size` is 0), `info["mission"]`, `info["success"]`,
    `info["progress"]` next to Meta-World's own info keys.

    Rendering uses one `mujoco.Renderer` with shadows, reflections and multisampling off (~6x faster than
    `env.render()`), drawing meshes welded to a `render_mesh_cell` grid (`coarse_meshes`; 0: the full meshes).
    The "corner" camera's up axis points down, so its image is rotated by 180 degrees.
    Progress is the share of the task's initial remaining path closed: the hand's distance to the object plus
    the object's distance to its target (`obj_to_target`), clipped to [0, 1], and 1 from the first success on.
    The reach term makes progress move before contact, as the BabyAI bot's remaining path does.
    Episodes truncate after `max_steps` steps (Meta-World: 500).
    `reset(seed=s)` builds scene s; a reset without a seed takes the next scene after the previous one.
    """

    metadata = {"render_modes": ["rgb_array"]}
    render_mode = "rgb_array"

    def __init__(self, task: str, seed: int | None = None, render_size: int = 84, paraphrase: int = 0,
                 max_steps: int = 500, camera: str = "corner", render_mesh_cell: float = RENDER_MESH_CELL_M):
        self.task = task_name(task)
        if not 0 <= paraphrase < len(TASKS[self.task]):
            raise ValueError(f"paraphrase must be in [0, {len(TASKS[self.task])}), got {paraphrase}")
        self.mission = TASKS[self.task][paraphrase]
        self.render_size, self.max_steps, self.render_frames = render_size, max_steps, True
        self._seed = 0 if seed is None else seed
        self._seeded = False  # the first reset without a seed uses `seed`, later ones the next scene
        self.env = _benchmark(self.task, self._seed // GOALS_PER_BENCHMARK).train_classes[f"{self.task}-v3"]()
        self.env.set_task(self._scene(self._seed))
        self.env.model.vis.quality.offsamples = 0  # no MSAA: the renderer's buffers are sized from this
        self.renderer = None  # render_size 0: no frames, no GL context, no render model (state-only training)
        if render_size:
            render_model = coarse_meshes(self.env.model, render_mesh_cell) if render_mesh_cell else self.env.model
            self.renderer = mujoco.Renderer(render_model, render_size, render_size)
            for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION):
                self.renderer.scene.flags[flag] = False
        # free the GL context while EGL is still loaded (a renderer left to interpreter exit errors on __del__)
        self._close_renderer = weakref.finalize(self, self.renderer.close) if self.renderer else lambda: None
        self.camera = mujoco.mj_name2id(self.env.model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
        if self.camera < 0:
            raise ValueError(f"unknown camera {camera!r}")
        space = self.env.sawyer_observation_space
        self.observation_space = gym.spaces.Box(space.low.astype(np.float32), space.high.astype(np.float32),
                                                dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
        self._start_distance = 1.0
        self._solved = False

    def _scene(self, seed: int) -> metaworld.Task:
        return _benchmark(self.task, seed // GOALS_PER_BENCHMARK).train_tasks[seed % GOALS_PER_BENCHMARK]

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is None:  # the constructor's seed first, then the scene after the previous one
            seed = self._seed + self._seeded
        self._seed, self._seeded = seed, True
        self.env.set_task(self._scene(seed))
        self.env.max_path_length = self.max_steps
        self.env.reset()
        # Meta-World's reset leaves poses set in reset_model (e.g. the window) unpropagated: forward the model so
        # the first observation and frame show the real scene; the stacked previous state is the current one
        mujoco.mj_forward(self.env.model, self.env.data)
        obs = self.env._get_obs()
        obs[18:36] = obs[:18]
        # the distance to cover; evaluate_state only reads the state (a zero action rewards nothing)
        _, info = self.env.evaluate_state(obs, np.zeros(4, np.float32))
        self._start_distance = max(self._distance(obs, info), 1e-6)
        self._solved = False
        return obs.astype(np.float32), self._info(obs, info, success=False)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(np.asarray(action, np.float32))
        return obs.astype(np.float32), float(reward), terminated, truncated, self._info(obs, info, bool(info["success"]))

    def _info(self, obs: np.ndarray, info: dict, success: bool) -> dict:
        self._solved = self._solved or success
        progress = 1.0 if self._solved else float(np.clip(1 - self._distance(obs, info) / self._start_distance, 0, 1))
        # render_frames: off on the steps whose frame a FrameStride drops
        frame = {"frame": self.render()} if self.renderer is not None and self.render_frames else {}
        return {**info, **frame, "mission": self.mission, "success": success, "progress": progress}

    def _distance(self, obs: np.ndarray, info: dict) -> float:
        """The path left: hand to object (obs[0:3] to obs[4:7]) plus object to target (Meta-World's
        obj_to_target, or the success test's distance)."""
        to_target = _DISTANCE[self.task](self.env, obs, info) if self.task in _DISTANCE else info["obj_to_target"]
        reach = 0.0 if self.task in _HAND_TASKS else np.linalg.norm(obs[:3] - obs[4:7])
        return float(reach + to_target)

    def render(self) -> np.ndarray:
        """The corner view, upright: uint8 [render_size, render_size, 3]."""
        self.renderer.update_scene(self.env.data, camera=self.camera)
        return self.renderer.render()[::-1, ::-1].copy()

    def close(self):
        self._close_renderer()
        self.env.close()


def make_env(task: str, seed: int | None = None, render_size: int = 84, **kwargs) -> MetaWorldEnv:
    """A Meta-World task ("drawer-open" or "drawer-open-v3") as a `MetaWorldEnv`; `seed` picks the first scene.

    Keyword arguments go to `MetaWorldEnv` (paraphrase, max_steps, camera).
    """
    return MetaWorldEnv(task, seed=seed, render_size=render_size, **kwargs)


def expert(task: str):
    """The scripted expert of `task`: obs -> action."""
    return ENV_POLICY_MAP[f"{task_name(task)}-v3"]().get_action


def rollout(
    task: str,
    seed: int,
    policy: str = "expert",
    render_size: int = 84,
    max_steps: int = 200,
    action_noise: float | None = None,
    attempt: int = 0,
    steps_after_success: int | None = 10,
    env: MetaWorldEnv | None = None,
) -> Episode:
    """Run one episode, deterministic in (task, seed, policy, attempt); `seed` fixes the scene.

    Policies: "expert" (`metaworld.policies`), "random" (uniform actions), "noisy_expert" (the expert plus
    Gaussian noise of std `action_noise`, default 1.0, clipped), "other_task" (the expert of `SAME_SCENE[task]`
    in this task's scene; "random" for a task without one). The episode ends `steps_after_success` steps after
    the first success (None: never early) or after `max_steps` steps. Pass `env` (a `MetaWorldEnv` of `task` at
    `render_size`) to reuse its renderer across episodes. `attempt` > 0 draws the policy's randomness anew.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; valid policies: {', '.join(POLICIES)}")
    task = task_name(task)
    noise = POLICIES[policy] if action_noise is None else action_noise
    if policy == "other_task" and task not in SAME_SCENE:
        policy = "random"
    rng = np.random.default_rng(seed if attempt == 0 else [seed, attempt])
    own_env = env is None
    env = make_env(task, render_size=render_size) if own_env else env
    performed = SAME_SCENE[task] if policy == "other_task" else None
    scripted = expert(performed or task)

    def make_policy(env):
        def act(obs, info):
            if policy == "random":
                return rng.uniform(-1, 1, 4).astype(np.float32)
            action = scripted(obs) + noise * rng.standard_normal(4) if noise else scripted(obs)
            return np.clip(action, -1, 1).astype(np.float32)

        return act

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the experts warn when their gains saturate the actions
        frames, states, actions, infos = record(env, seed, make_policy, max_steps, steps_after_success)
    if own_env:
        env.close()
    success_step = first_success(infos)
    return Episode(
        np.stack(frames), np.stack(states), np.stack(actions) if actions else np.zeros((0, 4), np.float32),
        infos[0]["mission"], success_step is not None, task, seed, policy, success_step,
        progress=np.array([info["progress"] for info in infos], np.float32),
        performed=TASKS[performed][0] if performed else None,
    )


_SHARED_ENVS: dict[tuple[str, int], MetaWorldEnv] = {}


def _shared_env(task: str, render_size: int) -> MetaWorldEnv:
    """One env (and GL context) per task and size in a process, reused across generated episodes."""
    if (task, render_size) not in _SHARED_ENVS:
        _SHARED_ENVS[task, render_size] = make_env(task, render_size=render_size)
        # exit handlers run last-registered first: this one, before the renderers' own finalizers
        atexit.register(_SHARED_ENVS[task, render_size].close)
    return _SHARED_ENVS[task, render_size]


def rollout_reusing_env(task: str, seed: int, policy: str = "expert", render_size: int = 84, **kwargs) -> Episode:
    """`rollout` on this process's shared env of (task, render_size): a renderer per episode costs seconds."""
    return rollout(task, seed, policy, render_size=render_size, env=_shared_env(task_name(task), render_size), **kwargs)


SUITE = EnvSuite(
    name="metaworld",
    default_tasks=tuple(TASKS),
    canonical_task=task_name,
    sentences=lambda task, mission: TASKS[task_name(task)],
    make_env=make_env,
    env_class=MetaWorldEnv,
    rollout=rollout_reusing_env,
    policies=tuple(POLICIES),
    render_size=84,
    max_steps=150,  # the experts succeed within ~100 steps (Meta-World's own limit is 500)
)
