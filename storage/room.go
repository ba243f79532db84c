package storage

import (
	"bytes"
	"container/list"
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Room is one room's database: SQL tables of the author's, a KV store and
// den's own records, in one SQLite file. Its methods are for one goroutine
// at a time (the room's loop); the store may close its handle between
// calls when the pool is full, and it reopens on the next call.
//
// Writes outside a transaction commit one call at a time. Begin starts
// the transaction the room's event loop runs events in; Transaction nests
// inside it as a savepoint.
type Room struct {
	store          *Store
	id, kind, name string
	mu             sync.Mutex    // held while a call uses the handle
	elem           *list.Element // in store.lru while the handle is open; under store.mu
	db             *sql.DB
	conn           *sql.Conn   // the one connection: transactions span calls
	dc             driver.Conn // conn's driver connection, which statements use
	inTx           bool        // Begin has not been committed or rolled back
	txs            uint64      // transactions begun: names the open one (Tx)
	depth          int         // savepoints open inside the transaction
	epoch          uint64      // the ownership epoch this handle writes under
	// claims are the Claims written in the open transaction, in order:
	// what rolls their writes back puts the handle's epoch back too.
	claims []claimUndo
	// internal is set while den runs its own SQL. The authorizer checks
	// everything else, whenever SQLite prepares it: at Exec, for every
	// statement of it, and again if SQLite re-prepares a cached one.
	internal bool
	broken   bool  // SQLite rolled the transaction back under us
	wrote    bool  // the author SQL just prepared writes rows
	changes  bool  // it may change the database: it does more than read
	selects  bool  // it is a query: VACUUM, say, shows the authorizer nothing
	denied   error // why the authorizer refused, for the caller
	closed   bool
	recorded int64 // the size node.db has for the room, as far as this handle knows
	// maxPages is the open transaction's size limit in pages: the room's,
	// or the file's size at begin if that is more (a limit lowered since).
	maxPages int64
	// over is the savepoint depth a write took the database past maxPages
	// in, 0 if none: Transaction rolls that savepoint back.
	over int
	// checkWrites is set when the transaction began within sizeHeadroom
	// of maxPages: only then is each write's size checked.
	checkWrites bool
	// setUp is set once the room's folder is known to exist: node.db
	// recorded a size for the room, which only a handle that opened it can
	// have done, or this Room opened it.
	setUp bool
	// pageSize is the file's page size once this Room has opened and set
	// it up: a wake then knows the file is a den room's and skips
	// checking.
	pageSize int64
	// alarmWrites counts calls that may have changed the alarm.
	alarmWrites atomic.Uint64
	// stmts caches prepared statements: SQLite spends more preparing a
	// short statement than running it.
	stmts map[string]*cached
}

// cached is a prepared statement and what the authorizer saw in it.
type cached struct {
	stmt     driver.Stmt
	wrote    bool
	readOnly bool // author SQL that only reads: outside a transaction it runs in none
	noRows   bool // author SQL that returned no columns when it ran
}

// maxCached bounds the statement cache; past it, the cache starts over.
const maxCached = 256

// prepare returns the cached statement for query, preparing it under the
// authorizer's author checks if author. Statements go to the driver
// directly: database/sql's pool, locks and row wrappers cost more than a
// short statement's step, and the room has its one connection to itself.
func (r *Room) prepare(query string, author bool) (*cached, error) {
	key := query
	if author {
		key = "\x00" + query
	}
	if c := r.stmts[key]; c != nil {
		return c, nil
	}
	r.wrote, r.changes, r.selects, r.denied = false, false, false, nil
	st, err := r.dc.(driver.ConnPrepareContext).PrepareContext(bg, query)
	if err != nil {
		return nil, err
	}
	if len(r.stmts) >= maxCached {
		r.dropStmts()
	}
	if r.stmts == nil {
		r.stmts = map[string]*cached{}
	}
	c := &cached{stmt: st, wrote: r.wrote, readOnly: r.selects && !r.changes}
	r.stmts[key] = c
	return c, nil
}

func (r *Room) dropStmts() {
	for _, c := range r.stmts {
		_ = c.stmt.Close()
	}
	r.stmts = nil
}

// exec runs a prepared statement that returns no rows.
func (c *cached) exec(args []any) (driver.Result, error) {
	nv, err := namedValues(args)
	if err != nil {
		return nil, err
	}
	return c.stmt.(driver.StmtExecContext).ExecContext(bg, nv)
}

// query runs a prepared statement and hands each row to row. The values
// are the driver's: a []byte must be copied to outlive the call.
func (c *cached) query(args []any, row func([]driver.Value) error) (cols []string, err error) {
	nv, err := namedValues(args)
	if err != nil {
		return nil, err
	}
	rows, err := c.stmt.(driver.StmtQueryContext).QueryContext(bg, nv)
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := rows.Close(); err == nil {
			err = cerr
		}
	}()
	cols = rows.Columns()
	vals := make([]driver.Value, len(cols))
	for {
		switch err := rows.Next(vals); {
		case err == io.EOF:
			return cols, nil
		case err != nil:
			return cols, err
		}
		if err := row(vals); err != nil {
			return cols, err
		}
	}
}

// namedValues converts arguments as database/sql would: ints widen to
// int64, Valuers give their value, sql.Named names a parameter.
func namedValues(args []any) ([]driver.NamedValue, error) {
	nv := make([]driver.NamedValue, len(args))
	for i, a := range args {
		nv[i].Ordinal = i + 1
		if n, ok := a.(sql.NamedArg); ok {
			nv[i].Name, a = n.Name, n.Value
		}
		v, err := driver.DefaultParameterConverter.ConvertValue(a)
		if err != nil {
			return nil, fmt.Errorf("storage: argument %d: %w", i+1, err)
		}
		nv[i].Value = v
	}
	return nv, nil
}

// exec runs one of den's own statements, prepared once.
func (r *Room) exec(query string, args ...any) (driver.Result, error) {
	c, err := r.prepare(query, false)
	if err != nil {
		return nil, err
	}
	return c.exec(args)
}

// queryOne runs one of den's own queries, prepared once, and returns its
// first row's first value: sql.ErrNoRows if there is no row.
func (r *Room) queryOne(query string, args ...any) (driver.Value, error) {
	c, err := r.prepare(query, false)
	if err != nil {
		return nil, err
	}
	var v driver.Value
	found := false
	_, err = c.query(args, func(row []driver.Value) error {
		if !found {
			v, found = row[0], true
			if b, ok := v.([]byte); ok {
				v = bytes.Clone(b)
			}
		}
		return nil
	})
	if err == nil && !found {
		err = sql.ErrNoRows
	}
	return v, err
}

var bg = context.Background()

// ID, Kind and Name identify the room.
func (r *Room) ID() string   { return r.id }
func (r *Room) Kind() string { return r.kind }
func (r *Room) Name() string { return r.name }

// acquire locks r and opens its handle if the pool had taken it.
func (r *Room) acquire() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return ErrClosed
	}
	r.internal = true
	if r.conn != nil {
		return nil
	}
	if err := r.store.reserve(r); err != nil {
		r.mu.Unlock()
		return err
	}
	err := r.openHandle()
	// Sockets and the rest of the process share the open-file limit with
	// the pool: when a file will not open, idle handles give theirs up, a
	// few at a time, before the room fails.
	for try := 0; err != nil && try < 3 && cantOpen(err) && r.store.evictIdle(r, 4); try++ {
		err = r.openHandle()
	}
	if err != nil {
		r.store.forget(r)
		r.mu.Unlock()
		return fmt.Errorf("storage: room %s: %w", r.id, err)
	}
	return nil
}

// cantOpen reports SQLite's "unable to open database file", which is what
// running out of descriptors or a missing folder looks like, the same from
// den's own making of a new room's file, or a file SQLite could open only
// for reading, which is what it does when its read-write open fails.
func cantOpen(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_CANTOPEN ||
		errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, fs.ErrNotExist) ||
		errors.Is(err, errReadOnly)
}

// releaseHandle ends a call: r stays in the pool, most recently used.
func (r *Room) releaseHandle() {
	r.mu.Unlock()
	r.store.touch(r)
}

func (r *Room) openHandle() error {
	err := r.openFile()
	if err != nil && r.setUp && cantOpen(err) {
		// The file is not where node.db's record, or this Room's last
		// open, said (moved away, say): open the room as a new one.
		r.setUp, r.pageSize = false, 0
		err = r.openFile()
	}
	if err == nil {
		r.setUp = true
	}
	return err
}

// openFile opens the room's file and readies the connection. For a room
// set up before (r.setUp) the folder is known to exist, and for one this
// Room opened before (r.pageSize) the file is known to be a den room's:
// a wake skips making sure of either, as it is on the path of the message
// that woke the room.
func (r *Room) openFile() error {
	path := r.store.path(r.id)
	if !r.setUp {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
	}
	woken := r.pageSize > 0
	if !woken {
		if err := r.store.makeFile(path); err != nil {
			return err
		}
	}
	dsn := fileURI(path) + "?vfs=" + roomVFS
	if woken {
		// Without create: a file gone since the last open fails here, and
		// openHandle sets the room up as a new one.
		dsn += "&mode=rw"
	}
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return err
	}
	db.SetMaxOpenConns(1)
	conn, err := db.Conn(bg)
	if err != nil {
		db.Close()
		return err
	}
	pageSize := r.pageSize
	lim := r.store.limits
	setup := func() error {
		if _, err := sqlite.Limit(conn, sqlite3.SQLITE_LIMIT_LENGTH, int(lengthLimit(lim))); err != nil {
			return err
		}
		err := conn.Raw(func(dc any) error {
			// Before anything reads the file: another process may hold it.
			if err := lockFile(dc, path); err != nil {
				return err
			}
			// Under the lock, before SQLite opens the WAL: another
			// process's frames are not padded over.
			if r.store.sync == SyncFull {
				if err := padWAL(path, false); err != nil {
					return err
				}
			}
			reg, ok := dc.(sqlite.AuthorizerRegisterer)
			if !ok {
				return errors.New("the sqlite driver has no authorizer")
			}
			// The WAL file outlives the handle: a room that sleeps and wakes
			// does not delete and create it again each time, which costs
			// the file system more than the rest of a wake.
			if fc, ok := dc.(sqlite.FileControl); ok {
				if _, err := fc.FileControlPersistWAL("main", 1); err != nil {
					return err
				}
			}
			if err := skipCheckpointOnClose(dc); err != nil {
				return err
			}
			return reg.RegisterAuthorizer(r.authorize)
		})
		if err != nil {
			return err
		}
		// One list, run in one call: each statement apart costs a wake
		// about as much as running it. Exclusive locking goes first, before
		// anything reads the file, so that in WAL mode SQLite keeps the WAL
		// index in memory and never creates the -shm file: one descriptor
		// less (and without SQLite's locks it is the only way WAL works).
		// No busy timeout: lockFile has waited for the file already.
		pragmas := `PRAGMA locking_mode = EXCLUSIVE; PRAGMA synchronous = ` +
			r.store.sync + `; PRAGMA cache_size = -` + strconv.Itoa(r.store.cache) + `;`
		maxPages := func() string {
			return ` PRAGMA max_page_count = ` + strconv.FormatInt(hardPages(lim, pageSize), 10)
		}
		if woken {
			// WAL mode is kept in the file, set at its first open.
			_, err := conn.ExecContext(bg, pragmas+maxPages())
			return err
		}
		if _, err := conn.ExecContext(bg, pragmas+` PRAGMA journal_mode = WAL`); err != nil {
			return err
		}
		var made int64
		if err := conn.QueryRowContext(bg, `SELECT (SELECT page_size FROM pragma_page_size()),
			(SELECT count(*) FROM sqlite_schema WHERE name = '_den_meta')`).Scan(&pageSize, &made); err != nil {
			return err
		}
		if _, err := conn.ExecContext(bg, maxPages()); err != nil {
			return err
		}
		if made > 0 {
			// den's tables are made together, in the one transaction
			// below: finding one, a first open skips making them again.
			return nil
		}
		_, err = conn.ExecContext(bg, `BEGIN; `+denTables+` COMMIT;`)
		return err
	}
	if err := setup(); err != nil {
		conn.Close()
		db.Close()
		return err
	}
	// The connection is checked out of db for as long as the handle is
	// open, so nothing else can use its driver connection.
	var dc driver.Conn
	_ = conn.Raw(func(c any) error {
		dc = c.(driver.Conn)
		return nil
	})
	r.db, r.conn, r.dc, r.pageSize = db, conn, dc, pageSize
	return nil
}

// closeHandle gives the handle up; r.mu is held and no transaction open.
func (r *Room) closeHandle() {
	if r.conn == nil {
		return
	}
	if path := r.store.path(r.id); fileSize(path+"-wal") > walKeepBytes {
		// Best effort: a failed checkpoint leaves the WAL valid, and the
		// next close tries again. So is the pad, before the close lets
		// the file's lock go: a WAL left short costs its next commits a
		// journal commit each, not data. Its name is on disk: the open
		// padded it.
		if _, err := r.exec(`PRAGMA wal_checkpoint(TRUNCATE)`); err == nil && r.store.sync == SyncFull {
			_ = padWAL(path, true)
		}
	}
	r.dropStmts()
	_ = r.conn.Close()
	_ = r.db.Close()
	r.conn, r.db, r.dc = nil, nil, nil
	// Best effort, and only when it changed: a room that sleeps and wakes
	// without writing must not cost node.db a commit each time.
	if b := r.store.Bytes(r.id); b != r.recorded {
		r.store.recordSize(r.id, b)
		r.recorded = b
	}
}

// Sleep closes the room's database, rolling back a transaction left open,
// and keeps the Room: its next call, or Wake, opens the file again. A
// hibernating room sleeps instead of closing, so that its wake does not
// look the room up in node.db again.
func (r *Room) Sleep() error { return r.shut(false) }

// Wake opens the database of a Room that slept, so that a file that will
// not open fails the wake rather than the first call inside it.
func (r *Room) Wake() error {
	if err := r.acquire(); err != nil {
		return err
	}
	r.releaseHandle()
	return nil
}

// Close gives up the room's handle for good, rolling back a transaction
// left open.
func (r *Room) Close() error {
	err := r.shut(true)
	r.store.mu.Lock()
	if r.store.rooms[r.id] == r {
		delete(r.store.rooms, r.id)
	}
	r.store.mu.Unlock()
	return err
}

// shut closes the handle of a Room not closed yet, for good if final, and
// takes it out of the pool.
func (r *Room) shut(final bool) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	var err error
	r.internal = true
	if r.inTx && r.conn != nil {
		err = r.abort()
	}
	r.closeHandle()
	r.closed = final
	r.mu.Unlock()
	r.store.forget(r)
	return err
}

// SetEpoch sets the ownership epoch this handle writes under: the lease
// epoch of the node that owns the room.
func (r *Room) SetEpoch(epoch uint64) {
	r.mu.Lock()
	r.epoch = epoch
	r.mu.Unlock()
}

// Claim makes epoch the room's: the handle writes under it, and from now
// on a write under any older epoch fails with ErrStaleEpoch. A claim with
// an epoch older than the room's fails the same way. Inside a transaction
// the claim is one of its writes: rolled back with a savepoint, a
// Rollback or a failed Commit, it leaves the handle under the epoch it had
// before, as the room still has it.
func (r *Room) Claim(epoch uint64) error {
	r.mu.Lock()
	old := r.epoch
	r.epoch = epoch
	r.mu.Unlock()
	err := r.write(func() error {
		// Checked here too: inside an open transaction begin's check is
		// behind us.
		stored, err := r.storedEpoch()
		if err != nil {
			return err
		}
		if stored > epoch {
			return fmt.Errorf("%w (room epoch %d, claim %d)", ErrStaleEpoch, stored, epoch)
		}
		if _, err = r.exec(`INSERT INTO _den_meta (k, v) VALUES ('epoch', ?)
			ON CONFLICT (k) DO UPDATE SET v = excluded.v`, int64(epoch)); err != nil {
			return err
		}
		r.claims = append(r.claims, claimUndo{old: old, epoch: epoch})
		return nil
	})
	if err != nil {
		r.mu.Lock()
		r.epoch = old
		r.mu.Unlock()
	}
	return err
}

// claimUndo is a Claim that moved the handle's epoch from old to epoch.
type claimUndo struct{ old, epoch uint64 }

// undoClaims takes back the Claims from r.claims[from] on, whose writes
// were rolled back: the handle's epoch is as it was before them. One that
// SetEpoch gave the handle since is the lease's word, and stays.
func (r *Room) undoClaims(from int) {
	for i := len(r.claims) - 1; i >= from; i-- {
		if c := r.claims[i]; r.epoch == c.epoch {
			r.epoch = c.old
		}
	}
	r.claims = r.claims[:from]
}

// Epoch is the room's current epoch (that of its latest Claim).
func (r *Room) Epoch() (uint64, error) {
	var e uint64
	err := r.use(func() (err error) {
		e, err = r.storedEpoch()
		return err
	})
	return e, err
}

// use runs f with the handle.
func (r *Room) use(f func() error) error {
	if err := r.acquire(); err != nil {
		return err
	}
	defer r.releaseHandle()
	return r.mapError(f())
}

// write runs f inside the open transaction, or inside one of its own.
func (r *Room) write(f func() error) error {
	if err := r.acquire(); err != nil {
		return err
	}
	defer r.releaseHandle()
	return r.writeHeld(f)
}

// writeHeld is write for a caller that has acquired r.
func (r *Room) writeHeld(f func() error) error {
	if r.inTx {
		if r.broken {
			return errBroken
		}
		err := r.mapError(f())
		if r.broken || r.over > 0 || !r.checkWrites {
			return err
		}
		pages, qerr := r.pagesOver()
		switch {
		case qerr != nil:
			return errors.Join(err, qerr)
		case pages == 0:
			return err
		case r.depth == 0:
			// Between savepoints (den's own writes, between events)
			// nothing is refused: there is no savepoint to roll back but
			// the whole batch. The limit becomes the size they leave.
			r.maxPages = pages
			return err
		}
		// The write fails, and so does the savepoint it is in, whatever
		// its caller makes of the error.
		r.over = r.depth
		return errors.Join(r.sizeError(pages), err)
	}
	if err := r.begin(); err != nil {
		return err
	}
	err := f()
	if err == nil && r.checkWrites {
		var pages int64
		if pages, err = r.pagesOver(); err == nil && pages > 0 {
			err = r.sizeError(pages)
		}
	}
	if err != nil {
		err = r.mapError(err)
		_ = r.abort()
		return err
	}
	return r.commit()
}

// lengthLimit is SQLite's length limit for the room: the largest string,
// blob or row.
func lengthLimit(lim Limits) int64 {
	return lim.MaxValueBytes + lim.MaxKeyBytes + 1024
}

// hardPages is the max_page_count den gives SQLite, past the room's size
// limit. den refuses the write that takes a room over its limit
// (writeHeld), and only that write's savepoint rolls back; SQLite, at its
// page limit, rolls the whole transaction back (the batch's other events
// with it) when the statement has no statement journal, as a one-row
// write has not. The room is let grow past its limit by one row as long
// as the length limit in its table and in three indexes, and the pages a
// tree splits, so that such a write ends and den's check sees it. A
// statement that writes more than that without a statement journal still
// has SQLite roll the transaction back.
func hardPages(lim Limits, pageSize int64) int64 {
	return (lim.MaxDatabaseBytes+4*lengthLimit(lim))/pageSize + 64
}

// sizeHeadroom is how far below its limit a transaction must begin for
// den to leave its writes unchecked: a query of the size after each write
// costs an event about a fifth more of storage's time, and to cross the
// limit unchecked one batch would have to write this much. If one does,
// SQLite's page limit (hardPages) still stops it, at worst failing that
// batch whole, and a room it left over its limit is checked from its next
// batch on.
const sizeHeadroom = 64 << 20

// pagesOver is the database's size in pages if a write took it past the
// transaction's limit, else 0.
func (r *Room) pagesOver() (int64, error) {
	v, err := r.queryOne(`PRAGMA page_count`)
	if err != nil {
		return 0, err
	}
	if pages, _ := v.(int64); pages > r.maxPages {
		return pages, nil
	}
	return 0, nil
}

// sizeError is the error of a write over the database size limit, with
// the size it took the database to if pages is known.
func (r *Room) sizeError(pages int64) *LimitError {
	return &LimitError{Limit: "database size", Max: r.store.limits.MaxDatabaseBytes, Got: pages * r.pageSize}
}

// abort rolls the transaction back and forgets it. A transaction SQLite
// already ended (broken) has nothing to roll back, and that is no error.
func (r *Room) abort() error {
	_, err := r.exec(`ROLLBACK`)
	if r.broken {
		err = nil
	}
	r.inTx, r.depth, r.broken = false, 0, false
	r.undoClaims(0)
	return r.mapError(err)
}

// storedEpoch is the epoch of the room's latest Claim, 0 if none.
func (r *Room) storedEpoch() (uint64, error) {
	v, err := r.queryOne(`SELECT v FROM _den_meta WHERE k = 'epoch'`)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	e, _ := v.(int64)
	return uint64(e), err
}

// begin starts a write transaction and checks the epoch inside it, so no
// newer owner can claim the room between the check and the commit.
func (r *Room) begin() error {
	if _, err := r.exec(`BEGIN IMMEDIATE`); err != nil {
		return r.mapError(err)
	}
	r.inTx, r.depth, r.broken, r.over = true, 0, false, 0
	r.txs++
	stored, err := r.storedEpoch()
	if err != nil {
		_ = r.abort()
		return err
	}
	v, err := r.queryOne(`PRAGMA page_count`)
	if err != nil {
		_ = r.abort()
		return r.mapError(err)
	}
	pages, _ := v.(int64)
	if limit := r.store.limits.MaxDatabaseBytes / r.pageSize; pages > limit {
		// A room over a limit lowered since it grew may be past the page
		// limit its open gave SQLite, which SQLite then holds at the
		// file's size: the first write that needs a page would reach it
		// and, without a statement journal, take the whole batch with it.
		// The page limit is as far past the file as hardPages is past the
		// room's limit, so den's check fails that write's event alone.
		hard := pages + hardPages(r.store.limits, r.pageSize) - limit
		if _, err := r.conn.ExecContext(bg, `PRAGMA max_page_count = `+strconv.FormatInt(hard, 10)); err != nil {
			_ = r.abort()
			return r.mapError(err)
		}
	}
	r.maxPages = max(r.store.limits.MaxDatabaseBytes/r.pageSize, pages)
	r.checkWrites = pages+sizeHeadroom/r.pageSize >= r.maxPages
	if stored > r.epoch {
		_ = r.abort()
		return fmt.Errorf("%w (room epoch %d, this handle's %d)", ErrStaleEpoch, stored, r.epoch)
	}
	return nil
}

func (r *Room) commit() error {
	if r.broken {
		_ = r.abort()
		return errBroken
	}
	if _, err := r.exec(`COMMIT`); err != nil {
		err = r.mapError(err)
		_ = r.abort()
		return err
	}
	r.inTx, r.depth, r.claims = false, 0, r.claims[:0]
	return nil
}

// Begin starts the transaction the room's events run in. Until Commit or
// Rollback, every write joins it and the pool leaves the handle open.
func (r *Room) Begin() error {
	if err := r.acquire(); err != nil {
		return err
	}
	defer r.releaseHandle()
	if r.inTx {
		return errors.New("storage: Begin inside a transaction")
	}
	return r.begin()
}

// Tx names the open transaction, 0 if none: a caller that began one can
// tell, before it commits, whether it is still the one it began, or was
// ended and another begun meanwhile.
func (r *Room) Tx() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.inTx {
		return 0
	}
	return r.txs
}

// Commit makes the transaction durable (with SyncFull, on disk). On
// error nothing of it is kept.
func (r *Room) Commit() error {
	if err := r.acquire(); err != nil {
		return err
	}
	defer r.releaseHandle()
	if !r.inTx {
		return errors.New("storage: Commit without Begin")
	}
	return r.commit()
}

// Rollback drops the transaction.
func (r *Room) Rollback() error {
	if err := r.acquire(); err != nil {
		return err
	}
	defer r.releaseHandle()
	if !r.inTx {
		return nil
	}
	return r.abort()
}

// Transaction runs f atomically: all of its writes or none. Inside an open
// transaction it is a savepoint, so transactions nest. An error from f, or
// a panic, rolls back f's writes; the panic continues after the rollback.
func (r *Room) Transaction(f func() error) (err error) {
	if err := r.acquire(); err != nil {
		return err
	}
	outer := !r.inTx
	if outer {
		if err := r.begin(); err != nil {
			r.releaseHandle()
			return err
		}
	}
	if r.broken {
		r.releaseHandle()
		return errBroken
	}
	r.depth++
	name := "den_sp" + strconv.Itoa(r.depth)
	claims := len(r.claims)
	if _, err := r.exec(`SAVEPOINT ` + name); err != nil {
		r.depth--
		err = r.mapError(err)
		if outer {
			_ = r.abort()
		}
		r.releaseHandle()
		return err
	}
	r.releaseHandle()

	finish := func(ok bool) error {
		if err := r.acquire(); err != nil {
			return err
		}
		defer r.releaseHandle()
		if r.broken {
			r.depth--
			if outer {
				_ = r.abort()
			}
			return errBroken
		}
		var ferr error
		if r.over == r.depth {
			r.over = 0
			if ok {
				ferr = r.sizeError(0)
				ok = false
			}
		}
		if !ok {
			if _, err := r.exec(`ROLLBACK TO ` + name); err == nil {
				r.undoClaims(claims)
			} else if ferr == nil {
				ferr = err
			}
		}
		if _, err := r.exec(`RELEASE ` + name); err != nil && ferr == nil {
			ferr = err
		}
		r.depth--
		if outer {
			if ok && ferr == nil {
				return r.commit()
			}
			ferr = r.mapError(ferr)
			_ = r.abort()
			return ferr
		}
		return r.mapError(ferr)
	}
	defer func() {
		if p := recover(); p != nil {
			_ = finish(false)
			panic(p)
		}
	}()
	if err := f(); err != nil {
		if ferr := finish(false); ferr != nil {
			return errors.Join(err, ferr)
		}
		return err
	}
	return finish(true)
}

// Size is the room's database size in bytes (pages in use).
func (r *Room) Size() (int64, error) {
	var pages, size int64
	err := r.use(func() error {
		if err := r.conn.QueryRowContext(bg, `PRAGMA page_count`).Scan(&pages); err != nil {
			return err
		}
		return r.conn.QueryRowContext(bg, `PRAGMA page_size`).Scan(&size)
	})
	return pages * size, err
}

// DeleteAll removes everything the room stores: the author's tables,
// views, triggers and indexes, and every KV entry, atomically.
func (r *Room) DeleteAll() error {
	r.alarmWrites.Add(1)
	return r.write(func() error {
		rows, err := r.conn.QueryContext(bg, `SELECT type, name FROM sqlite_schema
			WHERE name NOT LIKE 'sqlite\_%' ESCAPE '\' AND name NOT IN ('_den_kv', '_den_meta')
			AND type IN ('table', 'view', 'trigger') ORDER BY type = 'table'`)
		if err != nil {
			return err
		}
		type obj struct{ typ, name string }
		var objs []obj
		for rows.Next() {
			var o obj
			if err := rows.Scan(&o.typ, &o.name); err != nil {
				rows.Close()
				return err
			}
			objs = append(objs, o)
		}
		rows.Close()
		for _, o := range objs {
			if _, err := r.conn.ExecContext(bg, `DROP `+o.typ+` IF EXISTS `+quoteIdent(o.name)); err != nil {
				return err
			}
		}
		if _, err = r.conn.ExecContext(bg, `DELETE FROM _den_kv`); err != nil {
			return err
		}
		// The alarm goes too (scheduled events went with the tables);
		// node.db's index finds no alarm when it fires.
		_, err = r.exec(`DELETE FROM _den_meta WHERE k IN ('alarm', 'alarm_retry')`)
		return err
	})
}

func quoteIdent(s string) string {
	out := []byte{'"'}
	for i := range len(s) {
		if s[i] == '"' {
			out = append(out, '"')
		}
		out = append(out, s[i])
	}
	return string(append(out, '"'))
}
