#!/usr/bin/env bash
# OpenRLHF (tested with 0.11.2): the gateway's /get_reward speaks OpenRLHF's remote reward protocol.
# Each sample's label column (--data.label_key) holds its rubrics as JSON text, optionally with the plain
# question: verifier.integrations.openrlhf.rubrics_label(rubrics, question).
# OpenRLHF turns rewards into a float tensor: an unjudgeable sample scores --unjudgeable-reward (default
# 0.0) and is flagged in extra_logs ("unjudgeable", "unjudgeable/<reason>"), which OpenRLHF logs, and in
# the gateway's rv_unjudgeable_total. With --token, add ?token=... to the URL (OpenRLHF sends no headers).
set -euo pipefail
rubric-verifier serve --model .cache/models/verifier --port 8080 --unjudgeable-reward 0.0 &
python -m openrlhf.cli.train_ppo_ray \
  --reward.remote_url http://127.0.0.1:8080/get_reward \
  --data.label_key rubrics \
  --data.input_key question \
  --data.apply_chat_template \
  "$@"
