"""CI detection: the service's name on every event, and a host's choice to stay off in CI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ox_telemetry import Client, Event
from ox_telemetry.ci import detect

_CI_VARS = ("CI", "CONTINUOUS_INTEGRATION", "GITHUB_ACTIONS", "GITLAB_CI", "BUILDKITE", "CIRCLECI", "TF_BUILD",
            "JENKINS_URL", "TEAMCITY_VERSION", "TRAVIS", "APPVEYOR", "BITBUCKET_BUILD_NUMBER",
            "CODEBUILD_BUILD_ID", "DRONE", "SEMAPHORE", "CIRRUS_CI", "BITRISE_IO", "WOODPECKER", "HARNESS_BUILD_ID")


@pytest.fixture(autouse=True)
def no_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests set the CI they want; the machine running them may be a CI itself."""
    for name in _CI_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(("env", "name"), [
    ({}, None),
    ({"CI": "false"}, None),
    ({"CI": "0"}, None),
    ({"CI": "true"}, "ci"),
    ({"CI": "1", "GITHUB_ACTIONS": "true"}, "github_actions"),
    ({"GITLAB_CI": "true"}, "gitlab"),
    ({"BUILDKITE": "true"}, "buildkite"),
    ({"CIRCLECI": "true"}, "circleci"),
    ({"TF_BUILD": "True"}, "azure_pipelines"),
    ({"JENKINS_URL": "https://ci.example.com/"}, "jenkins"),
    ({"TEAMCITY_VERSION": "2024.03"}, "teamcity"),
    ({"TRAVIS": "true"}, "travis"),
    ({"APPVEYOR": "True"}, "appveyor"),
    ({"BITBUCKET_BUILD_NUMBER": "17"}, "bitbucket"),
    ({"CODEBUILD_BUILD_ID": "proj:1234"}, "aws_codebuild"),
    ({"DRONE": "true"}, "drone"),
])
def test_detect(env: dict[str, str], name: str | None) -> None:
    assert detect(env) == name


def _queued(project: Path) -> list[dict[str, object]]:
    lines = (project / ".sageox" / "cache" / "telemetry.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_events_carry_the_ci_name(monkeypatch: pytest.MonkeyPatch, project: Path) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    client = Client("s", project_root=str(project))
    mine = Event("command_start", command="build", metadata={"k": "v"})
    client.track(mine)
    client.track(Event("command_start", command="own", metadata={"ci": "host-says"}))
    client.track_command("test", 0.5, True)
    events = _queued(project)
    assert [e["metadata"] for e in events] == [
        {"k": "v", "ci": "github_actions"}, {"ci": "host-says"}, {"ci": "github_actions"},
    ]
    assert mine.metadata == {"k": "v"}  # the caller's event is not modified


def test_no_ci_no_metadata(project: Path) -> None:
    client = Client("s", project_root=str(project))
    client.track_command("test", 0.5, True)
    assert "metadata" not in _queued(project)[0]


def test_disable_in_ci(monkeypatch: pytest.MonkeyPatch, project: Path) -> None:
    assert Client("s", disable_in_ci=True).is_enabled()  # not in CI
    monkeypatch.setenv("CI", "true")
    assert Client("s").is_enabled()  # the host did not ask
    client = Client("s", project_root=str(project), disable_in_ci=True)
    assert not client.is_enabled() and client.consent.rule == "ci"
    client.track_command("x", 1, True)
    assert not (project / ".sageox" / "cache").exists()
    monkeypatch.setenv("DO_NOT_TRACK", "1")  # the user's own opt-out is named first
    assert Client("s", disable_in_ci=True).consent.rule == "DO_NOT_TRACK"
