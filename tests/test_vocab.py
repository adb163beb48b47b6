import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_rnn.vocab import Vocabulary


def test_symbols_are_sorted_and_specials_first():
    vocabulary = Vocabulary.from_texts(["hihello"], pad=True, bos_eos=True)
    assert vocabulary.symbols == ("<pad>", "<bos>", "<eos>", "e", "h", "i", "l", "o")
    assert (vocabulary.pad_id, vocabulary.bos_id, vocabulary.eos_id) == (0, 1, 2)


def test_same_text_in_any_order_gives_the_same_vocabulary():
    assert Vocabulary.from_texts(["abc", "cba"]) == Vocabulary.from_texts(["cab"])


def test_encode_decode_and_one_hot_by_hand():
    vocabulary = Vocabulary.from_texts("hihello")  # e h i l o
    np.testing.assert_array_equal(vocabulary.encode("hihell"), [1, 2, 1, 0, 3, 3])
    assert vocabulary.decode([2, 1, 0, 3, 3, 4]) == "ihello"
    one_hot = vocabulary.one_hot("hi")
    np.testing.assert_array_equal(one_hot, [[0, 1, 0, 0, 0], [0, 0, 1, 0, 0]])
    assert one_hot.dtype == np.float32


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=4))
def test_any_unicode_text_round_trips(texts):
    vocabulary = Vocabulary.from_texts(texts)
    for text in texts:
        assert vocabulary.decode(vocabulary.encode(text)) == text
        assert vocabulary.one_hot(text).sum() == len(text)


def test_korean_words_round_trip():
    targets = ["나는 배가 고프다", "텐서플로우는 매우 어렵다"]
    vocabulary = Vocabulary.from_texts(targets, level="word", pad=True, bos_eos=True)
    ids = vocabulary.encode_batch(targets, length=5)
    assert ids.shape == (2, 5)
    assert ids[0, 3] == vocabulary.pad_id
    assert [vocabulary.decode(row) for row in ids] == targets


def test_unknown_symbol_names_it_and_the_vocabulary():
    vocabulary = Vocabulary.from_texts("hello")
    with pytest.raises(ValueError, match=r"Unknown symbol 'z'.*\['e', 'h', 'l', 'o'\]"):
        vocabulary.encode("hez")


def test_unknown_symbol_maps_to_unk_when_the_vocabulary_has_one():
    vocabulary = Vocabulary.from_texts("hello", unk=True)
    assert vocabulary.decode(vocabulary.encode("hez")) == "he<unk>"


@pytest.mark.parametrize("bad", ["", []])
def test_empty_input_is_an_error(bad):
    vocabulary = Vocabulary.from_texts("hello")
    with pytest.raises(ValueError, match="empty"):
        vocabulary.encode(bad)


def test_empty_texts_and_empty_batches_are_errors():
    with pytest.raises(ValueError, match="empty"):
        Vocabulary.from_texts([""])
    with pytest.raises(ValueError, match="empty batch"):
        Vocabulary.from_texts("ab", pad=True).encode_batch([])


def test_padding_needs_a_pad_token_and_masks_to_zero_vectors():
    with pytest.raises(ValueError, match="pad=True"):
        Vocabulary.from_texts("ab").encode("a", length=3)
    padded = Vocabulary.from_texts("ab", pad=True)
    np.testing.assert_array_equal(padded.encode("ab", length=4), [1, 2, 0, 0])
    np.testing.assert_array_equal(padded.encode("abab", length=2), [1, 2])
    assert padded.one_hot("ab", length=3)[2].sum() == 0  # <pad> is all zeros


def test_out_of_range_ids_are_errors():
    vocabulary = Vocabulary.from_texts("ab")
    with pytest.raises(ValueError, match="out of range"):
        vocabulary.decode([5])
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        vocabulary.one_hot(np.array([0, 2]))


def test_json_round_trip():
    vocabulary = Vocabulary.from_texts(["I feel hungry"], level="word", pad=True)
    assert Vocabulary.from_json(vocabulary.to_json()) == vocabulary
