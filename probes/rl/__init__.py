"""RL probes (``kind="ppo"`` and ``kind="rrd"``): rl_games's PPO update and RRD on SAC, measured in a
probe child like every other probe; reached by the tuner only through probes/protocol.py."""
