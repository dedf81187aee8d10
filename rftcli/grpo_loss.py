"""GRPO math without I/O: group-relative advantages and the clipped policy loss of each loss type.

Offline train-grpo uses these functions; they follow TRL's `GRPOTrainer` (trl 1.16,
`_generate_and_score_completions` for advantages, `_compute_loss` for the loss) operation for operation,
so that on the same tensors the loss and its gradients agree (tests/test_train_grpo.py checks it against
TRL's own code). Shapes: N completions in a micro-batch, T completion tokens (right padded).

Loss aggregation per type, for one micro-batch of an optimizer step of `accumulation_steps` micro-batches:
    grpo, sapo   mean over sequences of the mean over each sequence's tokens, / accumulation_steps
    bnpo         mean over the micro-batch's tokens, / accumulation_steps
    dr_grpo      sum over tokens / (N * max_completion_length), / accumulation_steps
    dapo, cispo  sum over tokens / (tokens of the whole optimizer step, all processes / processes)
so that summing the micro-batches (and averaging gradients over processes, as DDP does) gives each
type's objective over the optimizer step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo")
SCALE_REWARDS = ("group", "batch", "none")
STD_EPS = 1e-4
"""Added to the standard deviation before dividing, as TRL does."""


# ---------------------------------------------------------------- advantages

def _nanstd(x: torch.Tensor, groups: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Bessel-corrected standard deviation per group ignoring NaN: [N], [N] -> [K] (NaN below 2 values)."""
    valid = ~torch.isnan(x)                                                            # [N]
    filled = torch.where(valid, x, torch.zeros_like(x))                                # [N]
    count = torch.zeros(num_groups, dtype=x.dtype).index_add_(0, groups, valid.to(x.dtype))  # [K]
    mean = torch.zeros(num_groups, dtype=x.dtype).index_add_(0, groups, filled) / count      # [K]
    sq = torch.where(valid, (x - mean[groups]) ** 2, torch.zeros_like(x))              # [N]
    var = torch.zeros(num_groups, dtype=x.dtype).index_add_(0, groups, sq) / count     # [K]
    var = torch.where(count > 1, var * count / (count - 1), torch.full_like(var, float("nan")))  # [K]
    return var.sqrt()


def group_advantages(rewards: torch.Tensor, groups: torch.Tensor, scale: str = "group"
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Group-relative advantages: (reward - group mean) / (std + 1e-4), std per group, over the batch, or
    not at all (`scale` none, Dr. GRPO).

    rewards [N] (NaN: unscorable, every reward abstained; excluded from the statistics, advantage 0),
    groups [N] integer group id per completion -> advantages [N], zero_std [K] (True for groups whose
    rewards do not vary: GRPO learns nothing from them, and DAPO's dynamic sampling drops them).
    """
    if scale not in SCALE_REWARDS:
        raise ValueError(f"scale must be one of {', '.join(SCALE_REWARDS)}, got {scale!r}")
    rewards = rewards.to(torch.float32)
    ids, groups = torch.unique(groups, return_inverse=True)                # groups [N] in 0..K-1
    k = len(ids)
    valid = ~torch.isnan(rewards)                                          # [N]
    filled = torch.where(valid, rewards, torch.zeros_like(rewards))       # [N]
    count = torch.zeros(k).index_add_(0, groups, valid.float())           # [K]
    mean = torch.zeros(k).index_add_(0, groups, filled) / count           # [K]
    group_std = _nanstd(rewards, groups, k)                                # [K]
    if scale == "batch":
        one = torch.zeros_like(groups)                                     # [N] a single group
        std = _nanstd(rewards, one, 1).expand(len(rewards)) if len(rewards) > 1 else torch.zeros_like(rewards)
    else:
        std = group_std[groups]                                            # [N]
    advantages = rewards - mean[groups]                                    # [N]
    if scale != "none":
        advantages = advantages / (std + STD_EPS)
    zero_std = torch.isclose(group_std, torch.zeros_like(group_std))       # [K]
    return torch.nan_to_num(advantages, nan=0.0), zero_std


# ---------------------------------------------------------------- the loss

@dataclass(frozen=True)
class LossSettings:
    loss_type: str = "dapo"
    """grpo, dr_grpo, dapo, bnpo, cispo, sapo."""
    epsilon_low: float = 0.2
    """Lower clip range: ratios below 1 - epsilon_low stop pulling a negative advantage."""
    epsilon_high: float = 0.2
    """Upper clip range (cispo: the largest ratio weight itself)."""
    beta: float = 0.0
    """KL coefficient against the reference policy."""
    importance_sampling_level: str = "token"
    """token: one ratio per token; sequence: the exp of the mean log-ratio of the sequence (GSPO)."""
    max_completion_length: int = 64
    """dr_grpo's constant normaliser."""
    sapo_temperature_pos: float = 1.0
    """SAPO gate temperature for positive advantages."""
    sapo_temperature_neg: float = 1.05
    """SAPO gate temperature for non-positive advantages."""
    bias_correction_kl: bool = True
    """Weight the KL term by the importance ratio (DeepSeek-V3.2), so its gradient is the unbiased reverse-KL
    gradient even off-policy; TRL's default."""

    def __post_init__(self):
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {', '.join(LOSS_TYPES)}, got {self.loss_type!r}")
        if self.importance_sampling_level not in ("token", "sequence"):
            raise ValueError("importance_sampling_level must be token or sequence")


@dataclass
class LossParts:
    loss: torch.Tensor
    """The scalar to backpropagate for this micro-batch."""
    ratio: torch.Tensor
    """Importance ratio pi/pi_old: [N, T] (token level) or [N, 1] (sequence level)."""
    per_token_kl: torch.Tensor | None
    """[N, T] k3 estimate of KL(pi || pi_ref), when beta > 0."""


def importance_log_weights(logps: torch.Tensor, old_logps: torch.Tensor, mask: torch.Tensor, level: str) -> torch.Tensor:
    """log(pi / pi_old): [N, T] per token, or [N, 1] the mean over each sequence's valid tokens."""
    log_ratio = logps - old_logps                                                  # [N, T]
    if level == "token":
        return log_ratio
    return ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).unsqueeze(-1)  # [N, 1]


def per_token_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                   settings: LossSettings, ref_logps: torch.Tensor | None = None,
                   token_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Per-token loss before aggregation.

    logps, old_logps, mask [N, T]; advantages [N]; ref_logps [N, T] when beta > 0; token_weights [N, T]
    (e.g. the high-entropy mask) multiply the policy term only. Returns (loss [N, T], ratio, kl [N, T] | None).
    """
    adv = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages         # [N, 1]
    ratio = torch.exp(importance_log_weights(logps, old_logps, mask, settings.importance_sampling_level))  # [N, T|1]
    kl = None
    if settings.beta != 0.0:
        delta = ref_logps - logps                                                 # [N, T]
        kl = torch.exp(delta) - delta - 1                                         # [N, T], >= 0
        if settings.bias_correction_kl:
            kl = kl * ratio                                                       # [N, T]
    if settings.loss_type == "cispo":
        weight = torch.clamp(ratio, max=settings.epsilon_high).detach()           # [N, T|1]
        loss = -weight * adv * logps                                              # [N, T]
    elif settings.loss_type == "sapo":
        temp = torch.where(adv > 0, settings.sapo_temperature_pos, settings.sapo_temperature_neg)  # [N, 1]
        loss = -(torch.sigmoid(temp * (ratio - 1)) * 4 / temp) * adv             # [N, T|1]
    else:
        clipped = torch.clamp(ratio, 1 - settings.epsilon_low, 1 + settings.epsilon_high)  # [N, T|1]
        loss = -torch.min(ratio * adv, clipped * adv)                             # [N, T|1]
    if token_weights is not None:
        loss = loss * token_weights                                               # [N, T]
    if kl is not None:
        loss = loss + settings.beta * kl                                          # [N, T]
    return loss, ratio, kl


def aggregate(loss: torch.Tensor, mask: torch.Tensor, settings: LossSettings, *, accumulation_steps: int,
              step_tokens: float | torch.Tensor, num_processes: int = 1) -> torch.Tensor:
    """Per-token loss [N, T|1] -> this micro-batch's scalar (see the module docstring).

    step_tokens: valid completion tokens of the whole optimizer step over all processes (dapo, cispo).
    """
    masked = loss * mask                                                          # [N, T]
    kind = settings.loss_type
    if kind in ("grpo", "sapo"):
        return (masked.sum(-1) / mask.sum(-1).clamp(min=1.0)).mean() / accumulation_steps
    if kind == "bnpo":
        return masked.sum() / mask.sum().clamp(min=1.0) / accumulation_steps
    if kind == "dr_grpo":
        return masked.sum() / (loss.size(0) * settings.max_completion_length) / accumulation_steps
    step_tokens = torch.as_tensor(step_tokens, dtype=masked.dtype, device=masked.device)
    return masked.sum() / (step_tokens.clamp(min=1.0) / num_processes)


def grpo_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
              settings: LossSettings, *, accumulation_steps: int = 1, step_tokens: float | torch.Tensor | None = None,
              num_processes: int = 1, ref_logps: torch.Tensor | None = None,
              token_weights: torch.Tensor | None = None) -> LossParts:
    """The micro-batch loss: per_token_loss then aggregate. step_tokens defaults to this micro-batch's."""
    loss, ratio, kl = per_token_loss(logps, old_logps, advantages, mask, settings, ref_logps, token_weights)
    tokens = mask.sum() * num_processes * accumulation_steps if step_tokens is None else step_tokens
    total = aggregate(loss, mask, settings, accumulation_steps=accumulation_steps, step_tokens=tokens,
                      num_processes=num_processes)
    return LossParts(loss=total, ratio=ratio, per_token_kl=kl)


# ---------------------------------------------------------------- masks and statistics

def high_entropy_mask(entropies: torch.Tensor, mask: torch.Tensor, threshold: float | torch.Tensor) -> torch.Tensor:
    """Tokens whose entropy reaches `threshold` (a quantile of all valid tokens' entropies): [N, T] bool."""
    return ((entropies * mask) >= threshold) & mask.bool()


def clip_fractions(ratio: torch.Tensor, advantages: torch.Tensor, settings: LossSettings) -> dict[str, torch.Tensor]:
    """Per-token indicators [N, T|1] of where clipping stopped the gradient: a ratio under 1 - eps_low with a
    negative advantage, or over 1 + eps_high with a positive one (cispo: over eps_high)."""
    adv = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages        # [N, 1]
    if settings.loss_type == "cispo":
        return {"cispo_clip_ratio": ((ratio > settings.epsilon_high) & (adv > 0)).float()}
    if settings.loss_type == "sapo":
        return {}
    low = (ratio < 1 - settings.epsilon_low) & (adv < 0)
    high = (ratio > 1 + settings.epsilon_high) & (adv > 0)
    return {"clip_ratio/low_mean": low.float(), "clip_ratio/high_mean": high.float(),
            "clip_ratio/region_mean": (low | high).float()}


def masked_sum_count(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[sum, count] of x over valid tokens (x [N, T], or [N, 1]: one value per sequence): [2]."""
    if x.shape[1] == 1:
        return torch.stack([x.sum(), torch.tensor(float(x.shape[0]), device=x.device)])
    return torch.stack([(x * mask).sum(), mask.sum().float()])
