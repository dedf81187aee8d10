"""Offline GRPO: the policy update from pre-generated, pre-scored groups (`train-grpo --rollouts`).

Reads a `scores` table (rollout -> score), so a Makefile can iterate rollout -> score -> train-grpo. Each
completion's advantage is relative to its group (`group_index`), computed once for the whole table with
`rftcli.grpo_loss.group_advantages`; the importance ratio's denominator is the stored per-token
`logprobs` of the sampling policy. The update itself is a transformers `Trainer` (checkpoints, schedules,
gradient accumulation, accelerate/DDP/DeepSpeed) whose `compute_loss` is `rftcli.grpo_loss`.

How it follows TRL's online `GRPOTrainer`, and where it departs:
- Rewards: the weighted sum of the table's `reward_<name>` columns (weights from the score run's
  manifest, or `rewards` given to train-grpo), abstentions ignored; a completion every reward abstained
  on is unscorable (advantage 0), as in TRL.
- The table is one generation batch: `scale_rewards batch` divides by the std over the whole table
  (TRL: over its generation batch), `num_iterations` is the number of passes over it with the old
  log-probs fixed, as TRL's mu.
- Log-probs of the policy being trained come from TRL's chunked LM head (`add_fused_lm_head`) at the
  rollouts' temperature, exactly as TRL computes them; so the stored log-probs must be under that same
  distribution: rollouts sampled with top-p or top-k are refused.
- `dr_grpo` normalises by the rollouts' `max_new_tokens` (TRL: `max_completion_length`).
- Dynamic sampling (DAPO) drops the groups whose rewards do not vary before training; it does not
  sample new groups to fill their place.
- The rollouts must come from the checkpoint being trained (`policy_hash` equals the model's content
  hash) unless `allow_policy_mismatch`: with another policy's log-probs the ratio measures the wrong
  thing, and every token may sit outside the clip range from the first step.
"""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import torch

from rftcli import grpo_loss
from rftcli.rewards import parse_weighted
from rftcli.schema import read_table

_PROMPT_COLUMNS = ("id", "system", "prompt", "images")


@dataclass(frozen=True)
class OfflineData:
    rows: list[dict[str, Any]]
    """One per completion kept: prompt columns, completion_ids, logprobs, finish_reason, advantage, rewards."""
    reward_names: list[str]
    reward_weights: list[float]
    temperature: float
    max_new_tokens: int
    groups: int
    """Groups read (after split and limit)."""
    dropped_groups: int
    """Groups left out by dynamic sampling (zero reward variance)."""
    zero_std_groups: int
    """Groups whose rewards do not vary (dropped or not)."""
    policy_hashes: list[str]

    def check_token_ids(self, path: Path, vocab_size: int) -> None:
        """Refuse completion token ids the model's embedding has no row for (rollouts of another model)."""
        for row in self.rows:
            top = max(row["completion_ids"])
            if top >= vocab_size:
                raise ValueError(f"{path}: row {row['row']}, column 'completion_ids': token id {top} is outside the "
                                 f"model's vocabulary of {vocab_size}; were these rollouts made by another model?")


def _single(table: pa.Table, column: str, path: Path) -> Any:
    values = pc.unique(table[column]).to_pylist()
    if len(values) != 1:
        raise ValueError(f"{path}: column {column!r} holds several values ({', '.join(map(str, values[:4]))}); "
                         "offline GRPO needs rollouts made with one setting")
    return values[0]


def _check_groups(path: Path, table: pa.Table) -> None:
    """A group is the samples of one prompt, each once: advantages are computed within it, so a group mixing
    prompts or repeating a sample would train on wrong advantages without any other sign."""
    owner: dict[int, tuple[str, int]] = {}
    samples: set[tuple[int, int]] = set()
    columns = zip(table["_file_row"].to_pylist(), table["group_index"].to_pylist(), table["id"].to_pylist(),
                  table["sample_index"].to_pylist(), strict=True)
    for row, group, prompt_id, sample in columns:
        first = owner.setdefault(group, (prompt_id, row))
        if first[0] != prompt_id:
            raise ValueError(f"{path}: row {row}, column 'group_index': group {group} holds prompt {prompt_id!r} "
                             f"and, in row {first[1]}, prompt {first[0]!r}; a group is the samples of one prompt")
        if (group, sample) in samples:
            raise ValueError(f"{path}: row {row}, column 'sample_index': sample {sample} of group {group} "
                             "appears twice")
        samples.add((group, sample))
    sizes = Counter(group for group, _ in samples)
    usual, _ = Counter(sizes.values()).most_common(1)[0]
    short = next((group for group, size in sizes.items() if size != usual), None)
    if short is not None:
        raise ValueError(f"{path}: row {owner[short][1]}, column 'group_index': group {short} has {sizes[short]} "
                         f"samples where the others have {usual}; offline GRPO needs whole groups (rows dropped "
                         "after rollout?)")


def reward_weights(path: Path, manifest: dict[str, Any], names: Sequence[str], specs: Sequence[str] | None
                   ) -> list[tuple[str, float]]:
    """(reward column suffix, weight) pairs: `specs` (NAME=WEIGHT, names as in the table) if given, else the
    rewards and weights the score run recorded."""
    if specs:
        chosen = parse_weighted(list(specs))
    else:
        try:
            chosen = [(str(r["name"]), float(r["weight"])) for r in manifest.get("rewards", [])]
        except (TypeError, KeyError, ValueError):
            raise ValueError(f"{path}: its manifest's rewards entry is not a list of {{name, weight}}; pass "
                             "-r NAME=WEIGHT for its reward_<name> columns") from None
        if not chosen:
            raise ValueError(f"{path}: its manifest names no rewards; pass -r NAME=WEIGHT for its reward_<name> columns")
    missing = [n for n, _ in chosen if n not in names]
    if missing:
        raise ValueError(f"{path}: no column reward_{missing[0]}; reward columns: "
                         + ", ".join(f"reward_{n}" for n in names))
    return chosen


def load_offline(path: Path, *, split: str | None, limit: int | None, scale_rewards: str, dynamic_sampling: bool,
                 rewards: Sequence[str] | None, policy_hash: str, allow_policy_mismatch: bool) -> OfflineData:
    """Read and check a scores table, compute advantages, apply dynamic sampling. Raises ValueError with
    one line naming the file and what is wrong."""
    from rftcli.images import check_table_images
    from rftcli.stages.rollout import no_rows_in_split, select_split

    art = read_table(path, ("scores", "rollouts"))
    if art.kind != "scores":
        raise ValueError(f"{path}: a rollouts table has no rewards; run `rftcli score` on it first")
    # Rows are named by their place in the file, whatever the split and limit keep.
    table = select_split(art.table.append_column("_file_row", pa.array(range(art.table.num_rows), pa.int64())), split)
    if limit is not None:
        keep = pc.unique(table["group_index"]).to_pylist()[:limit]
        table = table.filter(pc.is_in(table["group_index"], pa.array(keep, pa.int64())))
    if table.num_rows == 0:
        raise ValueError(no_rows_in_split(path, art.table, split))
    check_table_images(path, table, rows=table["_file_row"].to_pylist())  # the images of the rows used only
    hashes = sorted(pc.unique(table["policy_hash"]).to_pylist())
    if hashes != [policy_hash] and not allow_policy_mismatch:
        raise ValueError(f"{path}: rollouts come from policy {', '.join(hashes)} but the model being trained is "
                         f"{policy_hash}; sample new rollouts from it, or pass --allow-policy-mismatch")
    if _single(table, "top_p", path) < 1.0 or _single(table, "top_k", path) > 0:
        raise ValueError(f"{path}: rollouts were sampled with top-p/top-k; their log-probs are not under the "
                         "temperature-only distribution the GRPO ratio uses. Sample with --top-p 1 --top-k 0")
    temperature = float(_single(table, "temperature", path))
    if not temperature > 0:
        raise ValueError(f"{path}: rollouts sampled at temperature {temperature:g} (greedy or invalid) have no "
                         "sampling distribution for the GRPO ratio; sample with a temperature above 0")
    _check_groups(path, table)
    max_new_tokens = int(_single(table, "max_new_tokens", path))
    chosen = reward_weights(path, art.manifest, art.reward_names, rewards)

    per_func = torch.tensor([[math.nan if v is None else v for v in table[f"reward_{n}"].to_pylist()]
                             for n, _ in chosen], dtype=torch.float32).T           # [N, F]
    weights = torch.tensor([w for _, w in chosen], dtype=torch.float32)            # [F]
    total = (per_func * weights).nansum(dim=1)                                     # [N]
    total[torch.isnan(per_func).all(dim=1)] = math.nan                             # unscorable: NaN
    group_ids = torch.tensor(table["group_index"].to_pylist())                     # [N]
    advantages, zero_std = grpo_loss.group_advantages(total, group_ids, scale_rewards)  # [N], [K]
    ids = torch.unique(group_ids)                                                  # [K] sorted, zero_std's order
    dropped = set(ids[zero_std].tolist()) if dynamic_sampling else set()

    rows = []
    names = [n for n, _ in chosen]
    columns = {c: table[c].to_pylist() for c in _PROMPT_COLUMNS + ("group_index", "completion_ids", "logprobs",
                                                                     "finish_reason", "_file_row")}
    for i in range(table.num_rows):
        if columns["group_index"][i] in dropped:
            continue
        row = {c: columns[c][i] for c in columns}
        row["row"] = row.pop("_file_row")
        if len(row["completion_ids"]) != len(row["logprobs"]) or not row["completion_ids"]:
            raise ValueError(f"{path}: row {row['row']}, column 'logprobs': completion_ids and logprobs must be "
                             "non-empty and equally long")
        row["advantage"] = float(advantages[i])
        row["rewards"] = per_func[i].tolist()
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: every group's rewards are equal (no learning signal); dynamic sampling left nothing")
    return OfflineData(rows=rows, reward_names=names, reward_weights=[w for _, w in chosen], temperature=temperature,
                       max_new_tokens=max_new_tokens, groups=len(ids), dropped_groups=len(dropped),
                       zero_std_groups=int(zero_std.sum()), policy_hashes=hashes)


class RolloutRows(torch.utils.data.Dataset):
    def __init__(self, rows: list[dict[str, Any]]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]


class RolloutCollator:
    """Completion rows -> the tensors TRL's `_compute_loss` reads (same keys), plus rewards for metrics.

    Prompts are chat-templated and tokenized exactly as `rollout` did (`rftcli.generation.encode_prompts`),
    left padded; completions right padded."""

    def __init__(self, processor: Any, mask_truncated_completions: bool = False):
        self.processor = processor
        self.pad_id = processor.tokenizer.pad_token_id or 0
        self.mask_truncated = mask_truncated_completions

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        from rftcli.generation import encode_prompts

        enc = encode_prompts(self.processor, rows, "cpu")
        n, longest = len(rows), max(len(r["completion_ids"]) for r in rows)
        ids = torch.full((n, longest), self.pad_id, dtype=torch.long)      # [N, T]
        mask = torch.zeros((n, longest), dtype=torch.long)                 # [N, T]
        old = torch.zeros((n, longest), dtype=torch.float32)               # [N, T]
        for i, r in enumerate(rows):
            t = len(r["completion_ids"])
            ids[i, :t] = torch.tensor(r["completion_ids"], dtype=torch.long)
            old[i, :t] = torch.tensor(r["logprobs"], dtype=torch.float32)
            # DAPO's overlong masking: a completion cut off at the limit neither rewards nor punishes.
            if not (self.mask_truncated and r["finish_reason"] == "length"):
                mask[i, :t] = 1
        batch = {"prompt_ids": enc["input_ids"], "prompt_mask": enc["attention_mask"], "completion_ids": ids,
                 "completion_mask": mask, "old_per_token_logps": old,
                 "advantages": torch.tensor([r["advantage"] for r in rows], dtype=torch.float32),
                 "rewards_per_func": torch.tensor([r["rewards"] for r in rows], dtype=torch.float32),
                 "completion_lengths": torch.tensor([len(r["completion_ids"]) for r in rows], dtype=torch.float32),
                 "num_images": [len(r["images"] or []) for r in rows]}
        for key, value in enc.items():
            if key in _TOKEN_TYPE_KEYS:  # text positions: the completion extends them with zeros
                batch[key] = torch.cat([value, torch.zeros_like(ids)], dim=1)
            elif key not in ("input_ids", "attention_mask"):
                batch[key] = value  # the image side as the processor gave it (see _forward_inputs)
        return batch


_TOKEN_TYPE_KEYS = ("token_type_ids", "mm_token_type_ids")
# The collated batch's own fields; every other key is a processor output the forward takes as it is (pixel_values,
# Qwen's image_grid_thw, LLaVA-OneVision's image_sizes and batch_num_images, Idefics3's pixel_attention_mask, ...).
_BATCH_FIELDS = ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "old_per_token_logps",
                 "advantages", "rewards_per_func", "completion_lengths", "num_images")


def _forward_inputs(inputs: dict[str, Any]) -> dict[str, Any]:
    """The processor outputs of a collated batch that the model's forward takes beside input ids and mask."""
    return {k: v for k, v in inputs.items() if k not in _BATCH_FIELDS}


def completion_logps(model: Any, inputs: dict[str, Any], entropy: bool = True):
    """Per-token log-probs [N, T] (and entropies) of the completion tokens, through TRL's fused LM head
    (the model must carry it: `trl.trainer.utils.add_fused_lm_head`), as TRL computes them."""
    completion_ids = inputs["completion_ids"]
    input_ids = torch.cat([inputs["prompt_ids"], completion_ids], dim=1)                        # [N, P+T]
    attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)       # [N, P+T]
    t = completion_ids.size(1)
    labels = input_ids.masked_fill(attention_mask == 0, -100)                                   # [N, P+T]
    labels[:, :-t] = -100
    extra = _forward_inputs(inputs)
    out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, fused_lm_head=True, **extra)
    logps = out.log_probs[:, -t:]                                                               # [N, T]
    return logps, (out.entropy[:, -t:] if entropy else None)


def _trainer_class():
    from transformers import Trainer

    class OfflineGRPOTrainer(Trainer):
        """A Trainer whose loss is GRPO's on stored rollouts. `compute_loss` scales for gradient
        accumulation itself (as TRL does), so `loss_is_scaled_for_ga`."""

        loss_is_scaled_for_ga = True

        def __init__(self, *args, settings: grpo_loss.LossSettings, reward_names: Sequence[str],
                     reward_weights: Sequence[float], top_entropy_quantile: float = 1.0, ref_model: Any = None,
                     **kwargs):
            super().__init__(*args, **kwargs)
            self.settings = settings
            self.reward_names = list(reward_names)
            self.reward_weights = list(reward_weights)
            self.top_entropy_quantile = top_entropy_quantile
            if ref_model is not None and self.is_deepspeed_enabled:
                from trl.models import prepare_deepspeed

                ref_model = prepare_deepspeed(ref_model, self.accelerator)  # under ZeRO-3 sharded like the policy
            self.ref_model = ref_model
            self._metrics: dict[str, list[float]] = defaultdict(list)
            self._step_time = 0.0
            self._micro_steps = 0

        def get_batch_samples(self, epoch_iterator, num_batches, device):
            # The micro-batches of one optimizer step, and their valid completion tokens over all processes
            # (dapo and cispo divide by it).
            batches, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
            local = sum((b["completion_mask"].sum() for b in batches), torch.tensor(0))
            return batches, self.accelerator.gather(local.reshape(1).to(device)).sum()

        def training_step(self, model, inputs, num_items_in_batch=None):
            start = time.perf_counter()
            loss = super().training_step(model, inputs, num_items_in_batch)
            self._step_time += time.perf_counter() - start
            self._micro_steps += 1
            if self._micro_steps % self.current_gradient_accumulation_steps == 0:
                self._metrics["step_time"].append(self._step_time)
                self._step_time = 0.0
            return loss

        def _global_mean(self, x: torch.Tensor, mask: torch.Tensor) -> float:
            totals = self.accelerator.reduce(grpo_loss.masked_sum_count(x.detach().float(), mask.float()),
                                             reduction="sum")
            return (totals[0] / totals[1].clamp(min=1.0)).item()

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            mask = inputs["completion_mask"].float()                                           # [N, T]
            with self.accelerator.autocast():
                logps, entropies = completion_logps(model, inputs)                               # [N, T]
            ref_logps = None
            if self.settings.beta != 0.0:
                with torch.no_grad(), self.accelerator.autocast():
                    if self.ref_model is not None:
                        ref_logps, _ = completion_logps(self.ref_model, inputs, entropy=False)
                    else:  # LoRA: the start policy is the model with its adapter switched off (unwrapped:
                        # a no-grad forward needs no DDP gradient sync)
                        with self.model.disable_adapter():
                            ref_logps, _ = completion_logps(self.model, inputs, entropy=False)
            weights = None
            if self.top_entropy_quantile < 1.0:
                weights = self._entropy_mask(entropies, mask)
            steps = self.current_gradient_accumulation_steps if model.training else 1
            tokens = num_items_in_batch if num_items_in_batch is not None else mask.sum() * self.accelerator.num_processes
            parts = grpo_loss.grpo_loss(logps, inputs["old_per_token_logps"], inputs["advantages"], mask,
                                        self.settings, accumulation_steps=steps, step_tokens=tokens,
                                        num_processes=self.accelerator.num_processes, ref_logps=ref_logps,
                                        token_weights=weights)
            self._record(inputs, mask, entropies, parts)
            return parts.loss

        def _entropy_mask(self, entropies: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            # The threshold is a quantile over every process's valid tokens, as in TRL.
            local = entropies.detach()[mask.bool()].float()
            gathered = self.accelerator.gather(self.accelerator.pad_across_processes(local, dim=0, pad_index=-1e9))
            gathered = gathered[gathered != -1e9]
            if gathered.numel() == 0:
                return torch.zeros_like(mask)
            threshold = torch.quantile(gathered, 1 - self.top_entropy_quantile)
            return grpo_loss.high_entropy_mask(entropies.detach(), mask, threshold).float()

        def _record(self, inputs, mask, entropies, parts: grpo_loss.LossParts) -> None:
            m = self._metrics
            m["entropy"].append(self._global_mean(entropies, mask))
            if parts.per_token_kl is not None:
                m["kl"].append(self._global_mean(parts.per_token_kl, mask))
            for key, flags in grpo_loss.clip_fractions(parts.ratio.detach(), inputs["advantages"], self.settings).items():
                m[key].append(self._global_mean(flags, mask))
            rewards = self.accelerator.gather(inputs["rewards_per_func"])                       # [N_all, F]
            total = (rewards * torch.tensor(self.reward_weights, device=rewards.device)).nansum(dim=1)  # [N_all]
            total[torch.isnan(rewards).all(dim=1)] = math.nan  # unscorable rows count in no statistic
            for i, name in enumerate(self.reward_names):
                m[f"rewards/{name}/mean"].append(torch.nanmean(rewards[:, i]).item())
                m[f"rewards/{name}/std"].append(_nanstd(rewards[:, i]))
            m["reward"].append(torch.nanmean(total).item())
            m["reward_std"].append(_nanstd(total))
            m["completions/mean_length"].append(self.accelerator.gather(inputs["completion_lengths"]).mean().item())

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            from rftcli.training import peak_memory

            for key, values in self._metrics.items():
                valid = [v for v in values if not math.isnan(v)]
                logs[key] = sum(valid) / len(valid) if valid else None
            self._metrics.clear()
            logs.update(peak_memory())
            super().log(logs, start_time)

    return OfflineGRPOTrainer


def _nanstd(x: torch.Tensor) -> float:
    x = x[~torch.isnan(x)]
    return float(x.std()) if x.numel() > 1 else math.nan


def build_trainer(*, model: Any, processor: Any, data: OfflineData, args: Any, settings: grpo_loss.LossSettings,
                  mask_truncated_completions: bool, top_entropy_quantile: float, ref_model: Any = None,
                  callbacks: list | None = None):
    """The offline trainer over `data.rows`; `model` already carries the fused LM head (and its adapter)."""
    trainer = _trainer_class()(model=model, args=args, train_dataset=RolloutRows(data.rows),
                               data_collator=RolloutCollator(processor, mask_truncated_completions),
                               processing_class=processor, settings=settings, reward_names=data.reward_names,
                               reward_weights=data.reward_weights, top_entropy_quantile=top_entropy_quantile,
                               ref_model=ref_model, callbacks=callbacks)
    return trainer
