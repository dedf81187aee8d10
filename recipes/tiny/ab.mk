# The A/B of recipes/tiny: does GRPO add something that SFT on the same information cannot? Included by the
# Makefile; run it with
#
#   make -C recipes/tiny ab                      # AB_SEEDS seeds (default 0 1 2) -> out/ab/ab.md
#   make -C recipes/tiny ab AB_SEEDS=0 AB_OUT=out/ab-one
#
# Two arms, the same data but for the SFT targets, the same training budget:
#   weak  sft-coldstart on the weak teacher's traces (undercounts 3-4 squares 60% of the time), then GRPO
#   true  sft-coldstart on true-label traces (weak_teacher=0: same images, ids, split and answers), then GRPO
# GRPO (grpo.yaml, the demo's settings) is paid by the true answer in both arms. Every model is evaluated
# greedily on four sets, each under two prompts:
#   test              the held-out test split of the training data (no item shared with train)
#   more-distractors  up to 6 blue squares (training: up to 2)
#   larger-images     84x84 images (training: 56x56; 9 image tokens instead of 4)
#   crowded           84x84 images with up to 8 blue squares
#   prompts: dataset (the think/answer instruction the models trained with) and direct (no reasoning
#   instruction, "Answer with a single number.", scored on the whole reply)
# Every out-of-distribution set asks counts 0-4, the words training saw, and is drawn with --exclude of the
# training file, so no evaluated item was trained on. These settings were fixed before the first run.

AB_SEEDS ?= 0 1 2
AB_OUT   ?= $(OUT)/ab
AB_KNOBS := --task-option image_size=56 --task-option max_count=4 --task-option distractors=2
AB_OOD   := more-distractors larger-images crowded
AB_OOD_more-distractors := --task-option image_size=56 --task-option max_count=4 --task-option distractors=6
AB_OOD_larger-images    := --task-option image_size=84 --task-option max_count=4 --task-option distractors=2
AB_OOD_crowded          := --task-option image_size=84 --task-option max_count=4 --task-option distractors=8
AB_OOD_ROWS ?= 300
# The Python beside the rftcli command (ab_table.py reads the files with rftcli's own modules).
PYTHON ?= $(or $(wildcard $(dir $(RFTCLI))python),python3)

.PHONY: ab

ab: $(AB_OUT)/ab.md
	@cat $<

$(AB_OUT)/data-weak.parquet: data.yaml
	$(RFTCLI) prepare-data --config data.yaml $(AB_KNOBS) --task-option weak_teacher=0.6 --out $@ --overwrite

$(AB_OUT)/data-true.parquet: data.yaml
	$(RFTCLI) prepare-data --config data.yaml $(AB_KNOBS) --task-option weak_teacher=0 --out $@ --overwrite

# $(1): an out-of-distribution set's name. Half of its rows are in the test split that eval reads.
define AB_OOD_SET
$(AB_OUT)/ood-$(1).parquet: $(AB_OUT)/data-weak.parquet
	$(RFTCLI) prepare-data --task counting --num $(AB_OOD_ROWS) --seed 7 $(AB_OOD_$(1)) --test-fraction 0.5 \
	  --exclude $(AB_OUT)/data-weak.parquet --out $$@ --overwrite
endef
$(foreach set,$(AB_OOD),$(eval $(call AB_OOD_SET,$(set))))

# $(1): seed, $(2): arm (weak or true).
define AB_ARM
$(AB_OUT)/seed$(1)/$(2)/sft/rftcli_manifest.json: $(AB_OUT)/data-$(2).parquet sft.yaml
	$(RFTCLI) sft-coldstart --config sft.yaml -d $(AB_OUT)/data-$(2).parquet -m $(MODEL) --seed $(1) \
	  --out $(AB_OUT)/seed$(1)/$(2)/sft --overwrite

$(AB_OUT)/seed$(1)/$(2)/grpo/rftcli_manifest.json: $(AB_OUT)/seed$(1)/$(2)/sft/rftcli_manifest.json grpo.yaml
	$(RFTCLI) train-grpo --config grpo.yaml -d $(AB_OUT)/data-$(2).parquet -m $(AB_OUT)/seed$(1)/$(2)/sft --seed $(1) \
	  --out $(AB_OUT)/seed$(1)/$(2)/grpo --overwrite

$(AB_OUT)/seed$(1)/$(2)/merged/rftcli_manifest.json: $(AB_OUT)/seed$(1)/$(2)/grpo/rftcli_manifest.json
	$(RFTCLI) merge --adapter $(AB_OUT)/seed$(1)/$(2)/grpo --out $(AB_OUT)/seed$(1)/$(2)/merged --overwrite
endef

define AB_SEED
$(foreach arm,weak true,$(eval $(call AB_ARM,$(1),$(arm))))
$(AB_OUT)/seed$(1)/eval/summary.json: $(foreach arm,weak true,$(AB_OUT)/seed$(1)/$(arm)/sft/rftcli_manifest.json \
    $(AB_OUT)/seed$(1)/$(arm)/merged/rftcli_manifest.json) $(foreach set,$(AB_OOD),$(AB_OUT)/ood-$(set).parquet) eval.yaml
	$(RFTCLI) eval --config eval.yaml --prompt dataset --prompt direct \
	  -d $(AB_OUT)/data-weak.parquet --set-label test \
	  $(foreach set,$(AB_OOD),-d $(AB_OUT)/ood-$(set).parquet --set-label $(set)) \
	  -m $(AB_OUT)/seed$(1)/weak/sft --label sft-weak -m $(AB_OUT)/seed$(1)/weak/merged --label grpo-weak \
	  -m $(AB_OUT)/seed$(1)/true/sft --label sft-true -m $(AB_OUT)/seed$(1)/true/merged --label grpo-true \
	  --out $(AB_OUT)/seed$(1)/eval --overwrite
endef
$(foreach seed,$(AB_SEEDS),$(eval $(call AB_SEED,$(seed))))

$(AB_OUT)/ab.md: $(foreach seed,$(AB_SEEDS),$(AB_OUT)/seed$(seed)/eval/summary.json) ab_table.py
	$(PYTHON) ab_table.py $(AB_OUT) $(AB_SEEDS)
