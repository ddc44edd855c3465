#!/usr/bin/env bash
# OpenRLHF: the gateway's /get_reward speaks OpenRLHF's remote reward-model protocol. Store each sample's
# rubrics as JSON text in the label column (verifier.integrations.openrlhf.rubrics_label).
# OpenRLHF turns rewards into a float tensor, so an unjudgeable sample needs a number instead of null:
# --unjudgeable-reward sets it, and the sample stays flagged (extra_logs "unjudgeable" and
# "unjudgeable/<reason>", logged by OpenRLHF; rv_unjudgeable_total in the gateway's /metrics).
set -euo pipefail
rubric-verifier serve --model .cache/models/verifier --port 8080 --unjudgeable-reward 0.0 &
python -m openrlhf.cli.train_ppo_ray \
  --remote_rm_url http://127.0.0.1:8080/get_reward \
  --label_key rubrics \
  "$@"
