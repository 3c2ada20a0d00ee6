"""Unit tests of library/app_service_delta_archive.py's naming of its cached copies."""

import importlib.util
import pathlib

SOURCE = pathlib.Path(__file__).parents[1] / "library" / "app_service_delta_archive.py"
SPEC = importlib.util.spec_from_file_location("app_service_delta_archive", SOURCE)
delta = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(delta)

LAYERS = ["sha256:aaa", "sha256:bbb"]


def test_the_same_image_cut_the_same_way_reuses_its_copy():
    name = delta.delta_name("sp-2", "blobs/sha256/c1", LAYERS, {"l/a.tar"})
    assert name == delta.delta_name("sp-2", "blobs/sha256/c1", LAYERS, {"l/a.tar"})
    assert name.startswith("sp-2.delta-") and name.endswith(".tar")


def test_a_config_only_change_under_the_same_tag_is_another_copy():
    """A rebuilt tag whose layers are the same but whose config is not (a new HEALTHCHECK):
    reusing the old copy loaded the old image (found by the app_service scenario)."""
    assert delta.delta_name(
        "sp-2", "blobs/sha256/c1", LAYERS, {"l/a.tar"}
    ) != delta.delta_name("sp-2", "blobs/sha256/c2", LAYERS, {"l/a.tar"})


def test_other_layers_left_out_is_another_copy():
    assert delta.delta_name("sp-2", "c", LAYERS, {"l/a.tar"}) != delta.delta_name(
        "sp-2", "c", LAYERS, {"l/a.tar", "l/b.tar"}
    )
