#!/usr/bin/env bash
# verl (tested with 0.9.1): score rollouts with the served rubric verifier. Each sample's
# reward_model.ground_truth holds its rubrics (a list, or its JSON); extra_info.question the plain question.
# pkg:// imports the installed adapter on every Ray worker; with reward.reward_manager.name=remote use
# name=compute_score_sync (that manager refuses async functions). unjudgeable_score: what a sample the
# gateway cannot judge scores (default 0.0); it is flagged in reward_extra_info (unjudgeable = 1).
set -euo pipefail
python3 -m verl.trainer.main_ppo \
  reward.custom_reward_function.path=pkg://verifier.integrations.verl \
  reward.custom_reward_function.name=compute_score \
  +reward.custom_reward_function.reward_kwargs.url=http://127.0.0.1:8080 \
  +reward.custom_reward_function.reward_kwargs.unjudgeable_score=0.0 \
  "$@"
