"""Drop-in reward functions for trainers: ``trl.RefereeReward`` / ``trl.AsyncRefereeReward``
for TRL's GRPOTrainer, ``verl.compute_score_async`` (+ ``verl_manager.RefereeRewardManager``)
for verl >= 0.7 and ``verl.compute_score_batch`` / ``verl.compute_score`` for verl <= 0.6.
(OpenRLHF needs no client code: point ``--reward.remote_url`` (0.11+) or
``--remote_rm_url`` (0.9) at the server's ``/openrlhf/<pipeline>`` route.) Recipes:
docs/trainers/."""
