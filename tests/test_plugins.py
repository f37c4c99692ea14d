"""The plugin contract: registration, isolation of broken plugins, name conflicts."""

from __future__ import annotations

import pytest
from fake_plugins import SHOUT, FakePlugin, installed, write_manifest

import taskhub
from taskhub import hookimpl
from taskhub.errors import PluginError
from taskhub.plugins import PluginHost


def test_builtin_plugins_load_through_entry_points():
    names = {s.name: s for s in taskhub.plugin_statuses()}
    assert names["text"].ok and names["text"].module == "taskhub_text.plugin"
    assert "feature-extraction" in {e.manifest.task for e in taskhub.get_registry().tasks()}


def test_fake_plugin_task_runs(tmp_path):
    write_manifest(tmp_path, "shout", SHOUT)
    with installed(FakePlugin(tmp_path), "fake"):
        assert taskhub.run_task("shout", "ab", times=2) == {"text": "ABAB", "length": 2}
        assert taskhub.run_task("yell", ["x", "yz"], suffix="!") == [
            {"text": "X!", "length": 2},
            {"text": "YZ!", "length": 3},
        ]
    with pytest.raises(taskhub.UnknownTaskError):
        taskhub.run_task("shout", "ab")


class Exploding:
    @hookimpl
    def register_stages(self, register):
        register("boom.ok", lambda items, params, ctx: items)
        raise RuntimeError("registration exploded")


def test_plugin_failing_registration_is_skipped_and_reported(tmp_path):
    with pytest.warns(UserWarning, match="boom"):
        with installed(Exploding(), "boom"):
            registry = taskhub.get_registry()
            assert "boom.ok" not in registry.stages  # nothing half-registered
            assert "text.tokenize" in registry.stages  # the others still work
            status = {s.name: s for s in taskhub.plugin_statuses()}["boom"]
            assert not status.ok and "registration exploded" in status.error


def test_strict_mode_makes_plugin_failure_fatal(monkeypatch):
    monkeypatch.setenv("TASKHUB_STRICT_PLUGINS", "1")
    host = PluginHost()
    host._entry_points_loaded = True
    host.add(Exploding(), "boom")
    with pytest.raises(PluginError, match="registration exploded"):
        host.registry()


def test_plugin_failing_import_is_reported(monkeypatch):
    import importlib.metadata as md

    broken = md.EntryPoint(name="broken", value="taskhub_no_such_module.plugin", group="taskhub")
    monkeypatch.setattr(md, "entry_points", lambda group: [broken])
    host = PluginHost()
    with pytest.warns(UserWarning, match="broken"):
        host.registry()
    status = host.statuses["broken"]
    assert not status.ok and "No module named" in status.error


def test_same_stage_name_from_two_plugins_names_both(tmp_path):
    host = PluginHost()
    host._entry_points_loaded = True
    host.add(FakePlugin(tmp_path / "a"), "first")
    host.add(FakePlugin(tmp_path / "b"), "second")
    with pytest.warns(UserWarning) as caught:
        registry = host.registry()
    message = str(caught[0].message)
    assert "'fake.upper'" in message and "'first'" in message and "'second'" in message
    assert registry.stages.items["fake.upper"].plugin == "first"
    assert not host.statuses["second"].ok


def test_same_task_name_from_two_plugins_names_both(tmp_path):
    write_manifest(tmp_path / "a", "shout", SHOUT.replace("fake.", "fa."))
    write_manifest(tmp_path / "b", "shout", SHOUT.replace("fake.", "fb."))
    host = PluginHost()
    host._entry_points_loaded = True
    host.add(FakePlugin(tmp_path / "b", "fb"), "second")  # added first, still registers second: by name
    host.add(FakePlugin(tmp_path / "a", "fa"), "first")
    with pytest.warns(UserWarning) as caught:
        registry = host.registry()
    message = " ".join(str(w.message) for w in caught)
    assert "'shout'" in message and str(tmp_path / "a") in message and str(tmp_path / "b") in message
    # the loser fails as a whole, and is listed as failed with the reason
    assert registry.task("shout")[0].plugin == "first"
    assert "fb.upper" not in registry.stages
    assert not host.statuses["second"].ok and "'shout'" in (host.statuses["second"].error or "")
