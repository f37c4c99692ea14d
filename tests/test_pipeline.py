"""Pipeline API: single vs list inputs, param routing and its errors, batching, ordering."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from fake_plugins import SHOUT, FakePlugin, installed, write_manifest

import taskhub
from taskhub.errors import BadInputError, ParamError, UnknownTaskError


@pytest.fixture
def shout(tmp_path):
    write_manifest(tmp_path, "shout", SHOUT)
    with installed(FakePlugin(tmp_path), "fake"):
        yield


def test_one_input_one_result_list_gives_list(shout):
    pipe = taskhub.pipeline("shout")
    assert pipe("ab") == {"text": "AB", "length": 2}
    assert pipe(["a", "b", "c"], batch_size=2) == [{"text": t, "length": 1} for t in "ABC"]
    assert pipe([]) == []


def test_params_route_to_the_declaring_stage_and_pipeline_defaults_apply(shout):
    pipe = taskhub.pipeline("shout", times=3)
    assert pipe("a")["text"] == "AAA"
    assert pipe("a", times=1, suffix="?")["text"] == "A?"
    assert pipe("a")["text"] == "AAA"  # call params do not stick


def test_unknown_param_lists_valid_ones(shout):
    with pytest.raises(ParamError) as err:
        taskhub.run_task("shout", "a", tims=2)
    assert "'tims'" in str(err.value) and "batch_size, suffix, times" in str(err.value)


def test_invalid_param_value_names_stage(shout):
    with pytest.raises(ParamError, match=r"fake.repeat.*times"):
        taskhub.run_task("shout", "a", times="many")
    with pytest.raises(ParamError, match="batch_size"):
        taskhub.run_task("shout", "a", batch_size=0)


def test_ambiguous_param_is_an_error(tmp_path):
    write_manifest(
        tmp_path,
        "twice",
        "task: twice\nmodality: text\ninput: text\npreprocess:\n  - stage: fake.upper\n"
        "model_stage:\n  stage: fake.upper\n",
    )
    with installed(FakePlugin(tmp_path), "fake"):
        with pytest.raises(ParamError, match="ambiguous.*fake.upper, fake.upper"):
            taskhub.run_task("twice", "a", suffix="!")


def test_unknown_task_lists_closest_first(shout):
    with pytest.raises(UnknownTaskError) as err:
        taskhub.pipeline("shot")
    assert "Did you mean 'shout'" in str(err.value)
    assert "feature-extraction" in str(err.value)


def test_unknown_stage_in_manifest_lists_registered(tmp_path):
    write_manifest(tmp_path, "ghost", "task: ghost\nmodality: text\ninput: text\nmodel_stage:\n  stage: fake.uper\n")
    with installed(FakePlugin(tmp_path), "fake"):
        # checked when the plugin loads: the task is reported and left out, not found broken at run time
        with pytest.warns(UserWarning, match="Did you mean 'fake.upper'"):
            statuses = {s.name: s for s in taskhub.plugin_statuses()}
        assert "Did you mean 'fake.upper'" in (statuses["fake:ghost.yaml"].error or "")
        with pytest.raises(taskhub.UnknownTaskError):
            taskhub.pipeline("ghost")


def test_bad_inputs_are_named(shout):
    with pytest.raises(BadInputError, match="Input 1 is None; expected a string"):
        taskhub.run_task("shout", ["a", None])
    with pytest.raises(BadInputError, match="Input 0 is a int; expected a string"):
        taskhub.run_task("shout", 5)


@dataclass
class Keyed:
    """A preprocessed item with the explicit sort key the core sorts by."""

    value: object
    sort_length: int


def test_length_sorted_batches_return_in_input_order(tmp_path):
    seen: list[list[int]] = []

    class Recorder(FakePlugin):
        @taskhub.hookimpl
        def register_stages(self, register):
            register("rec.lengths", lambda items, p, ctx: [Keyed(i, len(i)) for i in items])
            register(
                "rec.model",
                lambda items, p, ctx: seen.append([i.sort_length for i in items]) or [i.sort_length for i in items],
            )

    write_manifest(
        tmp_path,
        "lengths",
        "task: lengths\nmodality: text\ninput: text\nbatching: {sort_by_length: true, batch_size: 2}\n"
        "preprocess:\n  - stage: rec.lengths\nmodel_stage:\n  stage: rec.model\n",
    )
    with installed(Recorder(tmp_path), "rec"):
        texts = ["aa", "a", "aaaa", "aaa", "aaaaa"]
        assert taskhub.run_task("lengths", texts) == [2, 1, 4, 3, 5]
    assert seen == [[5, 4], [3, 2], [1]]
