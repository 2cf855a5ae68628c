"""MLPError and the two checks every config type validates with: one line naming key, value and rule."""

from __future__ import annotations

import pytest

from mnist_pipeline.mlp.errors import MLPError, check, check_choice
from mnist_pipeline.mlp.registry import Registry


def test_mlp_error_is_a_value_error() -> None:
    assert issubclass(MLPError, ValueError)


def test_check_passes_or_names_key_value_and_requirement() -> None:
    check("train.lr", True, "> 0", 0.1)
    with pytest.raises(MLPError) as info:
        check("train.lr", False, "> 0", 0.0)
    assert str(info.value) == "train.lr=0.0 is invalid: must be > 0"


def test_check_choice_lists_the_valid_names_in_the_order_given() -> None:
    check_choice("train.early_stop", "val_acc", ("none", "val_loss", "val_acc"))
    with pytest.raises(MLPError) as info:
        check_choice("train.early_stop", "val_f1", ("none", "val_loss", "val_acc"))
    assert str(info.value) == "train.early_stop='val_f1' is not one of: none, val_loss, val_acc"


def test_registry_names_are_sorted_in_its_choice_and_lookup_errors() -> None:
    things = Registry("thing")
    for name in ("b", "c", "a"):
        things.register(name)(name.upper())
    assert things.names() == ("a", "b", "c") and things.get("c") == "C"
    with pytest.raises(MLPError) as choice:
        check_choice("x.name", "d", things.names())
    assert str(choice.value) == "x.name='d' is not one of: a, b, c"
    with pytest.raises(MLPError) as lookup:
        things.get("d")
    assert str(lookup.value) == "unknown thing 'd'; valid: a, b, c"
