"""Hyper-parameters are validated before tracing, with errors that name the field."""

import jax
import jax.numpy as jnp
import pytest

from tsdkd_jax.losses import chunked_tsdkd_loss, tsdkd_loss

Z = jnp.zeros((2, 3, 16))
M = jnp.ones((2, 3))

BAD = [
    ({"beta": 1.5}, "beta"),
    ({"beta": -0.1}, "beta"),
    ({"gate_tau": 0.0}, "gate_tau"),
    ({"rank_k": 0}, "rank_k"),
    ({"rank_k": 2.5}, "rank_k"),
    ({"rank_k": 17}, "rank_k"),  # more than the vocabulary
    ({"opener_frac": 0.0}, "opener_frac"),
    ({"opener_frac": 1.5}, "opener_frac"),
    ({"em_frac": 0.0}, "em_frac"),
    ({"skew_alpha": 2.0}, "skew_alpha"),
    ({"em_weight": float("nan")}, "em_weight"),
    ({"variant": "released"}, "variant"),
    ({"divergence": "jsd"}, "divergence"),
    ({"use_direct": False, "use_em": False, "use_indirect": False}, "use_direct/use_em/use_indirect"),
]


@pytest.mark.parametrize("kwargs,field", BAD)
def test_bad_hyper_parameters_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        tsdkd_loss(Z, Z, M, **kwargs)


def test_traced_hyper_parameter_is_rejected_clearly():
    with pytest.raises(ValueError, match="beta"):
        jax.jit(lambda b: tsdkd_loss(Z, Z, M, beta=b)[0])(0.5)


def test_shape_errors():
    with pytest.raises(ValueError, match="mask"):
        tsdkd_loss(Z, Z, jnp.ones((2, 4)))
    with pytest.raises(ValueError, match="vocab"):
        tsdkd_loss(Z, jnp.zeros((2, 3, 17)), M)
    with pytest.raises(TypeError, match="unknown"):
        chunked_tsdkd_loss(Z, Z, M, student_unembed=None, teacher_unembed=None, temperature=2.0)


@pytest.mark.parametrize(
    "kwargs,field", [({"chunk_size": 0}, "chunk_size"), ({"vocab_policy": "resize"}, "vocab_policy")]
)
def test_chunked_arguments(kwargs, field):
    with pytest.raises(ValueError, match=field):
        chunked_tsdkd_loss(Z, Z, M, student_unembed=lambda h: h, teacher_unembed=lambda h: h, **kwargs)
