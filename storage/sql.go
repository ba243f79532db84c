package storage

import (
	"bytes"
	"database/sql/driver"
	"strings"

	"modernc.org/sqlite"
)

// Cursor holds the rows a statement returned. Exec reads them all before
// it returns, so a cursor never holds the database.
type Cursor struct {
	cols    []string
	rows    [][]any
	next    int
	written int64
}

// Columns are the result's column names.
func (c *Cursor) Columns() []string { return c.cols }

// RowsRead is the number of rows the statement returned.
func (c *Cursor) RowsRead() int64 { return int64(len(c.rows)) }

// RowsWritten is the number of rows the statement inserted, updated or
// deleted.
func (c *Cursor) RowsWritten() int64 { return c.written }

// Next advances to the next row; false when there are no more.
func (c *Cursor) Next() bool {
	if c.next >= len(c.rows) {
		return false
	}
	c.next++
	return true
}

// Values is the current row, one value per column: int64, float64,
// string, []byte or nil.
func (c *Cursor) Values() []any { return c.rows[c.next-1] }

// Row is the current row by column name.
func (c *Cursor) Row() map[string]any { return c.named(c.rows[c.next-1]) }

// All returns every row by column name.
func (c *Cursor) All() []map[string]any {
	out := make([]map[string]any, len(c.rows))
	for i, r := range c.rows {
		out[i] = c.named(r)
	}
	return out
}

// One returns the only row: ErrNoRows or ErrManyRows if there is not
// exactly one.
func (c *Cursor) One() (map[string]any, error) {
	switch len(c.rows) {
	case 0:
		return nil, ErrNoRows
	case 1:
		return c.named(c.rows[0]), nil
	}
	return nil, ErrManyRows
}

func (c *Cursor) named(vals []any) map[string]any {
	m := make(map[string]any, len(c.cols))
	for i, name := range c.cols {
		m[name] = vals[i]
	}
	return m
}

// Exec runs one SQL statement with args bound to its ? parameters, inside
// the open transaction or, if none is open, one of its own (none for a
// statement that only reads). It refuses transaction control, ATTACH,
// PRAGMA (but the read-only table_info, table_list, index_list and
// friends), den's own tables and sqlite_dbpage.
func (r *Room) Exec(query string, args ...any) (*Cursor, error) {
	cur := &Cursor{}
	run := func() error {
		r.internal = false
		defer func() { r.internal = true }()
		st, err := r.prepare(query, true)
		if err != nil {
			return err
		}
		if st.noRows {
			// Known to return no rows: run it as an Exec, whose result
			// counts the rows written without another statement.
			res, err := st.exec(args)
			if err != nil {
				return err
			}
			if st.wrote {
				cur.written, _ = res.RowsAffected()
			}
			return nil
		}
		cols, err := st.query(args, func(row []driver.Value) error {
			vals := make([]any, len(row))
			for i, v := range row {
				if b, ok := v.([]byte); ok {
					v = bytes.Clone(b)
				}
				vals[i] = v
			}
			cur.rows = append(cur.rows, vals)
			return nil
		})
		if err != nil {
			return err
		}
		cur.cols = cols
		r.internal = true
		// A statement that returned no columns never will: the next runs
		// of the same text take the Exec path. Several statements in one
		// text stay on this one.
		st.noRows = len(cur.cols) == 0 && !strings.Contains(query, ";")
		switch {
		case !st.wrote:
		case len(cur.cols) > 0:
			// INSERT ... RETURNING: a row out for each row in.
			cur.written = int64(len(cur.rows))
		default:
			v, err := r.queryOne(`SELECT changes()`)
			cur.written, _ = v.(int64)
			return err
		}
		return nil
	}
	if err := r.acquire(); err != nil {
		return nil, err
	}
	defer r.releaseHandle()
	var err error
	if r.readsOnly(query) {
		err = r.mapError(run())
	} else {
		err = r.writeHeld(run)
	}
	if err != nil {
		return nil, err
	}
	return cur, nil
}

// readsOnly reports whether author SQL query, outside a transaction, only
// reads. It then runs without one: a read needs neither the write lock
// nor the epoch check nor a commit, and a constructor that loads the
// room's state reads on the path of the event that woke the room.
func (r *Room) readsOnly(query string) bool {
	// At prepare the authorizer sees only the first of several statements.
	if r.inTx || strings.Contains(query, ";") {
		return false
	}
	r.internal = false
	st, err := r.prepare(query, true)
	r.internal = true
	return err == nil && st.readOnly
}

// readPragmas may be read by author SQL; setting any pragma is refused.
// data_version is read by FTS5 on the room's connection.
var readPragmas = map[string]bool{
	"table_info": true, "table_xinfo": true, "table_list": true, "index_list": true,
	"index_info": true, "index_xinfo": true, "foreign_key_list": true, "data_version": true,
}

// authorize is the connection's SQLite authorizer. It checks only author
// SQL (Exec); den's own statements pass.
func (r *Room) authorize(action sqlite.AuthorizerActionCode, arg1, arg2, dbName, _ string) sqlite.AuthorizerReturnCode {
	if r.internal {
		return sqlite.AuthorizerOK
	}
	// Only the main database: TEMP objects would escape the size limit and
	// could shadow den's tables. ALTER TABLE gives the database as arg1,
	// and (DROP COLUMN) a column's name where others give the database.
	// Renaming or dropping a column reads and updates the TEMP catalogue
	// for objects that name it, and there are none (no TEMP object can be
	// made); SQLite refuses any other write of a catalogue.
	switch {
	case action == sqlite.AuthAlterTable:
		dbName = arg1
	case (action == sqlite.AuthRead || action == sqlite.AuthUpdate) && dbName == "temp" && strings.EqualFold(arg1, "sqlite_temp_master"):
		dbName = ""
	}
	if dbName != "" && dbName != "main" {
		r.denied = ErrReserved
		return sqlite.AuthorizerDeny
	}
	if action == sqlite.AuthFunction && strings.EqualFold(arg2, "sqlite_rename_table") {
		r.denied = ErrRenameTable
		return sqlite.AuthorizerDeny
	}
	switch action {
	case sqlite.AuthSelect:
		r.selects = true
	case sqlite.AuthRead, sqlite.AuthFunction, sqlite.AuthRecursive, sqlite.AuthPragma:
	default:
		r.changes = true
	}
	switch action {
	case sqlite.AuthCreateTempTable, sqlite.AuthCreateTempIndex, sqlite.AuthCreateTempTrigger,
		sqlite.AuthCreateTempView, sqlite.AuthDropTempTable, sqlite.AuthDropTempIndex,
		sqlite.AuthDropTempTrigger, sqlite.AuthDropTempView:
		r.denied = ErrReserved
		return sqlite.AuthorizerDeny
	case sqlite.AuthTransaction, sqlite.AuthSavepoint, sqlite.AuthAttach, sqlite.AuthDetach:
		r.denied = ErrTransactionSQL
		return sqlite.AuthorizerDeny
	case sqlite.AuthPragma:
		// arg2 is the pragma's argument: a table name for the readers.
		if !readPragmas[strings.ToLower(arg1)] {
			r.denied = ErrTransactionSQL
			return sqlite.AuthorizerDeny
		}
	case sqlite.AuthInsert, sqlite.AuthUpdate, sqlite.AuthDelete:
		// DDL writes sqlite_schema; only rows of tables count.
		if !strings.HasPrefix(strings.ToLower(arg1), "sqlite_") {
			r.wrote = true
		}
	}
	if action != sqlite.AuthPragma && action != sqlite.AuthFunction && (reserved(arg1) || reserved(arg2)) {
		r.denied = ErrReserved
		return sqlite.AuthorizerDeny
	}
	return sqlite.AuthorizerOK
}

// reserved reports den's tables, and sqlite_dbpage (as a table or a
// virtual table's module), through which SQL could rewrite any page of
// the file, den's records and the epoch among them.
func reserved(name string) bool {
	return len(name) >= 5 && strings.EqualFold(name[:5], "_den_") || strings.EqualFold(name, "sqlite_dbpage")
}
