"""Drop-in reward functions for trainers: ``trl.RefereeReward`` for TRL's GRPOTrainer and
``verl.compute_score`` / ``verl.compute_score_batch`` for verl's custom reward function.
(OpenRLHF needs no client code: point ``--remote_rm_url`` at the server's
``/openrlhf/<pipeline>`` route.)"""
