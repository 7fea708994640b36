"""ssm.typing: one notation table for the library, and shape annotations that keep to it."""

from ssm.typing import DIMENSIONS


def test_no_letter_and_no_name_means_two_things():
    letters = [letter for letter, _, _ in DIMENSIONS if letter]
    names = [name for _, name, _ in DIMENSIONS]
    assert len(set(letters)) == len(letters), sorted(x for x in letters if letters.count(x) > 1)
    assert len(set(names)) == len(names), sorted(x for x in names if names.count(x) > 1)
    assert all(len(letter) == 1 and letter.islower() for letter in letters)  # einsum takes single letters
    # The conventions' letters (a position; the two axes of a square matrix) are no dimension's.
    assert not {"t", "i", "j"} & set(letters)
    assert all(name.isidentifier() for name in names)  # as jaxtyping and einops read them
