"""What our RLlib algorithms share (TD3, and RLlib's SAC and PPO with our modules): the actor
settings of their configs and the observation-statistics hooks."""
