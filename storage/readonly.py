"""The one read-only rule, for `tractatus-watch query` and for the Quack server (`serve.py`).

A query may be one SELECT (SELECT, WITH, FROM, VALUES, TABLE, DESCRIBE, SUMMARIZE, SHOW TABLES)
over the stored tables and nothing else: no second statement, no file or other database, no
extension, no setting, no write. It is judged on DuckDB's own parse of the text: the Python
client's `extract_statements` gives the statement count and types, and `json_serialize_sql`
gives the syntax tree, which is walked node by node (not matched with regular expressions):

- every table named must be a stored table of the store's own catalog, an `information_schema`
  view, or a CTE visible where it is named (DuckDB's scoping: a CTE sees the CTEs before it, a
  recursive CTE sees itself only in its recursive part). Anything else would be resolved by a
  replacement scan, which reads a file (`FROM '/etc/passwd'`) or a URL;
- table functions are refused but the catalog listings the Quack client sends and `unnest`
  (read_csv, read_text, glob, range, query, checkpoint, quack_serve, ... are all refused);
- a few scalar functions are refused because they leak what is not stored (`current_setting`
  can hold credentials, `getenv`) or change state (`setseed`, `nextval`, `write_log`), and the
  extensions' own (`quack_*`) and ours (`tw_*`).

`seal` adds an engine-level fence on the connection that runs the query: external access off
(no file, URL or extension, whatever the parse missed) and, where asked, the configuration
locked.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any, Final

import duckdb

from .errors import StoreError
from .remote import first_keyword

RULE: Final = "only one SELECT over the stored tables is allowed"
# First keywords of the statements that only read. `(` is a parenthesised query.
READ_KEYWORDS: Final = frozenset({"select", "with", "from", "values", "table", "describe",
                                  "summarize", "show", "unpivot"})
# Table functions that only list the catalog (the Quack client sends these on ATTACH), and
# unnest (which reads only its argument).
ALLOWED_TABLE_FUNCTIONS: Final = frozenset({"duckdb_tables", "duckdb_views", "duckdb_schemas",
                                            "duckdb_columns", "unnest"})
# Scalar functions that leak what is not stored, act, or stall a server thread.
DENIED_FUNCTIONS: Final = frozenset({"current_setting", "getenv", "which_secret", "setseed",
                                     "nextval", "currval", "write_log", "sleep_ms", "pg_sleep"})
DENIED_PREFIXES: Final = ("quack_", "tw_", "ducklake_", "postgres_")
SYSTEM_SCHEMAS: Final = frozenset({"information_schema"})
# Syntax-tree table references: the ones a read may use, and the ones it never needs.
_TABLE_REFS: Final = frozenset({"BASE_TABLE", "JOIN", "SUBQUERY", "TABLE_FUNCTION",
                                "EXPRESSION_LIST", "EMPTY", "PIVOT", "SHOW_REF"})
_OTHER_TABLE_REFS: Final = frozenset({"INVALID", "CTE", "COLUMN_DATA", "DELIM_GET",
                                      "BOUND_TABLE_REF", "EMPTY_FROM"})
# Expressions a plain scan's filter may use: cheap per row, whatever the values.
_PLAIN_FILTER_CLASSES: Final = frozenset({"COMPARISON", "CONJUNCTION", "CONSTANT", "COLUMN_REF",
                                          "CAST", "BETWEEN", "OPERATOR"})
_PLAIN_OPERATORS: Final = frozenset({"OPERATOR_NOT", "OPERATOR_IS_NULL", "OPERATOR_IS_NOT_NULL",
                                     "COMPARE_IN", "COMPARE_NOT_IN"})


class ReadOnlyError(StoreError):
    """A query the read-only rule refuses; the message names what was refused."""

    def __init__(self, what: str, statement: str = "SELECT") -> None:
        super().__init__(f"query refused: {what} ({RULE})")
        self.statement = statement  # the statement type refused, e.g. "INSERT"


@dataclass(frozen=True)
class Relations:
    """What a query may read: the stored tables and views of one catalog (lower-cased
    names); `base_tables` are the tables among them (a view may cost anything to scan)."""

    catalog: str
    tables: frozenset[str]
    base_tables: frozenset[str] = frozenset()

    @classmethod
    def of(cls, con: duckdb.DuckDBPyConnection) -> Relations:
        rows = con.execute(
            "SELECT current_database(), list(lower(table_name)), "
            "list(lower(table_name)) FILTER (table_type = 'BASE TABLE') "
            "FROM information_schema.tables "
            "WHERE table_catalog = current_database() AND table_schema = 'main'").fetchall()
        catalog, names, base = rows[0]
        return cls(catalog=str(catalog).lower(), tables=frozenset(names or []),
                   base_tables=frozenset(base or []))


@dataclass(frozen=True)
class Verdict:
    """An allowed query. `plain_scan`: one stored table, plain columns, a filter of
    comparisons only and at most a LIMIT: it costs at most one pass over the table per batch
    of rows fetched, so it may stream (see serve.py)."""

    plain_scan: bool


_parser_lock = threading.Lock()
_parser: duckdb.DuckDBPyConnection | None = None


def _parser_cursor() -> duckdb.DuckDBPyConnection:
    """A cursor of a private, empty, sealed instance: parsing never touches a store."""
    global _parser
    with _parser_lock:
        if _parser is None:
            _parser = duckdb.connect(":memory:", config={
                "enable_external_access": False, "autoinstall_known_extensions": False,
                "autoload_known_extensions": False})
        return _parser.cursor()


def statement_types(sql: str) -> list[str]:
    """The type of each statement DuckDB parses from `sql` (e.g. ["SELECT"])."""
    cur = _parser_cursor()
    try:
        return [s.type.name for s in cur.extract_statements(sql)]
    finally:
        cur.close()


def check(sql: str, relations: Relations) -> Verdict:
    """The verdict on `sql`, or ReadOnlyError naming what is refused. A text DuckDB cannot
    parse raises duckdb.ParserException, as running it would."""
    cur = _parser_cursor()
    try:
        statements = cur.extract_statements(sql)
        if len(statements) != 1:
            raise ReadOnlyError(f"{len(statements)} statements" if statements
                                else "no statement")
        statement = statements[0]
        # The text as given: DuckDB hands some statements back rewritten (PRAGMA x as a
        # SELECT from pragma_x).
        keyword = first_keyword(sql)
        if statement.type != duckdb.StatementType.SELECT:
            name = statement.type.name if keyword in READ_KEYWORDS else keyword.upper()
            raise ReadOnlyError(f"{name or statement.type.name} is not allowed",
                                statement.type.name)
        if keyword not in READ_KEYWORDS and keyword != "":
            raise ReadOnlyError(f"{keyword.upper()} is not allowed")
        # The tree of the text that will run, not of DuckDB's rendering of it. Inlined, not
        # a parameter: converting Python parameters costs failed imports.
        literal = "'" + sql.replace("'", "''") + "'"
        text = cur.execute(f"SELECT json_serialize_sql({literal})").fetchall()
    finally:
        cur.close()
    tree = json.loads(text[0][0])
    if tree.get("error"):
        raise ReadOnlyError(str(tree.get("error_message") or "an unreadable statement"))
    node = tree["statements"][0]["node"]
    _Walk(relations).visit(node, frozenset())
    return Verdict(plain_scan=_is_plain_scan(node, relations))


class _Walk:
    """Every node of a syntax tree, with the CTE names visible at each (lower-cased)."""

    def __init__(self, relations: Relations) -> None:
        self.relations = relations

    def visit(self, obj: Any, scope: frozenset[str]) -> None:
        if isinstance(obj, list):
            for item in obj:
                self.visit(item, scope)
            return
        if not isinstance(obj, dict):
            return
        if isinstance(obj.get("cte_map"), dict):
            scope = self._ctes(obj["cte_map"], scope)
        if obj.get("type") == "RECURSIVE_CTE_NODE":
            self._recursive(obj, scope)
            return
        kind = obj.get("type")  # a string on nodes, a dict on constants' values
        if "class" in obj:
            self._expression(obj)
        elif isinstance(kind, str) and kind in _TABLE_REFS:
            self._table_ref(obj, scope)
        elif isinstance(kind, str) and kind in _OTHER_TABLE_REFS:
            raise ReadOnlyError(f"a {kind} table reference")
        for key, value in obj.items():
            if key != "cte_map":
                self.visit(value, scope)

    def _ctes(self, cte_map: dict[str, Any], scope: frozenset[str]) -> frozenset[str]:
        """Walk the CTE bodies of one WITH; returns the scope of its main query. A body sees
        the CTEs before it, not itself: a name it shares with a later CTE or with itself is
        a table (or a file), as DuckDB binds it."""
        for entry in cte_map.get("map") or []:
            name = str(entry.get("key", "")).lower()
            body = (entry.get("value") or {}).get("query") or {}
            node = body.get("node") or {}
            if node.get("type") == "RECURSIVE_CTE_NODE":
                node = dict(node, tw_cte_self=name)
            self.visit(dict(body, node=node), scope)
            scope = scope | {name}
        return scope

    def _recursive(self, node: dict[str, Any], scope: frozenset[str]) -> None:
        """A recursive CTE names itself in its recursive part only; in its anchor the name
        is whatever else it would be. (`tw_cte_self` is set by `_ctes` on a CTE's body.)"""
        own = str(node.get("tw_cte_self") or "")
        for key, value in node.items():
            if key in ("cte_map", "tw_cte_self"):
                continue
            self.visit(value, scope | {own} if key == "right" and own else scope)

    def _expression(self, expr: dict[str, Any]) -> None:
        name = expr.get("function_name")
        if not isinstance(name, str):
            return
        lowered = name.lower()
        if lowered in DENIED_FUNCTIONS or lowered.startswith(DENIED_PREFIXES):
            raise ReadOnlyError(f"function {name} is not allowed")
        catalog = str(expr.get("catalog") or "").lower()
        if catalog not in ("", "system"):
            raise ReadOnlyError(f"function {catalog}.{name} is not allowed")

    def _table_ref(self, ref: dict[str, Any], scope: frozenset[str]) -> None:
        kind = ref["type"]
        if kind == "BASE_TABLE":
            self._base_table(ref, scope)
        elif kind == "TABLE_FUNCTION":
            function = ref.get("function") or {}
            name = str(function.get("function_name") or "?")
            if name.lower() not in ALLOWED_TABLE_FUNCTIONS or \
                    str(function.get("catalog") or "").lower() not in ("", "system"):
                raise ReadOnlyError(f"table function {name} is not allowed")
        elif kind == "SHOW_REF" and ref.get("query") is None:
            # SHOW TABLES; SHOW <name> would describe whatever the name resolves to.
            if ref.get("table_name") != '"tables"':
                raise ReadOnlyError("SHOW is not allowed (use DESCRIBE <table>)")

    def _base_table(self, ref: dict[str, Any], scope: frozenset[str]) -> None:
        name = str(ref.get("table_name") or "")
        schema = str(ref.get("schema_name") or "").lower()
        catalog = str(ref.get("catalog_name") or "").lower()
        lowered = name.lower()
        if not schema and not catalog and lowered in scope:
            return  # a CTE
        # `t`, `main.t`, `<catalog>.t` (parsed as a schema) and `<catalog>.main.t`.
        in_catalog = (catalog in ("", self.relations.catalog) and schema in ("", "main")) \
            or (not catalog and schema == self.relations.catalog)
        stored = in_catalog and lowered in self.relations.tables
        system = schema in SYSTEM_SCHEMAS and catalog in ("", self.relations.catalog, "system")
        if not (stored or system):
            shown = ".".join(p for p in (catalog, schema, name) if p)
            raise ReadOnlyError(f"{shown!r} is not a stored table")


def _is_plain_scan(node: dict[str, Any], relations: Relations) -> bool:
    """One stored table, its columns as they are (`*`, names, `#n`), a filter of comparisons
    of columns with constants, at most a LIMIT: nothing whose cost per row can grow."""
    if node.get("type") != "SELECT_NODE" or (node.get("cte_map") or {}).get("map"):
        return False
    source = node.get("from_table") or {}
    if source.get("type") != "BASE_TABLE" or source.get("sample") or source.get("at_clause") \
            or str(source.get("schema_name") or "").lower() not in ("", "main") \
            or str(source.get("table_name") or "").lower() not in relations.base_tables:
        return False
    if node.get("group_expressions") or node.get("group_sets") or node.get("having") \
            or node.get("qualify") or node.get("sample"):
        return False
    for modifier in node.get("modifiers") or []:
        if modifier.get("type") != "LIMIT_MODIFIER" or not all(
                _constant(modifier.get(k)) for k in ("limit", "offset")):
            return False
    for item in node.get("select_list") or []:
        cls = item.get("class")
        if cls == "STAR":
            if item.get("replace_list") or item.get("expr") or item.get("columns") \
                    or item.get("rename_list"):
                return False
        elif cls not in ("COLUMN_REF", "POSITIONAL_REFERENCE"):
            return False
    where = node.get("where_clause")
    return where is None or _plain_filter(where)


def _constant(expr: Any) -> bool:
    return expr is None or (isinstance(expr, dict) and expr.get("class") == "CONSTANT")


def _plain_filter(expr: Any) -> bool:
    if not isinstance(expr, dict):
        return True
    cls = expr.get("class")
    if cls not in _PLAIN_FILTER_CLASSES:
        return False
    if cls == "OPERATOR" and expr.get("type") not in _PLAIN_OPERATORS:
        return False
    children = [v for k, v in expr.items() if k in ("left", "right", "child", "children",
                                                    "input", "lower", "upper")]
    return all(_plain_filter(c) if isinstance(c, dict) else all(_plain_filter(x) for x in c)
               for c in children if c is not None)


def seal(con: duckdb.DuckDBPyConnection, *, lock: bool,
         keep_external_access: bool = False) -> None:
    """Turn external access off on `con`'s whole database instance (no file, URL, ATTACH or
    extension from SQL, for as long as the instance lives; its own files stay readable and
    writable) and, with `lock`, freeze its configuration (no SET, RESET or PRAGMA that
    changes a setting). Neither can be undone. `keep_external_access` is for a DuckLake,
    whose data files are read through the file system (or object storage) like any file."""
    if not keep_external_access:
        con.execute("SET GLOBAL enable_external_access = false")
    if lock:
        con.execute("SET GLOBAL lock_configuration = true")
