#!/usr/bin/env bash
# OpenRLHF: the gateway's /get_reward speaks OpenRLHF's remote reward-model protocol. Store each sample's
# rubrics as JSON text in the label column (verifier.integrations.openrlhf.rubrics_label).
set -euo pipefail
rubric-verifier serve --model .cache/models/verifier --port 8080 &
python -m openrlhf.cli.train_ppo_ray \
  --remote_rm_url http://127.0.0.1:8080/get_reward \
  --label_key rubrics \
  "$@"
