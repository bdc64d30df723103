"""Checks of TD3's data-parallel learners, shared by tests/test_distributed.py (learners on one
node) and tests/multinode_driver.py (learners on different nodes).

The functions sent to the learners are nested: Ray pickles them by value, so a learner's
process needs no import of this module.
"""

from __future__ import annotations

from typing import Any

import torch


def learner_states(algo: Any) -> list[dict[str, torch.Tensor]]:
    """Each remote learner's module state (CPU copies), in the learner group's order."""
    def state(learner: Any) -> dict[str, torch.Tensor]:
        sd = learner.module["default_policy"].unwrapped().state_dict()
        return {k: v.detach().cpu().clone() for k, v in sd.items()}

    return [r.get() for r in algo.learner_group.foreach_learner(state)]


def averaged_gradient_check(algo: Any, size: int = 64) -> dict[str, Any]:
    """Each of the L learners' actor-loss gradient through DDP, on its own part of a fixed
    batch of L x ``size`` transitions, against the gradient of the whole batch on one module
    made in this process from learner 0's state: one optimizer step of L learners is a step
    on the L x B batch. Returns the number of learners and of actor parameters, and the
    names of the parameters whose gradient differs between learners (bitwise), is not close
    to the whole batch's (rtol 1e-5, atol 1e-7), or is zero everywhere."""
    from spikerl_ray.core.td3 import actor_loss
    from spikerl_ray.envs import continuous_spaces
    from spikerl_ray.td3.rl_module import TD3TorchRLModule

    parts = algo.config.num_learners
    obs_space, act_space = continuous_spaces(algo.config.env)
    obs_dim, act_dim = int(obs_space.shape[0]), int(act_space.shape[0])

    def fixed_batch(rows: int) -> Any:
        """The same batch of transitions of the run's shapes wherever it is made (seeded)."""
        from spikerl_ray.core.replay import Batch

        g = torch.Generator().manual_seed(123)
        return Batch(obs=torch.randn(rows, obs_dim, generator=g),
                     actions=torch.rand(rows, act_dim, generator=g),
                     rewards=torch.randn(rows, generator=g),
                     next_obs=torch.randn(rows, obs_dim, generator=g),
                     terminateds=torch.zeros(rows))

    def own_part_gradient(learner: Any) -> dict[str, torch.Tensor]:
        module = learner.module["default_policy"].unwrapped()
        whole = fixed_batch(parts * size)
        rows = slice(learner.shard * size, (learner.shard + 1) * size)
        mine = type(whole)(**{k: getattr(whole, k)[rows] for k in whole.__dataclass_fields__})
        module.actor.zero_grad()
        actor_loss(learner.ddp_modules[0], module.critic, module.normalize, mine).backward()
        return {n: p.grad.clone() for n, p in module.actor.named_parameters()}

    grads = [r.get() for r in algo.learner_group.foreach_learner(own_part_gradient)]
    module = TD3TorchRLModule(observation_space=obs_space, action_space=act_space,
                              model_config=algo.config.model_config)
    module.load_state_dict(learner_states(algo)[0])
    actor_loss(module.actor, module.critic, module.normalize,
               fixed_batch(parts * size)).backward()
    whole = {n: p.grad for n, p in module.actor.named_parameters()}
    assert all(g.keys() == whole.keys() for g in grads), "learners' parameters differ by name"
    return {
        "learners": len(grads),
        "params": len(whole),
        "differ_between_learners": [n for n in whole
                                    if not all(torch.equal(grads[0][n], g[n]) for g in grads)],
        "differ_from_whole_batch": [n for n in whole if not torch.allclose(
            grads[0][n], whole[n], rtol=1e-5, atol=1e-7)],
        "zero": [n for n in whole if not grads[0][n].any()],
    }
