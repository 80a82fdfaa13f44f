"""Trainers' own wire protocols, as thin adapters over the one ``RewardEngine``: each
module translates a trainer's request and answer shapes (``openrlhf``: OpenRLHF's remote
reward-model protocol) and is mounted by ``referee.http.build_app``. The generic API lives
in ``referee.http``; the SDK-side trainer adapters in ``referee_client.adapters``."""
