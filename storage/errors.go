package storage

import (
	"errors"
	"fmt"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

var (
	// ErrLimit is wrapped by every LimitError, for errors.Is.
	ErrLimit = errors.New("storage: limit exceeded")
	// ErrStaleEpoch is a write under an ownership epoch older than the
	// room's: another node owns the room now, and this one must stop.
	ErrStaleEpoch = errors.New("storage: stale epoch: the room has a newer owner")
	// ErrTransactionSQL is SQL that manages transactions (BEGIN, COMMIT,
	// SAVEPOINT ...), ATTACH or PRAGMA given to Exec: transactions come from
	// the room's event loop and Transaction.
	ErrTransactionSQL = errors.New("storage: Exec refuses transaction control, ATTACH and PRAGMA; use Transaction")
	// ErrReserved is SQL that touches den's own tables (names starting
	// with _den_), TEMP objects, or the file's raw pages (sqlite_dbpage).
	ErrReserved = errors.New("storage: tables named _den_* are den's own, and TEMP objects and sqlite_dbpage are refused")
	// ErrRenameTable is ALTER TABLE ... RENAME TO: the authorizer cannot
	// see the new name, which could be one of den's. Columns may be
	// renamed, added and dropped; to rename a table, copy it.
	ErrRenameTable = errors.New("storage: ALTER TABLE ... RENAME TO is refused (columns may be renamed, added and dropped)")
	// errBroken is a transaction SQLite rolled back on its own (a full
	// database, an I/O error): everything in it is gone, and it can only be
	// rolled back.
	errBroken = errors.New("storage: the transaction was rolled back by an earlier error")
	// ErrClosed is a room or store used after Close.
	ErrClosed = errors.New("storage: closed")
	// ErrNoRows is One on a cursor with no row; ErrManyRows with more.
	ErrNoRows   = errors.New("storage: no rows")
	ErrManyRows = errors.New("storage: more than one row")
)

// LimitError is a write or call over one of the room's limits.
type LimitError struct {
	Limit string // which limit: "key size", "value size", "keys per call", "row size", "database size"
	Max   int64
	Got   int64 // 0 when SQLite reported it and the size is not known
}

func (e *LimitError) Error() string {
	if e.Got > 0 {
		return fmt.Sprintf("storage: %s %d is over the limit of %d", e.Limit, e.Got, e.Max)
	}
	return fmt.Sprintf("storage: %s is over the limit of %d", e.Limit, e.Max)
}

func (e *LimitError) Unwrap() error { return ErrLimit }

// sqliteCode is the primary result code of a SQLite error, or -1.
func sqliteCode(err error) int {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code() & 0xff
	}
	return -1
}

// mapError turns SQLite's errors for den's limits and its authorizer into
// den's errors, keeping SQLite's message.
func (r *Room) mapError(err error) error {
	if err == nil {
		return nil
	}
	code := sqliteCode(err)
	switch code {
	case sqlite3.SQLITE_IOERR, sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_BUSY:
		// SQLite may have rolled the whole transaction back: treat it as
		// gone, so nothing after it pretends to be part of it.
		if r.inTx {
			r.broken = true
		}
	}
	if r.inTx && !r.broken && r.txEnded() {
		// SQLite ended it: at its page limit (SQLITE_FULL) in a statement
		// without a statement journal (one with one it rolls back alone),
		// or at the room's own SQL (INSERT OR ROLLBACK, a trigger's
		// RAISE(ROLLBACK)). Left unmarked, the next event's savepoint
		// would open a transaction of its own and commit it on release,
		// writing events of a batch that then fails.
		r.broken = true
	}
	switch code {
	case sqlite3.SQLITE_TOOBIG:
		return fmt.Errorf("%w (%v)", &LimitError{Limit: "row size", Max: r.store.limits.MaxValueBytes}, err)
	case sqlite3.SQLITE_FULL:
		return fmt.Errorf("%w (%v)", &LimitError{Limit: "database size", Max: r.store.limits.MaxDatabaseBytes}, err)
	case sqlite3.SQLITE_AUTH, sqlite3.SQLITE_ERROR:
		// A denied function fails its statement with SQLITE_ERROR.
		if r.denied != nil {
			d := r.denied
			r.denied = nil
			return fmt.Errorf("%w (%v)", d, err)
		}
	}
	return err
}

// txEnded reports whether SQLite has no transaction open on the handle.
func (r *Room) txEnded() bool {
	if r.dc == nil {
		return false
	}
	db, t, err := sqliteHandle(r.dc)
	return err == nil && sqlite3.Xsqlite3_get_autocommit(t, db) != 0
}
