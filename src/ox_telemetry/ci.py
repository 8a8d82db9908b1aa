"""Is this process running in continuous integration, and which service?

Read from the environment variables each service sets. The client calls
:func:`detect` once per :class:`~ox_telemetry.client.Client` and stamps the
name on events as ``metadata["ci"]``; a host passing ``disable_in_ci=True``
turns telemetry off in CI (consent rule :data:`RULE_CI`). Only :mod:`os` is
used: this module is on the client's import path.
"""

import os

#: The consent rule named when a host turned telemetry off in CI.
RULE_CI = "ci"

# (variable, service name), checked before the generic CI=true that most of them also set.
# Hosting platforms that set a variable at run time too (Vercel, Render) are left out.
_SERVICES = (
    ("GITHUB_ACTIONS", "github_actions"),
    ("GITLAB_CI", "gitlab"),
    ("BUILDKITE", "buildkite"),
    ("CIRCLECI", "circleci"),
    ("TF_BUILD", "azure_pipelines"),
    ("JENKINS_URL", "jenkins"),
    ("TEAMCITY_VERSION", "teamcity"),
    ("TRAVIS", "travis"),
    ("APPVEYOR", "appveyor"),
    ("BITBUCKET_BUILD_NUMBER", "bitbucket"),
    ("CODEBUILD_BUILD_ID", "aws_codebuild"),
    ("DRONE", "drone"),
    ("SEMAPHORE", "semaphore"),
    ("CIRRUS_CI", "cirrus"),
    ("BITRISE_IO", "bitrise"),
    ("WOODPECKER", "woodpecker"),
    ("HARNESS_BUILD_ID", "harness"),
)
_FALSE = ("", "0", "false", "no", "off")


def detect(environ: "os._Environ[str] | dict[str, str] | None" = None) -> "str | None":
    """The CI service's name (``github_actions``, ``gitlab``, …), ``ci`` for an unnamed one, or None."""
    env = os.environ if environ is None else environ
    for variable, name in _SERVICES:
        if env.get(variable, "").strip().lower() not in _FALSE:
            return name
    if env.get("CI", "").strip().lower() not in _FALSE or env.get("CONTINUOUS_INTEGRATION", "").strip():
        return "ci"
    return None
