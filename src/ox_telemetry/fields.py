"""The client event's fields, each declared once.

Everything that knows an event's fields reads them from here: the wire types
(``wire.Event``'s slots and JSON form), the collector's validation (fast and
slow paths), the stored columns (checked against ``collector/storage/schema.py``
when that is imported) and the OpenAPI document. Adding a field is a line here
plus a storage migration; ``tests/collector/test_schema.py`` names each place
that must follow.

This module is on the client's import path: plain records, standard library
only, nothing imported.
"""

#: Every integer field is stored as a 64-bit integer (PostgreSQL's bigint).
INT64 = (-(2**63), 2**63 - 1)
#: Longest id the collector stores (event ids, daemon uuids and client ids): ids, not documents.
MAX_ID = 128


class Field:
    """One event field: its wire key, kind and limits, and the column that stores it.

    ``kind``: s = str, i = int, b = bool, t = RFC 3339 time, m = dict[str, str].
    ``always``: written even when empty (else left out, the reference's ``omitempty``).
    ``required``: an event without a non-empty value is refused by the collector.
    ``column`` and ``sql``: the stored column and its kind in ``collector/storage/schema.py``'s
    vocabulary (which maps it to SQLite and PostgreSQL types).
    """

    __slots__ = ("always", "column", "description", "int_range", "kind", "max_length", "name", "required", "sql")

    def __init__(self, name: str, kind: str, sql: str, description: str, *, always: bool = False,
                 required: bool = False, max_length: "int | None" = None, column: str = "") -> None:
        self.name = name
        self.kind = kind
        self.sql = sql
        self.description = description
        self.always = always
        self.required = required
        self.max_length = max_length
        self.int_range = INT64 if kind == "i" else None
        self.column = column or name

    def __repr__(self) -> str:
        return f"Field({self.name!r}, {self.kind!r})"


#: The fields in the reference's (Go) key order, which is the JSON's.
FIELDS: "tuple[Field, ...]" = (
    Field("type", "s", "text", "What happened, e.g. command_complete.", always=True, required=True),
    Field("timestamp", "t", "time?", "When, on the client's clock; corrected by the batch's skew.", always=True,
          column="client_time"),
    Field("session_id", "s", "text", "The CLI session the event belongs to."),
    Field("agent_id", "s", "text", "The coding agent instance that ran the CLI, if any."),
    Field("command", "s", "text", "The command run, without its arguments."),
    Field("duration_ms", "i", "int", "How long the command took, in milliseconds."),
    Field("success", "b", "bool", "Whether the command succeeded.", always=True),
    Field("error_code", "s", "text", "A short, scrubbed error class for failures."),
    Field("metadata", "m", "json?", "Further string values, at most 32."),
    Field("repo_id", "s", "text", "The project's repository id."),
    Field("api_endpoint", "s", "text", "The API endpoint the CLI talks to."),
    Field("path", "s", "text", "A scrubbed path the command concerned."),
    Field("agent_type", "s", "text", "The kind of coding agent, e.g. claude-code."),
    Field("model", "s", "text", "The agent's model."),
    Field("oxsid", "s", "text", "The SageOx session id."),
    Field("prime_call_count", "i", "int", "How often the agent primed in this session."),
    Field("coworker_name", "s", "text", "The coworker loaded, for coworker_load."),
    Field("coworker_model", "s", "text", "The coworker's model."),
    Field("event_id", "s", "key", "Unique id; a repeat is stored once.", max_length=MAX_ID),
)
#: Field names in wire order, and each one's position in it.
NAMES = tuple(f.name for f in FIELDS)
INDEX = {name: i for i, name in enumerate(NAMES)}
