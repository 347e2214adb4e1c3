"""Substring search over message text and conversation titles, for languages
written without spaces too (Chinese, Japanese): the databases' word-based
full-text search would not find 你好 inside 你好世界.

PostgreSQL: pg_trgm GIN indexes on UPPER(text), which is what Django's
``icontains`` compares there, so the ORM's lookup uses them.

SQLite: an FTS5 table with the trigram tokenizer (SQLite 3.34 or later) per
source table, contentless (the text stays in the source table only), kept in
sync by triggers.  Its rowids come from a small mapping table with an INTEGER
PRIMARY KEY: the source tables' own rowids are not stable (VACUUM may
renumber them, their primary keys being UUIDs).
"""

from django.db import migrations

# (source table, text column, its conversation): each gets <table>_search (FTS5) and <table>_search_rows
# (rowid -> id and conversation id, so that the conversations with a match are found without reading messages).
SQLITE_SOURCES = [
    ("conversations_message", "content", "conversation_id"),
    ("conversations_conversation", "title", "id"),
]
PG_INDEXES = [
    ("msg_content_trgm", "conversations_message", "content"),
    ("conv_title_trgm", "conversations_conversation", "title"),
]


def sqlite_forward(table: str, column: str, conversation: str) -> list[str]:
    fts, rows = f"{table}_search", f"{table}_search_rows"
    return [
        f"CREATE TABLE {rows} (rowid INTEGER PRIMARY KEY, key char(32) NOT NULL UNIQUE, conversation char(32) NOT NULL)",
        f"CREATE VIRTUAL TABLE {fts} USING fts5(text, content='', tokenize='trigram case_sensitive 0')",
        f"INSERT INTO {rows} (key, conversation) SELECT id, {conversation} FROM {table}",
        f"INSERT INTO {fts} (rowid, text) SELECT r.rowid, t.{column} FROM {rows} r JOIN {table} t ON t.id = r.key",
        f"""CREATE TRIGGER {table}_search_insert AFTER INSERT ON {table} BEGIN
            INSERT INTO {rows} (key, conversation) VALUES (new.id, new.{conversation});
            INSERT INTO {fts} (rowid, text) SELECT rowid, new.{column} FROM {rows} WHERE key = new.id;
        END""",
        # A contentless table forgets a row only when told its old text.
        f"""CREATE TRIGGER {table}_search_update AFTER UPDATE OF {column} ON {table}
            WHEN old.{column} IS NOT new.{column} BEGIN
            INSERT INTO {fts} ({fts}, rowid, text) SELECT 'delete', rowid, old.{column} FROM {rows} WHERE key = old.id;
            INSERT INTO {fts} (rowid, text) SELECT rowid, new.{column} FROM {rows} WHERE key = new.id;
        END""",
        f"""CREATE TRIGGER {table}_search_delete AFTER DELETE ON {table} BEGIN
            INSERT INTO {fts} ({fts}, rowid, text) SELECT 'delete', rowid, old.{column} FROM {rows} WHERE key = old.id;
            DELETE FROM {rows} WHERE key = old.id;
        END""",
    ]


def sqlite_backward(table: str) -> list[str]:
    return [
        *(f"DROP TRIGGER IF EXISTS {table}_search_{event}" for event in ("insert", "update", "delete")),
        f"DROP TABLE IF EXISTS {table}_search",
        f"DROP TABLE IF EXISTS {table}_search_rows",
    ]


def forward(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        for name, table, column in PG_INDEXES:
            schema_editor.execute(
                f"CREATE INDEX IF NOT EXISTS {name} ON {table} USING gin (UPPER({column}) gin_trgm_ops)"
            )
    elif vendor == "sqlite":
        version = schema_editor.connection.Database.sqlite_version_info
        if version < (3, 34):
            raise RuntimeError(f"Search needs SQLite 3.34 or later (FTS5's trigram tokenizer); this is {version}.")
        for table, column, conversation in SQLITE_SOURCES:
            for statement in sqlite_forward(table, column, conversation):
                schema_editor.execute(statement)


def backward(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        # The extension stays: something else may use it.
        for name, _table, _column in PG_INDEXES:
            schema_editor.execute(f"DROP INDEX IF EXISTS {name}")
    elif vendor == "sqlite":
        for table, _column, _conversation in SQLITE_SOURCES:
            for statement in sqlite_backward(table):
                schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [("conversations", "0012_library")]

    operations = [migrations.RunPython(forward, backward)]
