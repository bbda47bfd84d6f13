"""The train path's chunked loss saves the student's top-k ids: its backward pass runs no top-k over V."""

import jax
import jax.numpy as jnp
from jax.extend import core as jex_core

from tsdkd_jax import losses
from tsdkd_jax.train import objectives as obj

V, D = 97, 8  # a vocabulary size no other dimension has


def _topk_over_vocab(jaxpr) -> int:
    """top_k equations whose operand's last axis is the vocabulary, in `jaxpr` and every sub-jaxpr."""
    count = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "top_k" and eqn.invars[0].aval.shape[-1] == V:
            count += 1
        for param in eqn.params.values():
            for sub in param if isinstance(param, tuple | list) else (param,):
                if isinstance(sub, jex_core.ClosedJaxpr):
                    count += _topk_over_vocab(sub.jaxpr)
                elif isinstance(sub, jex_core.Jaxpr):
                    count += _topk_over_vocab(sub)
    return count


def test_train_loss_gradient_reuses_the_forward_top_k():
    keys = jax.random.split(jax.random.key(0), 4)
    w_s, w_t = jax.random.normal(keys[0], (D, V)), jax.random.normal(keys[1], (D, V))
    hs, ht = jax.random.normal(keys[2], (2, 6, D)), jax.random.normal(keys[3], (2, 6, D))
    cfg = losses.make_config()  # paper TSD-KD: the ranking term takes the student's top-k

    def loss(w):
        stats = obj.kd_token_stats(
            hs, ht, cfg, s_unembed=lambda h: h @ w, t_unembed=lambda h: h @ w_t, chunk_size=4,
            vocab_policy="pad_student",
        )  # fmt: skip
        return jnp.sum(stats["rank_nll"]) + jnp.sum(stats["direct"])

    forward = _topk_over_vocab(jax.make_jaxpr(loss)(w_s).jaxpr)
    with_backward = _topk_over_vocab(jax.make_jaxpr(jax.grad(loss))(w_s).jaxpr)
    assert forward == 1  # one chunk body in the scan
    assert with_backward == forward  # the rematerialised chunk reads the saved ids instead
