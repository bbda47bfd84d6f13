"""The released run's embedding resize: a student with a smaller vocabulary than the teacher's is padded to
it (zero rows, as the official code's resize_token_embeddings) and trains with tsdkd_official."""

import jax
import numpy as np

from tsdkd_jax import data, models, train
from tsdkd_jax.train import tiny


def _bigger_vocab_teacher(c, folder, vocab_size):
    tok = data.load_tokenizer(c.student.path)
    eos, pad = tok.convert_tokens_to_ids("<|im_end|>"), tok.pad_token_id
    hf = tiny.qwen2_hf_config(vocab_size=vocab_size, hidden=32, layers=3, heads=2, kv_heads=1, head_dim=16,
                              ffw=96, eos_id=eos, pad_id=pad)  # fmt: skip
    models.save_pretrained(tiny.new_model(hf, 7, head_scale=20.0), str(folder))
    tok.save_pretrained(str(folder))
    return str(folder)


def test_official_resizes_the_student_embedding_to_the_teachers_vocab(tiny_config, tmp_path):
    c = tiny_config("official", total_steps=2, checkpoint__every=2, mesh__devices=1)
    c.teacher.path = _bigger_vocab_teacher(c, tmp_path / "teacher", 400)
    c.student.resize_vocab_to_teacher = True
    t = train.Trainer(c, str(tmp_path / "run"))
    assert t.model_config.vocab_size == 400
    embed = np.asarray(jax.device_get(t.state["params"]["embed"]))
    assert embed.shape[0] == 400 and not embed[384:].any() and embed[:384].any()
    last = t.run()
    assert np.isfinite(last["loss"]) and last["loss"] > 0
    # Without the resize the default policy pads the student's logits with −inf instead; it trains too.
    c.student.resize_vocab_to_teacher = False
    t = train.Trainer(c, str(tmp_path / "run_pad"))
    assert t.model_config.vocab_size == 384
    assert np.isfinite(t.run()["loss"])
