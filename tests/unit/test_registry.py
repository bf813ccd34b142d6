"""lth.registry: decorator registration, duplicate names refused, unknown names answered with the choices."""

import pytest

from lth.registry import Registry


def make():
    reg = Registry("criterion")

    @reg.register()
    def large_final():
        return 1

    @reg.register("random")
    def _random():
        return 2

    return reg, large_final


def test_register_by_function_name_or_explicit_name_and_returns_the_object():
    reg, large_final = make()
    assert large_final() == 1  # the decorator hands the function back unchanged
    assert reg["large_final"] is large_final and reg["random"]() == 2
    assert list(reg) == ["large_final", "random"] and len(reg) == 2
    assert "random" in reg and "_random" not in reg


def test_names_are_sorted():
    reg = Registry("model")
    for name in ("vgg16", "conv2", "mlp"):
        reg.register(name)(object())
    assert reg.names() == ["conv2", "mlp", "vgg16"]


def test_duplicate_registration_is_an_error():
    reg, _ = make()
    with pytest.raises(ValueError, match=r"criterion 'random' is registered twice"):
        reg.register("random")(lambda: 3)
    assert reg["random"]() == 2  # the first one stays


def test_unknown_name_lists_the_choices():
    reg, _ = make()
    with pytest.raises(KeyError) as e:
        reg["movement"]
    assert e.value.args[0] == "unknown criterion 'movement'; valid choices: large_final, random"
    with pytest.raises(ValueError, match=r"^unknown criterion 'x'; valid choices: large_final, random$"):
        reg.check("x")
    reg.check("random")  # a known name passes
