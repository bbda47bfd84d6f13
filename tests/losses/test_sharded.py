"""Under a mesh of 8 fake devices with tokens sharded over the data axis, the jitted losses equal unsharded."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from loss_problems import make_problem, rel_err, student_unembed

from tsdkd_jax.losses import chunked_tsdkd_loss, tsdkd_loss

KW = {"rank_k": 5, "opener_frac": 0.3, "em_frac": 0.3}


@pytest.fixture(scope="module")
def mesh():
    assert jax.device_count() == 8, "tests/conftest.py must set 8 fake CPU devices"
    return Mesh(np.array(jax.devices()), ("data",), axis_types=(AxisType.Auto,))


def _problem():
    return make_problem(b=8, t=6, vs=48, vt=64, seed=7, lengths=[6, 5, 4, 3, 2, 1, 6, 0])


def _run(fn, args, shardings=None):
    f = jax.jit(jax.value_and_grad(fn, argnums=(0, 1), has_aux=True), in_shardings=shardings)
    return jax.device_get(f(*args))


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_full_logit_loss_sharded_equals_unsharded(mesh, variant):
    p = _problem()
    z = jnp.concatenate([p.student_logits(), jnp.full((8, 6, 16), -jnp.inf)], axis=-1)
    u = p.teacher_logits()

    def fn(z, u):
        return tsdkd_loss(z, u, p.mask, variant=variant, **KW)

    ref = _run(fn, (z, u))
    tok = NamedSharding(mesh, P("data"))
    got = _run(fn, (jax.device_put(z, tok), jax.device_put(u, tok)), (tok, tok))
    _assert_same(got, ref)


@pytest.mark.parametrize("variant", ["paper", "official"])
@pytest.mark.parametrize("chunk", [8, 12])  # 48 tokens: chunk spread over the 8 devices, or not
def test_chunked_loss_sharded_equals_unsharded(mesh, variant, chunk):
    p = _problem()

    def fn(hs, ws, ht, wt, mask):
        return chunked_tsdkd_loss(
            hs, ht, mask,
            student_unembed=lambda h: student_unembed(h, ws), teacher_unembed=lambda h: h @ wt,
            chunk_size=chunk, variant=variant, **KW,
        )  # fmt: skip

    args = (p.hs, p.ws, p.ht, p.wt, p.mask)
    ref = _run(fn, args)
    tok, rep = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    shardings = (tok, rep, tok, rep, tok)
    got = _run(fn, [jax.device_put(a, s) for a, s in zip(args, shardings, strict=True)], shardings)
    _assert_same(got, ref)


def _assert_same(got, ref):
    ((loss_g, aux_g), grads_g), ((loss_r, aux_r), grads_r) = got, ref
    assert np.isfinite(loss_r) and rel_err(loss_g, loss_r) <= 1e-5
    for key in aux_r:
        assert abs(float(aux_g[key]) - float(aux_r[key])) <= 1e-5 * max(1.0, abs(float(aux_r[key]))), key
    assert rel_err(grads_g[0], grads_r[0]) <= 1e-5 and rel_err(grads_g[1], grads_r[1]) <= 1e-5
