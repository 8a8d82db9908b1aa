"""The scrubber: a labelled corpus (recall and false-positive rate), and that it runs on the send path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loopback import Endpoint
from ox_telemetry import Event, FileQueue
from ox_telemetry.delivery import Delivery
from ox_telemetry.scrub import scrub, scrub_event, scrub_line
from ox_telemetry.transport import UrllibTransport

HOME = "/home/alice"
USER = "alice"

# (text, what must not survive). Every one must be changed and lose its needle.
SENSITIVE: list[tuple[str, str]] = [
    # the user's home and name
    ("/home/alice/projects/acme/main.py", "/home/alice"),
    ("cannot open /home/alice/.ssh/id_rsa", "alice"),
    ("/home/alice", "alice"),
    ("config at /home/alice/.config/app.yaml.", "alice"),
    ("alice", "alice"),
    ("owner=alice", "alice"),
    ("Alice's laptop", "Alice"),
    ("build-alice-2", "alice"),
    # other absolute paths and other users' homes
    ("/var/lib/acme-secret-project/db.sqlite", "acme-secret-project"),
    ("/srv/clients/megacorp/deploy.sh", "megacorp"),
    ("/Users/bob/Documents/taxes.pdf", "bob"),
    ("C:\\Users\\carol\\AppData\\app.log", "carol"),
    ("D:\\clients\\initech\\report.docx", "initech"),
    ("failed reading /etc/ssl/private/server.key", "/etc/ssl/private"),
    ("/opt/internal-codename-zebra/bin/tool", "internal-codename-zebra"),
    ("~/work/client-acme/notes.md", "client-acme"),
    ("file:///home/dave/secret/plan.txt", "dave"),
    # e-mail
    ("alice.smith@example.com", "alice.smith@example.com"),
    ("contact bob+telemetry@corp.example.org now", "bob+telemetry"),
    ("git author: Eve <eve@sageox.ai>", "eve@sageox.ai"),
    ("first.last@sub.domain.co.uk", "first.last"),
    # IP addresses
    ("10.0.0.1", "10.0.0.1"),
    ("connect to 192.168.1.10:8080 refused", "192.168.1.10"),
    ("203.0.113.77", "203.0.113.77"),
    ("host=8.8.8.8", "8.8.8.8"),
    ("fe80::1ff:fe23:4567:890a", "fe80::1ff:fe23:4567:890a"),
    ("2001:db8:85a3::8a2e:370:7334", "2001:db8:85a3::8a2e:370:7334"),
    ("[2001:db8::1]:443", "2001:db8::1"),
    ("fe80::1%eth0", "fe80::1"),
    ("2001:0db8:0000:0000:0000:ff00:0042:8329", "2001:0db8"),
    ("wlan0 aa:bb:cc:dd:ee:ff", "aa:bb:cc:dd:ee:ff"),
    ("00-1A-2B-3C-4D-5E", "00-1A-2B-3C-4D-5E"),
    # URLs with credentials, query strings, fragments
    ("https://bob:hunter2@example.com/repo.git", "hunter2"),
    ("https://x-access-token:abc123@github.com/org/repo", "abc123"),
    ("https://oauth2@gitlab.com/group/project.git", "oauth2@"),
    ("https://api.example.com/v1/items?api_key=zzz123&user=7", "zzz123"),
    ("http://localhost:3000/callback?code=AUTHCODE42", "AUTHCODE42"),
    ("https://app.example.com/#access_token=tok987", "tok987"),
    ("postgres://admin:s3cr3t@db.internal:5432/prod", "s3cr3t"),
    ("redis://:p4ssw0rd@cache:6379/0", "p4ssw0rd"),
    # provider tokens
    ("ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8", "ghp_"),
    ("gho_" + "x" * 36, "gho_"),
    ("ghu_" + "Z9" * 18, "ghu_"),
    ("ghs_" + "0aB" * 12, "ghs_"),
    ("ghr_" + "q1" * 18, "ghr_"),
    ("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTU", "github_pat_"),
    ("glpat-" + "xYz12-AbC34_dEf56gHi7", "glpat-"),
    ("xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "xoxb-"),
    ("xoxp-1111-2222-3333-abcdef", "xoxp-"),
    ("AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    ("key id ASIAY34FZKBOKMUTVV7A expired", "ASIAY34FZKBOKMUTVV7A"),
    ("AIzaSyD-1234567890abcdefghijklmnopqrstu", "AIzaSy"),
    ("sk_live_" + "51H8abcdEFGHijklMNOP", "sk_live_"),
    ("rk_live_" + "abcdefghij0123456789", "rk_live_"),
    ("pk_live_" + "0123456789abcdefghij", "pk_live_"),
    ("npm_" + "a1B2" * 9, "a1B2a1B2"),
    ("sk-proj-" + "Ab3" * 10, "sk-proj-"),
    ("sk-ant-api03-" + "Zz9_" * 10, "sk-ant-"),
    ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
     "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"),
    # auth headers and key=value secrets
    ("Authorization: Bearer abc.def.ghi", "abc.def.ghi"),
    ("authorization=Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
    ("Bearer 0123456789abcdef", "0123456789abcdef"),
    ("Basic YWxhZGRpbjpvcGVuc2VzYW1l", "YWxhZGRpbjpvcGVuc2VzYW1l"),
    ("Proxy-Authorization: Negotiate TlRMTVNTUAABAAAAB4IIog", "TlRMTVNTUAABAAAAB4IIog"),
    ("password=hunter2", "hunter2"),
    ('{"api_key": "k-12345"}', "k-12345"),
    ("client_secret: topsecretvalue", "topsecretvalue"),
    ("token=abcdef", "abcdef"),
    ("PASSWD=letmein", "letmein"),
    # PEM private keys, whole or cut off
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----", "MIIEpAIBAAKCAQEA"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA", "b3BlbnNzaC1rZXktdjEAAAAA"),
    ("key: -----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI\n-----END PRIVATE KEY----- end", "MC4CAQAwBQYDK2VwBCIEI"),
    # long hex and base64
    ("d41d8cd98f00b204e9800998ecf8427e", "d41d8cd98f00b204e9800998ecf8427e"),
    ("0x" + "deadbeef" * 5, "deadbeef"),
    ("commit e83c5163316f89bfbde7d9ab23ca2e25604af290 failed", "e83c5163316f89bfbde7d9ab23ca2e25604af290"),
    ("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI"),
    ("secret blob c2VjcmV0LXRva2VuLXZhbHVlLTEyMzQ1Njc4OTAtQUJDREVG==", "c2VjcmV0LXRva2Vu"),
    ("Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MEFCQ0RFRkdISUpLTE1OT1A", "Zm9vYmFy"),
]

# Ordinary values hosts send: command paths, versions, error codes, ids. Must pass unchanged.
ORDINARY: list[str] = [
    "agent prime", "status", "init", "guidance fetch", "auth login", "coworker load", "daemon start",
    "config set", "telemetry disable", "db migrate --dry-run", "repo sync", "help", "version",
    "agent prime --verbose", "deploy-kubernetes-cluster-with-all-the-defaults-enabled",
    "export_all_project_artifacts_to_the_shared_bucket_now",
    "1.2.3", "v0.5.1", "0.12.0rc1", "2.0.0-beta.3", "1.2.3+build.45", "3.11.4", "v2024.11.27",
    "10.0.19045", "go1.22.3", "Python 3.10", "ox/0.5.1", "0.1.0.dev4",
    "ERR_TIMEOUT", "ECONNREFUSED", "ENOENT", "TimeoutError", "ValueError", "KeyboardInterrupt",
    "HTTP 503", "network: ConnectionRefusedError", "E1234", "exit_code_2", "permission_denied",
    "std::io::Error", "json.decoder.JSONDecodeError", "click.exceptions.UsageError",
    "550e8400-e29b-41d4-a716-446655440000", "repo_test", "oxsid_01HZX3", "session-42",
    "2026-11-27T21:53:29Z", "21:53:29", "1h30m", "90s", "500ms", "linux", "amd64", "darwin/arm64",
    "claude-3-5-sonnet-20241022", "gpt-4o-mini", "github_actions", "gitlab", "verbose,dry-run,output",
    "and/or", "src/app/main.py", "a/b", "/tmp", "/", "https://sageox.ai/docs/privacy",
    "http://127.0.0.1", "127.0.0.1:8080", "::1", "0.0.0.0", "basic authentication",
    "Bearer token required", "token expired",
    "password reset", "the secret sauce", "user@", "pkg@1.2.3", "@scope/pkg", "100%", "true", "",
    "coworker:reviewer", "daemon:start_failure", "a:b", "ab:cd:ef", "localhost:8080", "v1.2.3.4",
    "2026-11-27T21:53:29.123456+00:00", "sha256", "aa-bb", "12:30",
]


@pytest.fixture
def alice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", HOME)
    monkeypatch.setenv("USER", USER)


def test_corpus_recall_and_false_positive_rate(alice: None) -> None:
    assert len(SENSITIVE) >= 60 and len(ORDINARY) >= 60
    missed = [(text, scrub(text)) for text, needle in SENSITIVE if needle in scrub(text) or scrub(text) == text]
    changed = [(text, scrub(text)) for text in ORDINARY if scrub(text) != text]
    recall = 1 - len(missed) / len(SENSITIVE)
    fp_rate = len(changed) / len(ORDINARY)
    print(f"\nscrubber corpus: {len(SENSITIVE)} sensitive, {len(ORDINARY)} ordinary; "
          f"recall {recall:.3f}, false-positive rate {fp_rate:.3f}")
    assert not missed, missed
    assert not changed, changed
    assert recall == 1.0 and fp_rate == 0.0


@pytest.mark.parametrize(("text", "expected"), [
    ("/home/alice/projects/acme/main.py", "~/<path>/main.py"),
    ("/home/alice/notes.txt", "~/notes.txt"),
    ("open /var/lib/app/db.sqlite failed.", "open <path>/db.sqlite failed."),
    ("alice.smith@example.com", "<redacted:email>"),
    ("connect 10.0.0.1:8080", "connect <redacted:ipv4>:8080"),
    ("https://bob:pw@example.com/a/b?token=x#y", "https://<redacted:credentials>@example.com/a/b?<redacted:query>"),
    ("Authorization: Bearer abc.def.ghi", "Authorization: Bearer <redacted:auth>"),
    ("AKIAIOSFODNN7EXAMPLE", "<redacted:aws_key>"),
    ("d41d8cd98f00b204e9800998ecf8427e", "<redacted:hex>"),
    ("alice", "<user>"),
])
def test_replacements_name_what_was_there(alice: None, text: str, expected: str) -> None:
    assert scrub(text) == expected


def test_scrub_is_idempotent(alice: None) -> None:
    for text, _ in SENSITIVE:
        once = scrub(text)
        assert scrub(once) == once, text


def test_generic_account_names_are_not_words_to_hide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/runner")
    monkeypatch.setenv("USER", "runner")
    assert scrub("runner start") == "runner start"
    assert scrub("/home/runner/work/x.py") == "~/<path>/x.py"


def test_a_user_named_like_a_placeholder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/path")
    monkeypatch.setenv("USER", "path")
    assert scrub("/srv/a/b.txt path") == "<path>/b.txt <user>"


def test_scrub_never_raises_and_is_fast(alice: None) -> None:
    import time

    assert scrub("") == ""
    assert scrub(None) == ""  # type: ignore[arg-type]
    text = "x " * 500 + "/home/alice/a/b.py " + "ghp_" + "a" * 36
    started = time.perf_counter()
    for _ in range(200):
        scrub(text)
    per_call = (time.perf_counter() - started) / 200
    assert per_call < 0.005, per_call


def test_scrub_event_touches_free_text_only(alice: None) -> None:
    event = {
        "type": "command_error", "session_id": "s-1", "event_id": "e" * 32, "repo_id": "repo_x",
        "command": "deploy /home/alice/app", "error_code": "password=hunter2", "path": "/srv/a/b.txt",
        "timestamp": "2026-11-27T21:53:29Z", "metadata": {"host": "10.1.2.3", "ci": "github_actions"},
    }
    clean = scrub_event(event)
    assert clean["command"] == "deploy ~/app"
    assert clean["error_code"] == "password=<redacted:secret>"
    assert clean["path"] == "<path>/b.txt"
    assert clean["metadata"] == {"host": "<redacted:ipv4>", "ci": "github_actions"}
    for key in ("type", "session_id", "event_id", "repo_id", "timestamp"):
        assert clean[key] == event[key]
    assert event["command"] == "deploy /home/alice/app"  # the input is not modified


def test_scrub_line_keeps_clean_lines_byte_for_byte(alice: None) -> None:
    line = Event("command_complete", command="status", success=True).to_json()
    assert scrub_line(line) is line
    dirty = Event("command_complete", command="status", error_code="alice@example.com").to_json()
    assert json.loads(scrub_line(dirty))["error_code"] == "<redacted:email>"


def test_delivery_sends_scrubbed_events(alice: None, project: Path, endpoint: Endpoint) -> None:
    queue = FileQueue(str(project))
    queue.append(Event("command_error", command="sync /home/alice/secret-client", error_code="ghp_" + "b" * 36,
                       metadata={"email": "alice@example.com", "n": "3"}))
    outcome = Delivery(queue, UrllibTransport(), endpoint.base_url + "/api/v1/telemetry").run()
    assert outcome == "delivered"
    (sent,) = endpoint.accepted_events()
    assert sent["command"] == "sync ~/secret-client"
    assert sent["error_code"] == "<redacted:github_token>"
    assert sent["metadata"] == {"email": "<redacted:email>", "n": "3"}
    assert "alice" not in json.dumps(endpoint.requests[0].body)
