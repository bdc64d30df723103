"""What our RLlib algorithms share: the actor settings of their configs (TD3, SAC, PPO), the
env runner and fragments of the off-policy ones, their replay learner and training step (TD3,
SAC), and the observation-statistics hook of PPO."""
