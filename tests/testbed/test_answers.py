"""The testbed's collapse signature: distinct `#### N` answers among a batch's responses."""

from tsdkd_jax.testbed import diagnostics


def test_distinct_answers_counts_normalised_final_answers():
    texts = [
        "3 + 9 = 12\n#### 12",
        "#### 12.",  # one trailing "." is dropped (lm-eval's normalisation)
        "#### 1,200",  # thousands separators too
        "so 1200\n#### 1200",
        "no final line: 7",
        "#### 7",
    ]
    assert diagnostics.distinct_answers(texts) == {"answers/distinct": 3.0, "answers/with_answer": 5 / 6}
    assert diagnostics.distinct_answers(["#### 4"] * 8) == {
        "answers/distinct": 1.0,
        "answers/with_answer": 1.0,
    }
    assert diagnostics.distinct_answers([]) == {"answers/distinct": 0.0, "answers/with_answer": 0.0}
