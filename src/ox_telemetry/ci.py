"""Is this process running in continuous integration, and which service?

Read from the environment variables each service sets (each read as
:func:`ox_telemetry.settings.truthy`). :func:`ox_telemetry.consent.decide`
calls :func:`detect`; the client stamps the name on events as
``metadata["ci"]``, and a host passing ``disable_in_ci=True`` turns telemetry
off in CI (consent rule ``ci``). Only :mod:`os` is used: this module is on
the client's import path.
"""

from . import settings
from .settings import truthy

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

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


def detect(environ: "Mapping[str, str] | None" = None) -> "str | None":
    """The CI service's name (``github_actions``, ``gitlab``, …), ``ci`` for an unnamed one, or None."""
    env = settings.environment() if environ is None else environ
    for variable, name in _SERVICES:
        if truthy(env.get(variable)):
            return name
    if truthy(env.get("CI")) or truthy(env.get("CONTINUOUS_INTEGRATION")):
        return "ci"
    return None
