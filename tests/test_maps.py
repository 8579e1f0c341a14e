import pytest

from envs.maps import GENERATED_TOWN, MapNotFoundError, MapSearch


def test_unknown_town_names_where_it_looked_and_what_exists(tmp_path):
    (tmp_path / "Town07.xodr").write_text("<OpenDRIVE/>")
    search = MapSearch((tmp_path,))
    with pytest.raises(MapNotFoundError) as err:
        search.xodr_path("Town99")
    assert str(tmp_path) in str(err.value) and "Town07" in str(err.value) and GENERATED_TOWN in str(err.value)


def test_no_maps_at_all_falls_back_to_the_generated_town(tmp_path):
    search = MapSearch((tmp_path / "missing",))
    assert search.available_towns() == [GENERATED_TOWN]
    assert search.default_town() == GENERATED_TOWN


def test_settings_then_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MENTOR_MAPS_DIR", str(tmp_path / "env"))
    monkeypatch.delenv("CARLA_ROOT", raising=False)
    search = MapSearch.from_settings(tmp_path / "cfg")
    assert search.directories == (tmp_path / "cfg", tmp_path / "env")
