"""Train a progress critic's head on cached tower features (called by rewards/train.py for `--objective progress`).

Each batch mixes three kinds of (first frame, current frame, sentence) -> target examples:
- own: a video's frame with its task (or a paraphrase) and its progress label (`progress_targets`);
- mismatched: a successful video's frame with another task's sentence, target 0 (the reward must read the task);
- rewound: a success played backwards from its last frame (the first frame is the success's end), target 0
  (undoing a task is not progress);
- performed: a hard negative (another task's expert acting in this task's scene) with the sentence of the task it
  performed, labelled by time along its recording as a success is: the scene's own task stays low on it (its
  failure label), so the head must read which task the motion does, not only the scene;
and, with `--rank-weight`, pairs of frames of one success in time order for Rank2Reward's ranking term.

`--objective distill --teacher CRITIC` trains the same head to match a slower critic: own examples take the
teacher's per-frame values instead of the labels, so every video teaches, failed and unlabelled ones too.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from rewards.backbones import backbone_spec, load_backbone
from rewards.checkpoint import save_checkpoint
from rewards.base import RewardModel, Score
from rewards.evaluate import evaluate, is_hard_negative, task_key
from rewards.feature_cache import cache_entries, dataset_features, save_entry
from rewards.math import value_difference_rewards
from rewards.progress.load import load_progress_critic
from rewards.progress.model import ProgressConfig, ProgressHead, progress_loss
from rewards.registry import load_model
from rewards.text import shared_minilm
from rewards.video import decode_video, read_manifest

KINDS = ("own", "mismatched", "rewound", "performed")


def progress_targets(row: dict, num_frames: int, done_margin: float = 0.0) -> np.ndarray | None:
    """Per-frame progress labels [T] in [0, 1], or None where a row has none.

    Successes: time along the recording (ReWiND's label), read through `source_frames` for time-warped replays, so
    a pause holds its progress. Failures, and a learning policy's recorded episodes (kind "rollout", whose time is
    not progress: it wanders before it succeeds): the manifest's `progress` (Meta-World: the share of the
    hand-to-object plus object-to-target distance closed; BabyAI: of the path to the mission's object), which
    stays low when nothing is achieved.
    `done_margin` m > 0 keeps every frame before a success's last below 1 − m (labels scaled by 1 − m), so the
    step that completes the task pays at least m: a policy cannot collect nearly all of the return by stopping one
    action short (facing the ball without picking it up).
    """
    if row["success"] and row.get("kind") != "rollout":
        source = np.asarray(row.get("source_frames") or np.arange(num_frames), np.float32)
        labels = source / max(float(source.max()), 1.0)
        return np.where(labels < 1.0, labels * (1.0 - done_margin), 1.0).astype(np.float32)
    if row.get("progress") is not None:
        return np.asarray(row["progress"], np.float32)[:num_frames] * (1.0 - done_margin)
    return None


def teacher_values(dataset: str | Path, rows: list[dict], teacher: RewardModel,
                   progress: bool = True) -> list[np.ndarray]:
    """Each row's video scored by `teacher` for the row's own task: per-frame values float32 [T], in row order.

    Cached like the tower features, in `<dataset>/features/teacher-<name>-<weights version>/`, so a slow teacher
    is paid once per dataset and a retrained teacher misses the cache."""
    directory = Path(dataset) / "features" / f"teacher-{Path(teacher.name).name}-{teacher.version}"
    paths, missing = cache_entries(directory, rows)
    for i in tqdm(missing, desc=f"teacher {teacher.name}", disable=not progress or not missing):
        values = teacher.score(decode_video(rows[i]["path"]), rows[i]["task"]).values
        save_entry(paths[i], np.asarray(values, np.float32))
    return [np.load(path) for path in paths]


class ProgressBatches:
    """Draws batches of the three example kinds from one split's cached features."""

    def __init__(self, rows: list[dict], features: list[np.ndarray], sentence_features: dict[str, torch.Tensor],
                 shares: tuple[float, float, float], task_sentences: dict[frozenset, list[str]],
                 done_margin: float = 0.0, own_targets: list[np.ndarray] | None = None):
        """`task_sentences`: every task of the dataset (by `task_key`) -> its wordings, for mismatched examples.
        `own_targets`: per-frame targets of own examples for every video (a teacher's values) instead of the
        labels; the ranking pairs keep the labels' time order."""
        self.rows, self.features, self.sentence_features = rows, features, sentence_features
        self.targets = [progress_targets(row, len(f), done_margin) for row, f in zip(rows, features)]
        self.own_targets = self.targets if own_targets is None else own_targets
        self.labelled = [i for i, t in enumerate(self.own_targets) if t is not None]
        self.successes = [i for i, row in enumerate(rows) if row["success"]]
        if not self.successes:
            raise ValueError("the split has no successful videos")
        # the ranking term's pairs need labels that rise with time (a rollout's progress may fall back)
        self.rankable = [i for i in self.successes
                         if np.ptp(self.targets[i]) > 0 and np.all(np.diff(self.targets[i]) >= 0)]
        self.performers = [i for i, row in enumerate(rows) if is_hard_negative(row)]
        self.shares = np.pad(np.asarray(shares, float), (0, len(KINDS) - len(shares)))  # a missing share is 0
        self.shares /= self.shares.sum()
        if self.shares[KINDS.index("performed")] > 0 and not self.performers:
            raise ValueError("performed examples need hard negatives (failures whose row names the task performed)")
        self.other_tasks = [[texts for key, texts in task_sentences.items() if key != task_key(row)] for row in rows]
        if self.shares[KINDS.index("mismatched")] > 0 and not all(self.other_tasks[i] for i in self.successes):
            raise ValueError("mismatched examples need at least two tasks in the dataset")

    @staticmethod
    def _pick(options: list, rng: np.random.Generator):
        return options[rng.integers(len(options))]

    def _sentence(self, row: dict, rng: np.random.Generator) -> str:
        return self._pick([row["task"], *(row.get("paraphrases") or [])], rng)

    def _frame(self, i: int, rng: np.random.Generator, last_share: float = 0.25) -> int:
        """A random frame, the last one a quarter of the time (where successes and failures differ most)."""
        length = len(self.features[i])
        return length - 1 if rng.random() < last_share else int(rng.integers(length))

    def draw(self, batch_size: int, rng: np.random.Generator, device: str):
        """-> start [B, C, h, w], now [B, C, h, w], sentence [B, D], target [B] (float tensors on `device`)."""
        starts, nows, sentences, targets = [], [], [], []
        for kind in rng.choice(len(KINDS), size=batch_size, p=self.shares):
            if KINDS[kind] == "own":
                i = self.labelled[rng.integers(len(self.labelled))]
                t = self._frame(i, rng)
                start, target, sentence = 0, float(self.own_targets[i][t]), self._sentence(self.rows[i], rng)
            elif KINDS[kind] == "performed":
                i = self._pick(self.performers, rng)
                t, length = self._frame(i, rng), len(self.features[i])
                start, target, sentence = 0, t / max(length - 1, 1), self.rows[i]["performed"]
            else:
                i = self.successes[rng.integers(len(self.successes))]
                t, target = self._frame(i, rng), 0.0
                if KINDS[kind] == "mismatched":
                    start, sentence = 0, self._pick(self._pick(self.other_tasks[i], rng), rng)
                else:  # rewound: from the success's end back towards its start
                    start, t = len(self.features[i]) - 1, int(rng.integers(len(self.features[i])))
                    sentence = self._sentence(self.rows[i], rng)
            starts.append(self.features[i][start])
            nows.append(self.features[i][t])
            sentences.append(self.sentence_features[sentence])
            targets.append(target)
        return (_stacked(starts, device), _stacked(nows, device), torch.stack(sentences).to(device),
                torch.tensor(targets, device=device))

    def draw_pairs(self, count: int, rng: np.random.Generator, device: str):
        """Two frames of one successful video in time order, whose labels differ:
        -> start, earlier, later [P, C, h, w] and sentence [P, D]."""
        if not self.rankable:
            raise ValueError("ranking pairs need a successful video whose progress labels differ")
        starts, earlier, later, sentences = [], [], [], []
        while len(starts) < count:
            i = self._pick(self.rankable, rng)
            a, b = sorted(rng.integers(len(self.features[i]), size=2))
            if self.targets[i][b] <= self.targets[i][a]:
                continue
            starts.append(self.features[i][0])
            earlier.append(self.features[i][a])
            later.append(self.features[i][b])
            sentences.append(self.sentence_features[self._sentence(self.rows[i], rng)])
        return _stacked(starts, device), _stacked(earlier, device), _stacked(later, device), torch.stack(sentences).to(device)


def _stacked(arrays: list[np.ndarray], device: str) -> torch.Tensor:
    """Cached float16 feature maps -> one float32 batch on `device`."""
    return torch.from_numpy(np.stack(arrays)).to(device).float()


class CachedFeatureScorer:
    """The progress reward over cached tower features instead of frames, for `evaluate()` during training: rows
    carry their features as `frames`, so validation costs no tower pass."""

    goal_kinds, version = ("text",), "training"

    def __init__(self, head: ProgressHead, sentence_features: dict[str, torch.Tensor], device: str):
        self.name, self.head, self.sentence_features, self.device = "progress@training", head, sentence_features, device

    @torch.no_grad()
    def score_batch(self, trajectories, goals) -> list[Score]:
        scores = []
        for features, goal in zip(trajectories, goals):
            maps = torch.from_numpy(np.asarray(features)).to(self.device)
            values = self.head.video_values(maps, self.sentence_features[goal].to(self.device)).cpu().numpy()
            scores.append(Score(values=values, rewards=value_difference_rewards(values)))
        return scores


def validation_score(report: dict) -> float:
    """What checkpoints are chosen by: the mean of VOC, the success/failure AUROC of the return and how often a
    success's own task beats another (the loss is not it: ranking keeps improving after calibration worsens)."""
    return float(np.mean([report["voc"], report["auroc_return"], (report["own_task"] or {}).get("ranked_correctly", 0)]))


def train_progress(args, command_line: str, distill: bool = False) -> Path:
    """Train the head (see the module docstring), on the labels or, with `distill`, on `args.teacher`'s values;
    keeps the checkpoint with the best `validation_score`."""
    if distill and not args.teacher:
        raise ValueError("--objective distill needs --teacher: a shipped critic's name or a checkpoint directory")
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    rows = read_manifest(args.data)
    spec = backbone_spec(args.backbone)
    tower = load_backbone(args.backbone, args.device)
    if not args.frame_scales or min(args.frame_scales) <= 0:
        raise ValueError(f"frame_scales must be positive factors, got {args.frame_scales}")
    # each rescale of the dataset is a copy of its videos: the rows repeat once per scale, with that scale's features
    features = [f for scale in args.frame_scales
                for f in dataset_features(args.data, rows, tower, args.image_size, args.device, scale=scale)]
    rows = rows * len(args.frame_scales)
    # every sentence validation may score: tasks, their paraphrases, and what other-task failures performed
    texts = sorted({text for row in rows
                    for text in [row["task"], *(row.get("paraphrases") or []), row.get("performed")] if text})
    sentence_features = dict(zip(texts, shared_minilm(args.device)(texts).cpu()))

    task_sentences: dict[frozenset, list[str]] = {}
    for row in rows:
        task_sentences.setdefault(task_key(row), [row["task"], *(row.get("paraphrases") or [])])
    has_val = any(row["success"] and row.get("split") == "val" for row in rows)  # a tiny set may have none
    chosen = [i for i, row in enumerate(rows) if row.get("split", "train") == "train"]
    train_rows = [rows[i] for i in chosen]
    taught = teacher_values(args.data, train_rows, load_model(args.teacher, args.device)) if distill else None
    train = ProgressBatches(train_rows, [features[i] for i in chosen], sentence_features,
                            tuple(args.progress_shares), task_sentences, args.done_margin, own_targets=taught)
    val_split = "val" if has_val else "train"
    val_rows = [{**row, "frames": features[i]} for i, row in enumerate(rows) if row.get("split", "train") == val_split]
    per_scale = max(1, len(val_rows) // len(args.frame_scales))  # the first `val_videos` of each scale's copy
    val_rows = [row for k, row in enumerate(val_rows) if k % per_scale < args.val_videos // len(args.frame_scales)]
    config = ProgressConfig(backbone=spec.name, backbone_digest=tower.digest, image_size=args.image_size,
                            mean=spec.mean, std=spec.std, interpolation=spec.interpolation,
                            feature_channels=spec.channels, hidden=args.embed_dim, dropout=args.dropout)
    head = ProgressHead(config).to(args.device)
    if args.init:  # fine-tune: the flags must describe the saved head, which its tower, size and width must match
        saved = load_progress_critic(args.init, args.device)[0].head
        if (saved.config.backbone, saved.config.image_size, saved.config.hidden) != (spec.name, args.image_size,
                                                                                       args.embed_dim):
            raise ValueError(f"--init {args.init} is a {saved.config.backbone} head at {saved.config.image_size} px "
                             f"with width {saved.config.hidden}: pass --backbone, --image-size and --embed-dim to match")
        head.load_state_dict(saved.state_dict())
    scorer = CachedFeatureScorer(head, sentence_features, args.device)
    optimizer = torch.optim.AdamW(head.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    out = Path(args.out or "runs/progress")
    out.mkdir(parents=True, exist_ok=True)
    log = (out / "train_log.jsonl").open("w")
    best, started = -float("inf"), time.time()
    eval_every = args.eval_every or 250
    progress = tqdm(range(1, args.steps + 1), desc="train progress")
    for step in progress:
        head.train()
        pairs = train.draw_pairs(args.batch_size // 2, rng, args.device) if args.rank_weight else None
        loss, metrics = progress_loss(head, *train.draw(args.batch_size, rng, args.device), pairs=pairs,
                                      rank_weight=args.rank_weight)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        record = {"step": step, "seconds": round(time.time() - started, 1), **metrics}
        if step % eval_every == 0 or step == args.steps:
            head.eval()
            report = evaluate(scorer, val_rows, split="all", progress=False)
            record |= {"val_voc": report["voc"], "val_auroc": report["auroc_return"],
                       "val_own_task": (report["own_task"] or {}).get("ranked_correctly"),
                       "val_score": validation_score(report)}
            if record["val_score"] > best:
                best = record["val_score"]
                taught_by = {"teacher": args.teacher} if distill else {}
                save_checkpoint(head, out, extra={"trained_with": command_line, "steps": step, "dataset": str(args.data),
                                                  "val_score": round(best, 4), "frame_scales": args.frame_scales,
                                                  **taught_by})
            progress.set_postfix(loss=f"{metrics['loss']:.3f}", val_voc=report["voc"], val_auroc=report["auroc_return"])
        if step % args.log_every == 0 or "val_score" in record:
            log.write(json.dumps(record) + "\n")
            log.flush()
    log.close()
    return out
