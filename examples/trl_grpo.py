"""GRPO with TRL where the reward is the served rubric verifier (README snippet; run by the tests).

rubric-verifier serve --model .cache/models/verifier --port 8080 &
python examples/trl_grpo.py --gateway http://127.0.0.1:8080 --policy .cache/models/tiny
"""

from __future__ import annotations

import argparse
import json

from verifier.integrations.trl import RubricReward


def train(gateway: str, policy: str, output_dir: str, steps: int = 2):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    dataset = Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": "Which river flows through Varn?"}],
                "rubrics": json.dumps(
                    ["Names the Sella river.", {"text": "Gives a year.", "importance": "okay"}]
                ),
            },
            {
                "prompt": [{"role": "user", "content": "Who founded Ostrel Works?"}],
                "rubrics": json.dumps(["Names Ima Tork as the founder."]),
            },
        ]
        * 4
    )
    reward = RubricReward(gateway, rubrics_column="rubrics")
    args = GRPOConfig(
        output_dir=output_dir,
        max_steps=steps,
        per_device_train_batch_size=4,
        num_generations=4,
        generation_batch_size=4,
        max_completion_length=16,
        learning_rate=1e-3,
        bf16=False,
        use_cpu=True,
        activation_checkpointing=False,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
    )
    trainer = GRPOTrainer(model=policy, reward_funcs=[reward], args=args, train_dataset=dataset)
    trainer.train()
    return trainer, reward


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gateway", required=True)
    parser.add_argument("--policy", required=True)
    parser.add_argument("--output-dir", default="outputs/grpo-example")
    parser.add_argument("--steps", type=int, default=2)
    cli = parser.parse_args()
    train(cli.gateway, cli.policy, cli.output_dir, cli.steps)
