import pytest

from ikem_data.names import MODALITIES, resolve_modalities


def test_all_and_aliases():
    assert resolve_modalities("all") == MODALITIES
    assert resolve_modalities("joint,omega") == ("joint", "angular_velocity")
    assert resolve_modalities(["bone"]) == ("bone",)


@pytest.mark.parametrize("bad", ["jiont", "joint,joint", "", " , "])
def test_bad_names_raise_with_valid_list(bad):
    with pytest.raises(ValueError) as err:
        resolve_modalities(bad)
    if bad == "jiont":
        assert "angular_velocity" in str(err.value)
